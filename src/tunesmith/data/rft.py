"""Reinforcement fine-tuning rows, as OpenAI's RFT files hold them: ``messages`` that end with a user message
(the prompt; there is no reference reply to imitate), and any other fields, which the grader reads as its
``item`` (``{{item.answer}}``, ``item["answer"]`` in a python grader). The whole row is the item, as on
OpenAI's platform."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.errors import DataError


@dataclass
class RftPrompt:
    messages: list[dict[str, Any]]
    item: dict[str, Any]
    source: str  # "file:line"
    tools: list[dict[str, Any]] | None = None
    prompt_ids: list[int] = field(default_factory=list)  # filled in by ``render_prompts``

    @property
    def input_ids(self) -> list[int]:
        return self.prompt_ids

    @property
    def n_trained(self) -> int:
        return 0  # a prompt trains nothing itself: its sampled completions do


def read_prompts(path: Path | str) -> list[RftPrompt]:
    """Every row of a JSONL file as an ``RftPrompt``; one DataError naming the line for a row that is not one."""
    from tunesmith.graders.run import read_jsonl

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (reinforcement fine-tuning reads JSONL rows of messages)")
    out = []
    for n, row in enumerate(read_jsonl(path, "prompts"), 1):
        where = f"{path}:{n}"
        messages = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise DataError(f"{where}: an RFT row needs 'messages', a list of {{role, content}} objects")
        if messages[-1].get("role") != "user":
            raise DataError(
                f"{where}: an RFT row's messages end with a user message (the prompt the model answers); this one "
                f"ends with a {messages[-1].get('role')!r} message. Put reference answers in other fields of the row "
                "for the grader to read as {{item.FIELD}}"
            )
        if not all(isinstance(m.get("content"), str) for m in messages):
            raise DataError(f"{where}: every message needs a string 'content'")
        tools = row.get("tools") if isinstance(row.get("tools"), list) else None
        out.append(RftPrompt(messages, row, where, tools))
    return out


def render_prompts(renderer: Any, prompts: list[RftPrompt]) -> list[RftPrompt]:
    """Each prompt's token ids, rendered by the training renderer (the prompt format cannot drift)."""
    for p in prompts:
        p.prompt_ids = renderer.prompt_ids(p.messages, p.tools)
    return prompts


def file_hash(path: Path | str) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# An RFT run validates on its mean grade, so it holds prompts out even from a small file: a fifth of them,
# between RFT_VAL_MIN and RFT_VAL_MAX (each validation generates a completion of every one).
RFT_VAL_FRACTION, RFT_VAL_MIN, RFT_VAL_MAX, RFT_VAL_FROM_ROWS = 0.2, 4, 32, 10


def split_prompts(
    prompts: list[RftPrompt], fraction: float | None, seed: int
) -> tuple[list[RftPrompt], list[RftPrompt], list[str]]:
    """(train, held out, the reason): a seeded split, as SFT's (``formats.split_examples``)."""
    import random

    n = len(prompts)
    if fraction is None:
        if n < RFT_VAL_FROM_ROWS:
            return prompts, [], [f"validation: none ({n} prompts are too few to hold any out; give --val)"]
        n_val = min(RFT_VAL_MAX, max(RFT_VAL_MIN, round(n * RFT_VAL_FRACTION)))
    else:
        n_val = min(n - 1, max(1, round(n * fraction))) if fraction > 0 and n > 1 else 0
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = set(order[:n_val])
    train = [p for i, p in enumerate(prompts) if i not in held]
    val = [p for i, p in enumerate(prompts) if i in held]
    why = (
        [f"validation: held out {n_val} of {n} prompts (seeded), no --val given"] if n_val and fraction is None else []
    )
    return train, val, why
