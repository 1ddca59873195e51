"""`tunesmith export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tunesmith.cli.options import TrustRemoteCode

Opt = typer.Option


def export_command(
    run: Annotated[Path, typer.Argument(help="A finished run folder (what `tunesmith train --out` wrote).")],
    format: Annotated[str, Opt("--format", "-f", help="merged (HF folder), adapter (PEFT) or gguf (llama.cpp).")],
    dtype: Annotated[
        str | None,
        Opt("--dtype", help="f32|f16|bf16 (merged), f32|f16|bf16|q8_0 (gguf). Default: f32 merged, f16 gguf."),
    ] = None,
    out: Annotated[Path | None, Opt("--out", help="Output folder. Default: RUN/exports/FORMAT-DTYPE.")] = None,
    force: Annotated[bool, Opt("--force", help="Replace an existing output folder.")] = False,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Export a run as a merged model, an adapter or a GGUF file, checked for parity with the trained model."""
    from tunesmith import console
    from tunesmith.export import export_run

    result = export_run(run, format, dtype=dtype, out=out, force=force, trust_remote_code=trust_remote_code)
    for check in result.checks:
        console.info(f"  [green]ok[/green] {check.summary()}")
    size = sum(result.report["files"].values())
    console.info(f"[green]done[/green]: {result.out} ({size / 1e6:.1f} MB; checks in {result.out / 'export.json'})")
    if result.format == "gguf":
        console.info(f"run it in Ollama: cd {result.out} && ollama create my-model -f Modelfile && ollama run my-model")
