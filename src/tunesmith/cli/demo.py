"""`tunesmith demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def demo_command(
    out: Annotated[Path, typer.Option("--out", help="Run folder for the demo.")] = Path("runs/demo"),
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Cap training (quick look).")] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model to tune (default smollm2-135m; also gemma3-270m, a base model)."),
    ] = None,
) -> None:
    """LoRA-tune the default model on the shipped support-triage data and show base vs tuned."""
    from tunesmith.demo import run_demo

    run_demo(out, max_steps=max_steps, model=model)
