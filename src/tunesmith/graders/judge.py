"""``score_model`` and ``label_model``: a model that tunesmith loads locally is the judge.

The spec's ``model`` names a tunesmith model (alias, HF folder, .gguf or run folder), loaded by the one
loader (``models.load``) and asked through the one generation path (``generate.generate``), in batches.
The judge's messages are the spec's ``input`` with its templates filled, plus one closing instruction that
says what to answer: a number in ``range``, or one of ``labels``. A reply that does not parse scores 0
with an error. Judges are cached per model name in this process, so a training loop that grades every step
loads its judge once; ``close`` frees it.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from tunesmith.graders.template import MissingField, render
from tunesmith.graders.types import Grade, Sample

_MODELS: dict[str, tuple[Any, Any]] = {}
_LOCK = threading.Lock()
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _judge_model(name: str) -> tuple[Any, Any]:
    with _LOCK:
        if name not in _MODELS:
            from tunesmith.models.load import inference_dtype, load_model

            model, tokenizer, _ = load_model(name, dtype=inference_dtype("auto"))
            _MODELS[name] = (model, tokenizer)
        return _MODELS[name]


def release(name: str) -> None:
    with _LOCK:
        _MODELS.pop(name, None)


def _content(content: Any) -> str:
    return content if isinstance(content, str) else str(content.get("text", ""))


class ModelJudge:
    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.labels: list[str] = list(spec.get("labels") or [])
        low, high = spec.get("range", [0, 1])
        self.range = (float(low), float(high))

    def instruction(self) -> str:
        if self.spec["type"] == "label_model":
            return "Answer with exactly one of these labels and nothing else: " + ", ".join(self.labels)
        low, high = self.range
        return f"Answer with only a number from {low:g} to {high:g}."

    def conversation(self, sample: Sample, item: Any) -> list[dict[str, str]]:
        ns = {"item": item, "sample": sample.namespace()}
        messages = []
        for message in self.spec["input"]:
            role = "system" if message["role"] == "developer" else message["role"]
            messages.append({"role": role, "content": render(_content(message["content"]), ns)})
        messages.append({"role": "user", "content": self.instruction()})
        return messages

    def parse(self, reply: str) -> Grade:
        if self.spec["type"] == "label_model":
            text = reply.strip().strip(".\"'` ").lower()
            exact = [label for label in self.labels if label.lower() == text]
            found = exact or [label for label in self.labels if label.lower() in reply.lower()]
            if not found:
                return Grade(0.0, error=f"the judge's reply is none of the labels: {reply[:80]!r}")
            return Grade(1.0 if found[0] in self.spec["passing_labels"] else 0.0)
        match = NUMBER.search(reply)
        if match is None:
            return Grade(0.0, error=f"the judge's reply has no number: {reply[:80]!r}")
        value = float(match.group())
        low, high = self.range
        if not low <= value <= high:
            return Grade(0.0, error=f"the judge's score {value:g} is outside its range [{low:g}, {high:g}]")
        return Grade(value)

    def grade(self, samples: list[Sample], items: list[Any]) -> list[Grade]:
        from tunesmith.generate import generate

        grades: list[Grade | None] = [None] * len(samples)
        conversations, where = [], []
        for i, (sample, item) in enumerate(zip(samples, items, strict=True)):
            try:
                conversations.append(self.conversation(sample, item))
                where.append(i)
            except MissingField as e:
                grades[i] = Grade(0.0, error=f"the template names {{{{{e}}}}}, which this sample/row does not have")
        if conversations:
            params = self.spec.get("sampling_params") or {}
            try:
                model, tokenizer = _judge_model(self.spec["model"])
                replies = generate(
                    model,
                    tokenizer,
                    conversations,
                    max_new_tokens=int(params.get("max_completions_tokens") or 32),
                    temperature=float(params.get("temperature") or 0.0),
                    top_p=float(params.get("top_p") or 1.0),
                    seed=params.get("seed"),
                )
            except Exception as e:  # a judge that cannot load or generate fails its samples, not the caller
                message = (
                    f"the judge model failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                )
                return [g or Grade(0.0, error=message) for g in grades]
            for i, reply in zip(where, replies, strict=True):
                grades[i] = self.parse(reply.text)
        return [g or Grade(0.0, error="not graded") for g in grades]

    def close(self) -> None:
        release(self.spec["model"])
