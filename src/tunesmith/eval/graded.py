"""`tunesmith eval RUN --grader G.json --data rows.jsonl`: the start against the tuned model on a grader's
mean grade, for runs trained by reinforcement fine-tuning (and any other run whose replies can be graded).

Both models answer every held-out row greedily through the one generation path (``graders.run``'s
``model_replies``), and one grader grades both sets of replies. The report holds every row's two grades,
so a mean that moved can be traced to the rows that moved it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith import console, runs
from tunesmith.graders import load_grader
from tunesmith.graders.run import model_replies, read_jsonl

DEFAULT_MAX_TOKENS = 128


def _max_tokens(run: Path, given: int | None) -> tuple[int, str]:
    """The completion length: given, else the run's own (RFT's max_completion_len), else 128."""
    if given:
        return given, "as given"
    config = run / runs.CONFIG_YAML
    if config.is_file():
        from tunesmith.config import load_config

        n = load_config(config).train.max_completion_len
        if n:
            return n, "the run's max_completion_len"
    return DEFAULT_MAX_TOKENS, "the default"


def grade_run(
    run: Path | str, data: Path | str, grader_path: Path | str, *, max_tokens: int | None = None, batch_size: int = 16
) -> dict[str, Any]:
    """{"grader", "decoding", "base": {...}, "tuned": {...}, "rows": [...]}: the mean grades of the run's
    start and of the tuned model on ``data``, and each row's."""
    run, data = Path(run), Path(data)
    info = runs.read_run(run)
    start = info.started_from or info.base_model
    new_tokens, why = _max_tokens(run, max_tokens)
    with load_grader(grader_path) as grader:
        rows = read_jsonl(data, "rows")
        grader.check_items([r for r in rows if isinstance(r, dict)])
        sides = {}
        for name, model in (("base", start), ("tuned", str(run))):
            replies = model_replies(model, rows, new_tokens, batch_size)
            sides[name] = (replies, grader.grade(replies, rows))
        name = grader.name
    per_row = [
        {
            "row": i + 1,
            "base": b_grade.score,
            "tuned": t_grade.score,
            "base_reply": b_reply.output_text,
            "tuned_reply": t_reply.output_text,
            "errors": [e for e in (b_grade.error, t_grade.error) if e],
        }
        for i, (b_reply, b_grade, t_reply, t_grade) in enumerate(zip(*sides["base"], *sides["tuned"], strict=True))
    ]
    n = max(1, len(per_row))
    means = {side: sum(r[side] for r in per_row) / n for side in ("base", "tuned")}
    return {
        "grader": name,
        "data": str(data),
        "decoding": f"greedy (temperature 0), up to {new_tokens} new tokens ({why})",
        "base": {"model": start, "mean_grade": means["base"]},
        "tuned": {"model": str(run), "mean_grade": means["tuned"]},
        "change": means["tuned"] - means["base"],
        "rows": per_row,
    }


def render_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Graded evaluation: {result['grader']}",
        "",
        f"Data: {result['data']} ({len(result['rows'])} rows). Decoding: {result['decoding']}.",
        "",
        "| model | mean grade |",
        "|---|---|",
        f"| base ({result['base']['model']}) | {result['base']['mean_grade']:.4f} |",
        f"| tuned ({result['tuned']['model']}) | {result['tuned']['mean_grade']:.4f} |",
        "",
        f"Change: {result['change']:+.4f}",
        "",
        "## Per row",
        "",
        "| row | base | tuned | errors |",
        "|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['row']} | {r['base']:.3f} | {r['tuned']:.3f} | {'; '.join(r['errors'])[:120]} |")
    return "\n".join(lines) + "\n"


def grade_and_report(
    run: Path | str, data: Path | str, grader: Path | str, out: Path | str | None = None, **kw: Any
) -> tuple[dict[str, Any], dict[str, Path]]:
    """The whole of `tunesmith eval RUN --grader G.json`: grade both models, write grades.json and grades.md,
    print the headline."""
    result = grade_run(run, data, grader, **kw)
    folder = Path(out) if out is not None else Path(run) / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "grades.json", "markdown": folder / "grades.md"}
    paths["json"].write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_markdown(result), encoding="utf-8")
    console.info(
        f"grade ({result['grader']}, {result['decoding']}): base {result['base']['mean_grade']:.4f} -> "
        f"tuned {result['tuned']['mean_grade']:.4f} ({result['change']:+.4f}) on {len(result['rows'])} rows"
    )
    console.info(f"report: {paths['markdown']}  (also {paths['json'].name})")
    return result, paths
