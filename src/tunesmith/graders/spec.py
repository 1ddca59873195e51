"""Validate a grader spec in OpenAI's format (``openai.types.graders``) before anything runs.

Each problem is one GraderError line that names the grader and the field, so a job is refused at creation
with its reason rather than failing on its first step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.graders.template import references
from tunesmith.graders.types import GraderError

STRING_OPS = ("eq", "ne", "like", "ilike")
SIMILARITY_METRICS = (
    "cosine",
    "fuzzy_match",
    "bleu",
    "gleu",
    "meteor",
    "rouge_1",
    "rouge_2",
    "rouge_3",
    "rouge_4",
    "rouge_5",
    "rouge_l",
)
ROLES = ("user", "assistant", "system", "developer")
REQUIRED = {
    "string_check": ("name", "input", "reference", "operation"),
    "text_similarity": ("name", "input", "reference", "evaluation_metric"),
    "python": ("name", "source"),
    "score_model": ("name", "input", "model"),
    "label_model": ("name", "input", "model", "labels", "passing_labels"),
    "multi": ("name", "graders", "calculate_output"),
}


def read_spec(spec: dict | str | Path) -> dict:
    """A spec from a dict, JSON text or a .json file."""
    if isinstance(spec, dict):
        return spec
    text = str(spec)
    if isinstance(spec, Path) or not text.lstrip().startswith("{"):
        path = Path(text).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise GraderError(f"cannot read the grader {path}: {e.strerror or e}") from None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise GraderError(f"the grader is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise GraderError("the grader must be a JSON object with a 'type'")
    return value


def validate(spec: Any, where: str = "grader") -> None:
    """GraderError for the first problem in ``spec`` (recursing into a multi grader's sub-graders)."""
    if not isinstance(spec, dict):
        raise GraderError(f"{where} must be an object with a 'type'")
    kind = spec.get("type")
    if kind not in REQUIRED:
        raise GraderError(f"{where}: unknown grader type {kind!r}; expected one of {', '.join(REQUIRED)}")
    for name in REQUIRED[kind]:
        if name not in spec or spec[name] is None:
            raise GraderError(f"{where} ({kind}) is missing '{name}'")
    if not isinstance(spec["name"], str):
        raise GraderError(f"{where}: 'name' must be a string")
    where = f"grader '{spec['name']}'"
    _CHECKS[kind](spec, where)


def _strings(spec: dict, where: str, *fields: str) -> None:
    for name in fields:
        if not isinstance(spec[name], str):
            raise GraderError(f"{where}: '{name}' must be a string")
        references(spec[name])  # a malformed placeholder is a spec error


def _string_check(spec: dict, where: str) -> None:
    _strings(spec, where, "input", "reference")
    if spec["operation"] not in STRING_OPS:
        raise GraderError(f"{where}: unknown operation {spec['operation']!r}; expected {', '.join(STRING_OPS)}")


def _text_similarity(spec: dict, where: str) -> None:
    _strings(spec, where, "input", "reference")
    if spec["evaluation_metric"] not in SIMILARITY_METRICS:
        raise GraderError(
            f"{where}: unknown evaluation_metric {spec['evaluation_metric']!r}; "
            f"expected one of {', '.join(SIMILARITY_METRICS)}"
        )


def _python(spec: dict, where: str) -> None:
    import ast

    if not isinstance(spec["source"], str):
        raise GraderError(f"{where}: 'source' must be a string of python")
    try:
        tree = ast.parse(spec["source"])
    except SyntaxError as e:
        raise GraderError(f"{where}: the python source has a syntax error on line {e.lineno}: {e.msg}") from None
    defines = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    if "grade" not in defines:
        raise GraderError(f"{where}: the python source must define grade(sample, item) -> float")


def _model_input(spec: dict, where: str) -> None:
    messages = spec["input"]
    if not isinstance(messages, list) or not messages:
        raise GraderError(f"{where}: 'input' must be a non-empty list of messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise GraderError(f"{where}: input[{i}] needs a role, one of {', '.join(ROLES)}")
        content = message.get("content")
        if isinstance(content, str):
            references(content)
        elif isinstance(content, dict) and content.get("type") in ("input_text", "output_text"):
            references(str(content.get("text", "")))
        else:
            raise GraderError(f"{where}: input[{i}] content must be text (images and audio are not supported)")
    if not isinstance(spec["model"], str) or not spec["model"]:
        raise GraderError(f"{where}: 'model' must name a tunesmith model (alias, folder or run)")


def _score_model(spec: dict, where: str) -> None:
    _model_input(spec, where)
    span = spec.get("range", [0, 1])
    if (
        not isinstance(span, list)
        or len(span) != 2
        or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in span)
        or span[0] >= span[1]
    ):
        raise GraderError(f"{where}: 'range' must be two numbers, low then high")
    if not isinstance(spec.get("sampling_params", {}), dict):
        raise GraderError(f"{where}: 'sampling_params' must be an object")


def _label_model(spec: dict, where: str) -> None:
    _model_input(spec, where)
    labels, passing = spec["labels"], spec["passing_labels"]
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
        raise GraderError(f"{where}: 'labels' must be a non-empty list of strings")
    if not isinstance(passing, list) or not passing or any(x not in labels for x in passing):
        raise GraderError(f"{where}: 'passing_labels' must be a non-empty subset of 'labels'")


def sub_graders(spec: dict) -> dict[str, dict]:
    """A multi grader's named sub-graders. OpenAI's guide writes ``graders`` as an object of name ->
    grader; the SDK's type also admits one grader, which is then known by its own ``name``."""
    graders = spec["graders"]
    if isinstance(graders, dict) and "type" in graders and isinstance(graders.get("type"), str):
        return {str(graders.get("name")): graders}
    if isinstance(graders, dict):
        return graders
    raise GraderError(f"grader '{spec.get('name')}': 'graders' must be an object of name -> grader")


def _multi(spec: dict, where: str) -> None:
    from tunesmith.graders.formula import parse_formula

    graders = sub_graders(spec)
    if not graders:
        raise GraderError(f"{where}: 'graders' is empty")
    for key, sub in graders.items():
        if not key.isidentifier():
            raise GraderError(f"{where}: sub-grader name {key!r} must be usable in the formula (letters, _, digits)")
        if isinstance(sub, dict) and sub.get("type") == "multi":
            raise GraderError(f"{where}: a multi grader cannot contain another multi grader")
        validate(sub, f"{where}.graders.{key}")
    if not isinstance(spec["calculate_output"], str):
        raise GraderError(f"{where}: 'calculate_output' must be a formula string")
    parse_formula(spec["calculate_output"], set(graders), where)


_CHECKS = {
    "string_check": _string_check,
    "text_similarity": _text_similarity,
    "python": _python,
    "score_model": _score_model,
    "label_model": _label_model,
    "multi": _multi,
}


def template_paths(spec: dict) -> list[list[str]]:
    """Every placeholder path the spec's templates name (recursing into multi)."""
    kind = spec["type"]
    if kind == "multi":
        return [p for sub in sub_graders(spec).values() for p in template_paths(sub)]
    texts: list[str] = []
    if kind in ("string_check", "text_similarity"):
        texts = [spec["input"], spec["reference"]]
    elif kind in ("score_model", "label_model"):
        for message in spec["input"]:
            content = message["content"]
            texts.append(content if isinstance(content, str) else str(content.get("text", "")))
    return [p for t in texts for p in references(t)]
