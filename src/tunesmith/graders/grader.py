"""The ``Grader``: a validated spec turned into a tree of scorers that grade a batch of samples at once.

Batching matters for reinforcement learning: a step grades K completions for each of several prompts, so
the python sandbox keeps its worker processes across the batch and a model judge generates in batches.
A grader never raises for something that goes wrong while grading (a missing field in a row, a crashing
python grader, a judge that answers nonsense): that sample scores 0 and its ``Grade.error`` says why.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

from tunesmith.graders import spec as specs
from tunesmith.graders.template import MissingField, has_path, render
from tunesmith.graders.types import Grade, GraderError, Sample

SAMPLE_FIELDS = ("output_text", "output_json", "output_tools")


class Scorer(Protocol):
    def grade(self, samples: list[Sample], items: list[Any]) -> list[Grade]: ...

    def close(self) -> None: ...


def namespaces(sample: Sample, item: Any) -> dict[str, Any]:
    return {"item": item, "sample": sample.namespace()}


def render_pairs(spec: dict, samples: list[Sample], items: list[Any]) -> list[tuple[str, str] | str]:
    """(input, reference) per sample, or the error line for a sample whose row lacks a named field."""
    out: list[tuple[str, str] | str] = []
    for sample, item in zip(samples, items, strict=True):
        ns = namespaces(sample, item)
        try:
            out.append((render(spec["input"], ns), render(spec["reference"], ns)))
        except MissingField as e:
            out.append(f"the template names {{{{{e}}}}}, which this sample/row does not have")
    return out


class StringCheck:
    def __init__(self, spec: dict) -> None:
        self.spec = spec

    def grade(self, samples: list[Sample], items: list[Any]) -> list[Grade]:
        from tunesmith.graders.text import string_check

        op = self.spec["operation"]
        return [
            Grade(0.0, error=p) if isinstance(p, str) else Grade(string_check(op, *p))
            for p in render_pairs(self.spec, samples, items)
        ]

    def close(self) -> None:
        pass


class TextSimilarity(StringCheck):
    def grade(self, samples: list[Sample], items: list[Any]) -> list[Grade]:
        from tunesmith.graders.text import similarity

        pairs = render_pairs(self.spec, samples, items)
        ok = [i for i, p in enumerate(pairs) if not isinstance(p, str)]
        grades = [Grade(0.0, error=p) if isinstance(p, str) else Grade(0.0) for p in pairs]
        if ok:
            try:
                texts = [pairs[i][0] for i in ok]
                references = [pairs[i][1] for i in ok]
                scores = similarity(self.spec["evaluation_metric"], texts, references)
            except Exception as e:  # a metric library failing on odd input must not fail the batch
                return [g if g.error else Grade(0.0, error=f"{self.spec['evaluation_metric']}: {e}") for g in grades]
            for i, s in zip(ok, scores, strict=True):
                grades[i] = Grade(s)
        return grades


class Multi:
    """Named sub-graders; ``calculate_output`` combines their scores. A sub-grader that failed counts as
    0 in the formula and its error is carried in the result (the combined score is still computed)."""

    def __init__(self, spec: dict, build: Any) -> None:
        from tunesmith.graders.formula import parse_formula

        self.spec = spec
        self.children = {name: build(sub) for name, sub in specs.sub_graders(spec).items()}
        self.formula = parse_formula(spec["calculate_output"], set(self.children))

    def grade(self, samples: list[Sample], items: list[Any]) -> list[Grade]:
        from tunesmith.graders.formula import evaluate

        per_child = {name: child.grade(samples, items) for name, child in self.children.items()}
        out = []
        for i in range(len(samples)):
            subs = {name: grades[i].score for name, grades in per_child.items()}
            errors = [f"{name}: {grades[i].error}" for name, grades in per_child.items() if grades[i].error]
            try:
                score = evaluate(self.formula, subs)
                if not math.isfinite(score):
                    raise ValueError(f"the formula gave {score}")
            except (ArithmeticError, ValueError, TypeError) as e:
                out.append(Grade(0.0, error=f"calculate_output: {e}", sub_scores=subs))
                continue
            out.append(Grade(score, error="; ".join(errors) or None, sub_scores=subs))
        return out

    def close(self) -> None:
        for child in self.children.values():
            child.close()


def build(spec: dict, limits: Any = None) -> Scorer:
    """The scorer tree for a validated spec; ``limits`` (a ``SandboxLimits``) applies to python graders."""
    kind = spec["type"]
    if kind == "string_check":
        return StringCheck(spec)
    if kind == "text_similarity":
        return TextSimilarity(spec)
    if kind == "multi":
        return Multi(spec, lambda sub: build(sub, limits))
    if kind == "python":
        from tunesmith.graders.sandbox import PythonScorer

        return PythonScorer(spec, limits)
    from tunesmith.graders.judge import ModelJudge  # score_model and label_model

    return ModelJudge(spec)


class Grader:
    """A validated grader. ``grade`` is batched and never raises for grader-side failures; ``close``
    stops the sandbox's worker processes and frees a judge model. Also a context manager."""

    def __init__(self, spec: dict, *, limits: Any = None) -> None:
        specs.validate(spec)
        self.spec = spec
        self._scorer = build(spec, limits)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def check_items(self, items: list[dict]) -> None:
        """GraderError if a template names an ``item`` field that no row has, or a ``sample`` field that
        samples never have (a typo would otherwise score every sample 0)."""
        for path in specs.template_paths(self.spec):
            dotted = ".".join(path)
            if path[0] == "sample" and path[1] not in SAMPLE_FIELDS:
                raise GraderError(
                    f"grader '{self.name}': {{{{{dotted}}}}} is not a sample field ({', '.join(SAMPLE_FIELDS)})"
                )
            if path[0] == "item" and items and not any(has_path(item, path[1:]) for item in items):
                raise GraderError(f"grader '{self.name}': the template names {{{{{dotted}}}}}, which no row has")

    def grade(self, samples: list[Sample], items: list[dict]) -> list[Grade]:
        if len(samples) != len(items):
            raise ValueError(f"{len(samples)} samples but {len(items)} items")  # a caller's bug, not the grader's
        if not samples:
            return []
        return self._scorer.grade(list(samples), list(items))

    def close(self) -> None:
        self._scorer.close()

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_grader(spec: dict | str | Path, *, limits: Any = None) -> Grader:
    """A grader from a dict, JSON text or a .json file; GraderError (one line, exit 2) if it does not validate.
    ``limits``: a ``graders.sandbox.SandboxLimits`` for python graders (default: ``DEFAULT_LIMITS``)."""
    return Grader(specs.read_spec(spec), limits=limits)
