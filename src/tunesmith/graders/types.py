"""What a grader sees and what it returns: the ``sample``, the ``Grade``, and the error for a bad spec."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tunesmith.errors import DataError


class GraderError(DataError):
    """A grader spec that does not validate (unknown type, missing field, bad formula or python source)."""


@dataclass(frozen=True)
class Sample:
    """The ``sample`` namespace of OpenAI's graders: the model's reply, parsed as JSON when it is JSON."""

    output_text: str
    output_json: Any | None = None  # parsed from output_text when it is JSON, else None
    output_tools: list[dict] | None = None

    def namespace(self) -> dict[str, Any]:
        """The dict a template or a python grader reads ``sample`` from."""
        return {"output_text": self.output_text, "output_json": self.output_json, "output_tools": self.output_tools}


@dataclass(frozen=True)
class Grade:
    score: float  # 0.0 when the grader failed
    error: str | None = None  # one line for an event when the grader failed (timeout, crash, non-number, killed)
    sub_scores: dict[str, float] = field(default_factory=dict)  # multi graders


def sample_from_text(text: str, tool_calls: list[dict] | None = None) -> Sample:
    """A ``Sample`` for a reply; ``output_json`` is filled only when the whole reply is valid JSON, as
    OpenAI's graders do (a reply wrapped in prose is not JSON)."""
    parsed: Any | None = None
    stripped = text.strip()
    if stripped[:1] in ("{", "[", '"') or stripped in ("true", "false", "null") or _looks_numeric(stripped):
        try:
            parsed = json.loads(stripped)
        except ValueError:
            parsed = None
    return Sample(output_text=text, output_json=parsed, output_tools=tool_calls)


def _looks_numeric(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or (text[0] == "-" and text[1:2].isdigit()))
