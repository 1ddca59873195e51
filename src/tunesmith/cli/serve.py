"""`tunesmith serve`: flags -> ServeSettings + Registry -> uvicorn. fastapi and uvicorn are imported here,
inside the command, so that `tunesmith --help` never pays for them."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated

import typer

from tunesmith.cli.generate import PrecisionOption
from tunesmith.cli.options import ChatTemplate, TrustRemoteCode

Opt = typer.Option


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def serve_command(
    models: Annotated[
        list[str] | None,
        typer.Argument(help="Runs or models to serve (alias, HF folder, .gguf, run folder; NAME=PATH names one)."),
    ] = None,
    host: Annotated[str, Opt("--host", help="Address to bind; non-loopback needs an API key.")] = "127.0.0.1",
    port: Annotated[int, Opt("--port", min=0, max=65535)] = 8000,
    api_key: Annotated[
        str | None, Opt("--api-key", help="Require this bearer key (default: $TUNESMITH_API_KEY).", show_default=False)
    ] = None,
    max_body_bytes: Annotated[int, Opt("--max-body-bytes", min=1024, help="Largest request body.")] = 4 << 20,
    max_file_bytes: Annotated[int, Opt("--max-file-bytes", min=1024, help="Largest uploaded file.")] = 256 << 20,
    max_tokens: Annotated[int, Opt("--max-tokens", min=1, help="Most new tokens one request may ask for.")] = 4096,
    max_concurrency: Annotated[
        int, Opt("--max-concurrency", min=1, help="Sequences in flight (running or queued); more get 429.")
    ] = 64,
    max_batch: Annotated[int, Opt("--max-batch", min=1, help="Sequences decoded together per model.")] = 32,
    jobs: Annotated[bool, Opt("--jobs/--no-jobs", help="Serve the files and fine-tuning jobs API.")] = True,
    # fp32 by default here: in bf16 the server's memory grew under varied batch shapes (see README), which a
    # long-running process cannot afford; `--precision auto` opts in.
    precision: PrecisionOption = "fp32",
    trust_remote_code: TrustRemoteCode = False,
    chat_template: ChatTemplate = None,
    runs_dir: Annotated[Path, Opt("--runs", help="Folder of runs the dashboard (at /) lists.", file_okay=False)] = Path(
        "runs"
    ),
    threads: Annotated[
        int | None, Opt("--threads", min=1, help="CPU threads for generation and jobs (default: torch's).")
    ] = None,
) -> None:
    """Serve base and tuned models behind an OpenAI-compatible API (plus a local fine-tuning jobs API)."""
    from tunesmith import console
    from tunesmith.errors import UserError

    key = api_key or os.environ.get("TUNESMITH_API_KEY") or None
    if not is_loopback(host) and not key:
        raise UserError(
            f"refusing to bind {host} without an API key: pass --api-key or set TUNESMITH_API_KEY (or bind 127.0.0.1)"
        )
    try:
        import uvicorn

        from tunesmith.serve.app import ServeSettings, create_app
    except ImportError as e:
        raise UserError(f"the server needs fastapi and uvicorn ({e.name} is missing): pip install tunesmith") from None
    from tunesmith.models.load import inference_dtype
    from tunesmith.serve.jobs import Store
    from tunesmith.serve.registry import Registry
    from tunesmith.serve.worker import weights_on_disk

    dtype = inference_dtype(precision)

    if threads is not None:
        import torch

        # On a CPU shared with other work, fewer threads can be much faster: OpenMP threads spin-wait for
        # each other, and a descheduled one stalls every layer.
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # training processes of jobs inherit it
    store = Store() if jobs else None

    def fine_tuned(name: str):
        job = store.find_fine_tuned(name) if store else None
        if job is None or not weights_on_disk(store.job_path(job["id"])):
            return None
        return store.job_path(job["id"])

    registry = Registry(
        max_batch=max_batch,
        resolve_fine_tuned=fine_tuned,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        chat_template=chat_template,
    )
    for spec in models or ["smollm2-135m"]:
        registry.add(spec)
    settings = ServeSettings(
        api_key=key,
        max_body_bytes=max_body_bytes,
        max_file_bytes=max_file_bytes,
        max_tokens=max_tokens,
        max_concurrency=max_concurrency,
        jobs=jobs,
        runs_dir=runs_dir,
    )
    app = create_app(registry, settings, store)
    registry.describe()
    console.info(f"tunesmith serve: http://{host}:{port}/v1  (key required: {'yes' if key else 'no'})")
    console.info(f"dashboard: http://{host}:{port}/  (runs in {runs_dir})")
    # access_log lists method, path and status only: request bodies are never logged.
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
