"""Behavioural forgetting probe: does the tuned model still answer what its base answered?

Perplexity on general text (``forgetting.py``) can move without the model getting worse at anything a user
notices, and the reverse can happen too. So beside it we ask both models a few dozen everyday questions with
short, checkable answers (``examples/general_questions.json``: arithmetic, capitals, opposites, plurals,
common phrases, units), one user turn each, rendered by the run's chat template and answered greedily through
the one generation path (``generate.py``), ``MAX_NEW_TOKENS`` new tokens at most.

Matching rule (``answered``): the reply's questions (sentences ending in "?") are dropped, so an echoed or
rephrased question scores nothing; reply and accepted answers are lower-cased, every run of characters that is
not a letter or digit becomes one space, and a reply is right when some accepted answer appears in it as whole
words ("paris" matches "The capital is Paris." but "4" does not match "14"). The shipped items keep only
questions the embedded SmolLM2-135M-Instruct answers right this way, and still right under small random changes
of its weights (``examples/make_general_questions.py``): an item a model gets right by a hair flips under any
training and would make the probe measure noise.

The score is model-independent: only items the run's own base model got right count, and the probe reports
the share of those the tuned model still gets right. ``drop`` = 1 - that share; a drop above the threshold
(settable with ``--behaviour-threshold``) is flagged as a regression, provided at least ``MIN_LOST`` items were
lost. Base against itself drops 0 by construction (greedy decoding is deterministic).
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from importlib import resources
from typing import Any

from tunesmith.generate import generate

ITEMS_NAME = "general_questions.json"
MAX_NEW_TOKENS = 16  # every kept answer comes within a short sentence; longer budgets only cost time
# All items in one batch: a few dozen short prompts hold a few thousand tokens of KV cache, and on CPU one batch
# of 41 took 9.7 s where batches of 16 took 14.0 s (SmolLM2-135M, one thread, 16 new tokens).
BATCH_SIZE = 64
# Flag when the tuned model loses more than 10% of what its base answered. The shipped items are the ones
# SmolLM2 answers right robustly (right under 8 small random weight changes: make_general_questions.py), so a
# change that teaches nothing loses none of them; on its 31 items one is 3.2 points, and four or more lost
# everyday answers is a loss a user would notice. The same budget as perplexity's.
DEFAULT_THRESHOLD = 0.10
# One lost answer is never a regression by itself: any change of weights can flip a borderline greedy answer,
# and where the base answers few items (Gemma 3 270M, a base model, answers 1 of the 41 kept before the
# robustness filter) one is 100 points.
MIN_LOST = 2
LOST_SHOWN = 5  # lost items listed in the result, so a report shows what was forgotten without the whole set


@dataclass(frozen=True)
class Item:
    prompt: str
    answers: tuple[str, ...]


def load_items(name: str = ITEMS_NAME) -> list[Item]:
    data = json.loads((resources.files("tunesmith.examples") / name).read_text(encoding="utf-8"))
    return [Item(it["prompt"], tuple(it["answers"])) for it in data["items"]]


def normalize(text: str) -> str:
    """Lower case, NFKC, every run of non-alphanumerics one space: 'D-O-G!' -> 'd o g'."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(re.sub(r"[\W_]+", " ", text).split())


def statements(reply: str) -> str:
    """``reply`` without its questions: a model that echoes or rephrases the question ("What is the opposite
    of cold?" asked "...of hot?") has not answered it, though the answer's word is in its text."""
    pieces = re.split(r"(?<=[.!?\n])", reply)
    return " ".join(p for p in pieces if not p.strip().endswith("?"))


def answered(reply: str, answers: tuple[str, ...] | list[str]) -> bool:
    """True when some accepted answer appears in ``reply``'s statements as whole words (after ``normalize``)."""
    padded = f" {normalize(statements(reply))} "
    return any(f" {normalize(a)} " in padded for a in answers if normalize(a))


def replies(model: Any, tokenizer: Any, items: list[Item], *, batch_size: int = BATCH_SIZE) -> list[str]:
    """Greedy replies to each item's prompt as one user turn, through the chat template (the one renderer)."""
    conversations = [[{"role": "user", "content": it.prompt}] for it in items]
    done = generate(model, tokenizer, conversations, max_new_tokens=MAX_NEW_TOKENS, batch_size=batch_size)
    return [c.text for c in done]


def right(model: Any, tokenizer: Any, items: list[Item], *, batch_size: int = BATCH_SIZE) -> list[bool]:
    """Which items ``model`` answers right."""
    return scored(items, replies(model, tokenizer, items, batch_size=batch_size))


def scored(items: list[Item], texts: list[str]) -> list[bool]:
    return [answered(t, it.answers) for t, it in zip(texts, items, strict=True)]


@dataclass
class Behaviour:
    items: list[Item]
    base_right: list[bool]
    tuned_right: list[bool]
    threshold: float = DEFAULT_THRESHOLD
    tuned_replies: list[str] | None = None  # shown beside the lost items: what the tuned model said instead

    @property
    def base_correct(self) -> int:
        return sum(self.base_right)

    @property
    def kept(self) -> int:
        """Items the base got right that the tuned model still gets right."""
        return sum(b and t for b, t in zip(self.base_right, self.tuned_right, strict=True))

    @property
    def drop(self) -> float:
        """Share of the base-right items the tuned model gets wrong: 0.1 means it lost one in ten."""
        return 1.0 - self.kept / self.base_correct if self.base_correct else 0.0

    @property
    def lost(self) -> int:
        return self.base_correct - self.kept

    @property
    def regressed(self) -> bool:
        return self.drop > self.threshold and self.lost >= MIN_LOST

    def as_dict(self) -> dict[str, Any]:
        said = self.tuned_replies or [None] * len(self.items)
        pairs = zip(self.items, self.base_right, self.tuned_right, said, strict=True)
        lost = [{"prompt": it.prompt, "reply": r} for it, b, t, r in pairs if b and not t]
        return {
            "set": ITEMS_NAME,
            "items": len(self.items),
            "base_correct": self.base_correct,
            "tuned_correct_of_those": self.kept,
            "tuned_correct": sum(self.tuned_right),
            "drop": self.drop,
            "threshold": self.threshold,
            "regressed": self.regressed,
            "lost": lost[:LOST_SHOWN],
            "lost_count": len(lost),
        }


def summary(b: dict[str, Any]) -> str:
    """One sentence for the reports and the terminal, from ``Behaviour.as_dict()``."""
    if not b["base_correct"]:
        return f"the base model answered none of the {b['items']} general questions, so there is nothing to keep"
    return (
        f"of {b['items']} general questions, base answered {b['base_correct']} right and tuned still answers "
        f"{b['tuned_correct_of_those']} of those (drop {b['drop']:.1%}, threshold {b['threshold']:.0%})"
    )


def markdown(b: dict[str, Any]) -> str:
    """The report.md line: the summary, the flag, and the first lost questions with what tuned said instead."""

    def lost(x: dict[str, Any]) -> str:
        said = " ".join((x.get("reply") or "").split())[:60].replace("`", "'")
        return f"`{x['prompt']}`" + (f" (tuned: `{said}`)" if said else "")

    shown = "; lost: " + ", ".join(lost(x) for x in b["lost"]) if b["lost"] else ""
    return f"Everyday questions (`{b['set']}`): {summary(b)}: {'**REGRESSION**' if b['regressed'] else 'ok'}{shown}."
