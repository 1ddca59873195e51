"""What ``tunesmith grade`` does, as a library call: read the rows, get the replies (a replies file, or a
model's greedy replies through the one generation path), grade them in one batch."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.errors import DataError
from tunesmith.graders.grader import load_grader
from tunesmith.graders.types import Grade, Sample, sample_from_text


@dataclass
class GradeReport:
    grader: str
    rows: list[Grade] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return sum(g.score for g in self.rows) / len(self.rows) if self.rows else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "grader": self.grader,
            "mean": self.mean,
            "rows": len(self.rows),
            "failed": sum(1 for g in self.rows if g.error),
            "grades": [
                {"row": i + 1, "score": g.score, "error": g.error, "sub_scores": g.sub_scores}
                for i, g in enumerate(self.rows)
            ],
        }


def read_jsonl(path: Path, what: str) -> list[Any]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {what} {path}: {getattr(e, 'strerror', None) or e}") from None
    values = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            values.append(json.loads(line))
        except ValueError as e:
            raise DataError(f"{path}:{n}: not JSON ({e.msg})") from None
    if not values:
        raise DataError(f"{path} has no rows")
    return values


def read_replies(path: Path, count: int) -> list[Sample]:
    """One reply per line, in the rows' order: a JSON string, or an object with ``output_text`` (and
    optionally ``output_tools``)."""
    samples = []
    for n, value in enumerate(read_jsonl(path, "replies"), 1):
        if isinstance(value, str):
            samples.append(sample_from_text(value))
        elif isinstance(value, dict) and isinstance(value.get("output_text"), str):
            samples.append(sample_from_text(value["output_text"], value.get("output_tools")))
        else:
            raise DataError(f"{path}: reply {n} is neither a JSON string nor an object with 'output_text'")
    if len(samples) != count:
        raise DataError(f"{path} has {len(samples)} replies for {count} rows; give one reply per row, in order")
    return samples


def prompt_of(row: Any, n: int) -> list[dict[str, Any]]:
    """The row's messages up to its last user message (a trailing reference reply is dropped)."""
    messages = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(messages, list) or not messages:
        raise DataError(f"row {n} has no 'messages' to prompt the model with")
    last_user = max((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"), default=-1)
    if last_user < 0:
        raise DataError(f"row {n} has no user message")
    return messages[: last_user + 1]


def model_replies(model: str, rows: list[Any], max_tokens: int, batch_size: int) -> list[Sample]:
    from tunesmith.data.tools import parse_tool_calls
    from tunesmith.generate import generate
    from tunesmith.models.load import inference_dtype, load_model

    prompts = [prompt_of(row, n) for n, row in enumerate(rows, 1)]
    tools = [row.get("tools") if isinstance(row.get("tools"), list) else None for row in rows]
    lm, tok, _ = load_model(model, dtype=inference_dtype("auto"))
    outs = generate(lm, tok, prompts, max_new_tokens=max_tokens, batch_size=batch_size, tools=tools)
    samples = []
    for out, row_tools in zip(outs, tools, strict=True):
        calls = None
        if row_tools:
            parsed = parse_tool_calls(out.text)
            # OpenAI's tool-call shape: arguments are a JSON string
            calls = [
                {"type": "function", "function": {"name": c.name, "arguments": c.arguments_json()}}
                for c in parsed.calls
            ] or None
        samples.append(sample_from_text(out.text, calls))
    return samples


def grade_file(
    grader_path: Path | str,
    data: Path,
    *,
    model: str | None = None,
    replies: Path | None = None,
    max_tokens: int = 256,
    batch_size: int = 16,
) -> GradeReport:
    if (model is None) == (replies is None):
        raise DataError("give the replies to grade: --model MODEL (its replies) or --replies FILE")
    grader = load_grader(grader_path)
    try:
        rows = read_jsonl(data, "rows")
        grader.check_items([r for r in rows if isinstance(r, dict)])
        if replies is not None:
            samples = read_replies(replies, len(rows))
        else:
            samples = model_replies(str(model), rows, max_tokens, batch_size)
        return GradeReport(grader.name, grader.grade(samples, rows))
    finally:
        grader.close()
