"""`tunesmith advise`: flags -> decide.advise.advise() -> the recommendation and its reasons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option


def advise_command(
    train: Annotated[Path, Opt("--train", help="Training JSONL to analyse.")],
    test: Annotated[Path | None, Opt("--test", help="Held-out JSONL: adds coverage of the test data.")] = None,
    changes_per_month: Annotated[
        float | None, Opt("--changes-per-month", min=0.0, help="How often the task or its facts change.")
    ] = None,
    requests_per_month: Annotated[float | None, Opt("--requests-per-month", min=0.0, help="Expected traffic.")] = None,
    prompt_tokens: Annotated[
        float | None, Opt("--prompt-tokens", min=0.0, help="Tokens of instructions + examples prompting would add.")
    ] = None,
    price: Annotated[float | None, Opt("--price-per-1k-input-tokens", min=0.0, help="Input price.")] = None,
    from_bakeoff: Annotated[
        Path | None, Opt("--from-bakeoff", help="A `tunesmith bakeoff` folder: follow its measured winner.")
    ] = None,
    threshold: Annotated[
        list[str] | None, Opt("--threshold", help="NAME=VALUE, repeatable (see `tunesmith.decide.advise.Thresholds`).")
    ] = None,
    fmt: Annotated[str, Opt("--format", help="text or json.")] = "text",
) -> None:
    """Recommend prompting, RAG, LoRA, full fine-tuning or a mix, with reasons that name their numbers."""
    from tunesmith import console
    from tunesmith.decide.advise import Thresholds, advise, render_text
    from tunesmith.errors import UserError

    if fmt not in ("text", "json"):
        raise UserError(f"--format {fmt}: expected text or json")
    advice = advise(
        train,
        test=test,
        thresholds=Thresholds.parse(threshold or []),
        changes_per_month=changes_per_month,
        requests_per_month=requests_per_month,
        prompt_tokens=prompt_tokens,
        price_per_1k_input_tokens=price,
        bakeoff=from_bakeoff,
    )
    if fmt == "json":
        print(json.dumps(advice.as_dict(), indent=2, default=str))
    else:
        console.console.print(render_text(advice), markup=False)
