"""`tunesmith check`: flags -> RunConfig -> preflight.run_check() -> the report or JSON, and the exit code
(0 clean, 1 warnings under --strict, 2 errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tunesmith.cli.options import given, option
from tunesmith.flags import flag_overrides

Opt = typer.Option


def check_command(
    data: Annotated[
        Path, typer.Argument(help="Training data: JSONL, JSON, CSV/TSV, Parquet, Arrow or a datasets folder.")
    ],
    val: Annotated[Path | None, option("val", help="Validation data: checked too, and for leakage.")] = None,
    columns: Annotated[str | None, option("columns")] = None,
    docs: Annotated[
        Path | None,
        option("docs", help="Docs with the current facts: list the rows whose replies the docs contradict."),
    ] = None,
    model: Annotated[str | None, option("model", help="Model whose tokenizer and template to use.")] = None,
    chat_template: Annotated[str | None, option("chat_template")] = None,
    max_len: Annotated[int | None, option("max_len", help="Longest sequence in tokens (as in train).")] = None,
    overlong: Annotated[str | None, option("overlong", help="drop | truncate | error (as in train).")] = None,
    train_on: Annotated[str | None, option("train_on", help="all | last assistant turns (as in train).")] = None,
    output: Annotated[str, Opt("--format", help="text, or json (machine-readable, on stdout only).")] = "text",
    strict: Annotated[bool, Opt("--strict", help="Exit 1 when there are warnings.")] = False,
    show: Annotated[int, Opt("--show", min=0, help="Print K rendered rows with the trained tokens marked.")] = 0,
    near: Annotated[float, Opt("--near-threshold", help="Similarity that counts as a near-duplicate.")] = 0.8,
    estimate: Annotated[bool, Opt("--estimate/--no-estimate", help="Probe time and memory per epoch.")] = True,
    price: Annotated[float | None, Opt("--price-per-hour", min=0.0, help="Also estimate the cost.")] = None,
    nproc: Annotated[
        int, Opt("--nproc", min=1, help="Also estimate each process's memory with N processes (DDP / FSDP2).")
    ] = 1,
) -> None:
    """Find what would spoil a fine-tune before any compute is spent: the dataset doctor."""
    flags = given(locals())  # first: only the parameters are bound yet (the data argument is --data's field)
    import contextlib
    import json
    import sys

    from tunesmith import console
    from tunesmith.config import load_config
    from tunesmith.errors import UserError
    from tunesmith.train.preflight import run_check

    if output not in ("text", "json"):
        raise UserError(f"--format must be text or json, not {output!r}")
    cfg = load_config(None, flag_overrides(**flags))
    kwargs = {"near_threshold": near, "show": show, "estimate": estimate, "price_per_hour": price, "nproc": nproc}
    if output == "json":
        # Only the JSON document may reach stdout: anything the library prints on the way goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            result = run_check(cfg, **kwargs)
        console.console.out(json.dumps(result.as_dict(strict), indent=2, ensure_ascii=False), highlight=False)
    else:
        from tunesmith.data.check_view import print_check

        result = run_check(cfg, **kwargs)
        print_check(result.report, result.as_dict(strict)["estimate"], strict)
    raise typer.Exit(result.exit_code(strict))
