"""Duplicates, conflicting replies and train/validation leakage, for the dataset doctor.

Four relations between rows, strongest first; a row is reported for the strongest one only, so one
problem is one line:
  * duplicate       every message equal (whitespace collapsed) to an earlier row's;
  * conflict        the same prompt (everything before the last reply) as an earlier row, another reply;
  * near-duplicate  word-trigram Jaccard similarity >= threshold with an earlier row;
  * leak / near-leak  a validation row whose prompt is in the training data, or which is near a training row.

Near matches are found with MinHash LSH (datasketch) and then confirmed with the exact Jaccard similarity
of the two shingle sets, so a reported pair is never a hashing accident; LSH only decides which pairs are
worth comparing, which keeps the check linear in the number of rows instead of quadratic.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tunesmith.data.formats import Conversation

NUM_PERM = 128  # MinHash permutations: similarity estimates within ~0.05, fast enough for 100k rows
SHINGLE = 3  # word n-grams: short fine-tuning rows have too few 5-grams for a stable similarity
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Match:
    index: int  # the reported row (the later one, or the validation row)
    other: int  # the earlier row, or the training row
    kind: str  # duplicate | conflict | near-duplicate | leak | near-leak
    similarity: float


def _norm(text: str) -> str:
    return " ".join(text.split())


def row_key(conv: Conversation) -> tuple[tuple[str, str], ...]:
    # m.text includes tool calls: two rows that differ only in a call's arguments are not duplicates.
    return tuple((m.role, _norm(m.text)) for m in conv.messages)


def _last_reply(conv: Conversation) -> int:
    return max((i for i, m in enumerate(conv.messages) if m.role == "assistant"), default=len(conv.messages))


def prompt_key(conv: Conversation) -> tuple[tuple[str, str], ...]:
    """Everything the model sees before its (last) reply."""
    return row_key(conv)[: _last_reply(conv)]


def reply_text(conv: Conversation) -> str:
    i = _last_reply(conv)
    return _norm(conv.messages[i].text) if i < len(conv.messages) else ""


def shingles(conv: Conversation) -> set[str]:
    # System messages are left out: a long system prompt shared by every row would make them all "similar".
    words = _WORD.findall(" ".join(m.text for m in conv.messages if m.role != "system").lower())
    if len(words) < SHINGLE:
        return {" ".join(words)}
    return {" ".join(words[i : i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class _NearIndex:
    """MinHash LSH over shingle sets; ``best`` confirms candidates with the exact Jaccard similarity."""

    def __init__(self, threshold: float) -> None:
        from datasketch import MinHash, MinHashLSH

        self.threshold = threshold
        # Index at a lower threshold than we report: LSH misses some pairs just above its own threshold,
        # and the exact check below throws away the extra candidates.
        self.lsh = MinHashLSH(threshold=max(0.05, threshold - 0.15), num_perm=NUM_PERM)
        self.sets: dict[int, set[str]] = {}
        # Drawing the random permutations is half the cost of a MinHash: draw them once (seeded).
        self._minhash = MinHash
        first = MinHash(num_perm=NUM_PERM, seed=1)
        self._perms, self._scheme = first.permutations, first.scheme

    def minhash(self, items: set[str]) -> Any:
        m = self._minhash(num_perm=NUM_PERM, permutations=self._perms, scheme=self._scheme)
        m.update_batch([s.encode("utf-8") for s in items])
        return m

    def add(self, key: int, items: set[str], mh: Any) -> None:
        self.sets[key] = items
        self.lsh.insert(key, mh)

    def best(self, items: set[str], mh: Any) -> tuple[int, float] | None:
        """The most similar indexed row at or above the threshold (the earliest on ties)."""
        found = [(jaccard(items, self.sets[k]), -k) for k in self.lsh.query(mh)]
        found = [f for f in found if f[0] >= self.threshold]
        if not found:
            return None
        sim, neg_key = max(found)
        return -neg_key, sim


def find_duplicates(convs: Sequence[Conversation], threshold: float) -> list[Match]:
    """Duplicate, conflicting and near-duplicate rows within one file, each reported once."""
    matches: list[Match] = []
    first_row: dict[tuple, int] = {}
    first_prompt: dict[tuple, int] = {}
    near = _NearIndex(threshold)
    for i, conv in enumerate(convs):
        key, prompt = row_key(conv), prompt_key(conv)
        if key in first_row:
            matches.append(Match(i, first_row[key], "duplicate", 1.0))
            continue
        first_row[key] = i
        j = first_prompt.get(prompt) if prompt else None  # (text rows have no prompt to conflict on)
        if j is not None and reply_text(convs[j]) != reply_text(conv):
            matches.append(Match(i, j, "conflict", 1.0))
            continue
        first_prompt.setdefault(prompt, i)
        items = shingles(conv)
        mh = near.minhash(items)
        hit = near.best(items, mh)
        if hit is not None:
            matches.append(Match(i, hit[0], "near-duplicate", hit[1]))
        near.add(i, items, mh)
    return matches


def find_leakage(train: Sequence[Conversation], val: Sequence[Conversation], threshold: float) -> list[Match]:
    """Validation rows whose prompt is in the training data (leak) or which are near a training row."""
    prompts: dict[tuple, int] = {}
    near = _NearIndex(threshold)
    for i, conv in enumerate(train):
        prompts.setdefault(prompt_key(conv), i)
        items = shingles(conv)
        near.add(i, items, near.minhash(items))
    matches: list[Match] = []
    for j, conv in enumerate(val):
        prompt = prompt_key(conv)
        i = prompts.get(prompt) if prompt else None
        if i is not None:
            matches.append(Match(j, i, "leak", 1.0))
            continue
        items = shingles(conv)
        hit = near.best(items, near.minhash(items))
        if hit is not None:
            matches.append(Match(j, hit[0], "near-leak", hit[1]))
    return matches
