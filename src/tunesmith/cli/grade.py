"""`tunesmith grade`: grade a model's replies, or a replies file, with a grader in OpenAI's format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option


def grade_command(
    grader: Annotated[Path, Opt("--grader", help="The grader: a JSON file in OpenAI's format.")],
    data: Annotated[Path, Opt("--data", help="Rows (JSONL); each row is the grader's `item`.")],
    model: Annotated[
        str | None, Opt("--model", help="Grade this model's greedy replies to the rows' messages.")
    ] = None,
    replies: Annotated[
        Path | None, Opt("--replies", help="Grade these replies instead: JSONL, one per row, in order.")
    ] = None,
    max_tokens: Annotated[int, Opt("--max-tokens", min=1, help="Longest reply when generating.")] = 256,
    batch_size: Annotated[int, Opt("--batch-size", min=1)] = 16,
    output: Annotated[str, Opt("--format", help="text, or json (machine-readable, on stdout only).")] = "text",
) -> None:
    """Grade replies with a grader (string_check, text_similarity, python, score_model, label_model, multi)."""
    import json

    from tunesmith import console
    from tunesmith.errors import UserError
    from tunesmith.graders.run import grade_file

    if output not in ("text", "json"):
        raise UserError(f"--format must be text or json, not {output!r}")
    report = grade_file(grader, data, model=model, replies=replies, max_tokens=max_tokens, batch_size=batch_size)
    if output == "json":
        console.console.out(json.dumps(report.as_dict(), indent=2, ensure_ascii=False), highlight=False)
        return
    for i, g in enumerate(report.rows, 1):
        line = f"row {i}: {g.score:.4g}"
        if g.sub_scores:
            line += "  (" + ", ".join(f"{k} {v:.3g}" for k, v in g.sub_scores.items()) + ")"
        if g.error:
            line += f"  error: {g.error}"
        console.console.print(line, markup=False, highlight=False)
    failed = sum(1 for g in report.rows if g.error)
    console.console.print(
        f"mean grade {report.mean:.4f} over {len(report.rows)} rows ({report.grader})"
        + (f"; {failed} failed to grade" if failed else ""),
        markup=False,
        highlight=False,
    )
