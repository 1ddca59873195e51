"""`tunesmith eval`: flags -> EvalOptions -> evaluate_and_report()."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tunesmith.cli.options import TrustRemoteCode, option

Opt = typer.Option


def eval_command(
    run: Annotated[Path, typer.Argument(help="Run folder written by `tunesmith train`.")],
    data: Annotated[Path, Opt("--data", help="Held-out data (any format; rows may lack a reference).")],
    columns: Annotated[str | None, option("columns")] = None,
    instructions: Annotated[
        Path | None, Opt("--instructions", help="Instructions the base model would need; enables token savings.")
    ] = None,
    few_shot: Annotated[int, Opt("--few-shot", min=0, help="Training examples shown to the base model.")] = 0,
    price: Annotated[
        float | None, Opt("--price-per-1k-input-tokens", min=0.0, help="Input price, for the savings table.")
    ] = None,
    schema: Annotated[Path | None, Opt("--schema", help="JSON Schema for replies; default: inferred.")] = None,
    out: Annotated[Path | None, Opt("--out", help="Report folder (default: RUN/eval).")] = None,
    max_tokens: Annotated[
        int | None, Opt("--max-tokens", min=1, help="New tokens per reply (default: from the references).")
    ] = None,
    batch_size: Annotated[int, Opt("--batch-size", min=1)] = 16,
    forgetting_threshold: Annotated[
        float, Opt("--forgetting-threshold", min=0.0, help="Flag a general-English perplexity rise above this.")
    ] = 0.10,
    behaviour_threshold: Annotated[
        float,
        Opt(
            "--behaviour-threshold",
            min=0.0,
            max=1.0,
            help="Flag when tuned gets wrong more than this share of the everyday questions its base got right.",
        ),
    ] = 0.10,
    docs: Annotated[
        Path | None,
        Opt("--docs", help="Documents (.txt/.md): replies' numbers, dates and names are checked against them."),
    ] = None,
    trust_remote_code: TrustRemoteCode = False,
    grader: Annotated[
        Path | None, Opt("--grader", help="An OpenAI grader .json: compare base and tuned on their mean grade.")
    ] = None,
) -> None:
    """Prove it helped: base vs tuned on held-out data, with token savings and a forgetting check."""
    if grader is not None:  # reinforcement fine-tuning's measure: the grade, row by row
        from tunesmith.eval.graded import grade_and_report

        grade_and_report(run, data, grader, out, max_tokens=max_tokens, batch_size=batch_size)
        return
    from tunesmith.data.sources import columns_flag
    from tunesmith.eval.report import evaluate_and_report
    from tunesmith.eval.runner import EvalOptions

    options = EvalOptions(
        columns=columns_flag(columns),
        instructions=instructions,
        few_shot=few_shot,
        price_per_1k_input_tokens=price,
        schema=schema,
        max_new_tokens=max_tokens,
        batch_size=batch_size,
        forgetting_threshold=forgetting_threshold,
        behaviour_threshold=behaviour_threshold,
        trust_remote_code=trust_remote_code,
        docs=docs,
    )
    evaluate_and_report(run, data, out, options)
