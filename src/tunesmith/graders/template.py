"""OpenAI's grader templates: ``{{item.field}}``, ``{{sample.output_text}}``, ``{{sample.output_json.key}}``.

A path is dotted (``item.answer.city``); a list is indexed by a number segment (``item.tags.0``). A string
value is inserted as is; anything else (numbers, objects, lists) as JSON, so a template can quote a whole
object. Only the two namespaces exist: anything else in braces is a spec error, found at validation.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tunesmith.graders.types import GraderError

PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
NAMESPACES = ("item", "sample")
_MISSING = object()


class MissingField(Exception):
    """A template names a path that this row or sample does not have."""


def references(template: str) -> list[list[str]]:
    """The paths a template names, each split into segments; GraderError for a malformed one."""
    paths = []
    for match in PLACEHOLDER.finditer(template):
        path = match.group(1).split(".")
        if path[0] not in NAMESPACES or len(path) < 2 or not all(path):
            raise GraderError(
                f"template '{{{{{match.group(1)}}}}}' names neither item.FIELD nor sample.FIELD "
                "(for example {{item.answer}} or {{sample.output_text}})"
            )
        paths.append(path)
    return paths


def lookup(root: Any, path: list[str]) -> Any:
    """The value at ``path`` below ``root``, or ``_MISSING``."""
    value = root
    for segment in path:
        if isinstance(value, dict) and segment in value:
            value = value[segment]
        elif isinstance(value, list) and segment.lstrip("-").isdigit() and -len(value) <= int(segment) < len(value):
            value = value[int(segment)]
        else:
            return _MISSING
    return value


def has_path(root: Any, path: list[str]) -> bool:
    return lookup(root, path) is not _MISSING


def render(template: str, namespaces: dict[str, Any]) -> str:
    """The template with each placeholder filled; MissingField names the first path that is absent."""

    def fill(match: re.Match[str]) -> str:
        path = match.group(1).split(".")
        value = lookup(namespaces, path)
        if value is _MISSING:
            raise MissingField(match.group(1))
        if isinstance(value, str):
            return value
        return json.dumps(value, ensure_ascii=False)

    return PLACEHOLDER.sub(fill, template)
