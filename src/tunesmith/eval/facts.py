"""Measures that see facts. chrF barely moves when one number in a sentence is wrong, and a fixed greeting
and sign-off dominate the text; these measures look at the facts alone.

fact accuracy      rows may say what a right answer must contain (``fact``, ``must_contain``: a string or a
                   list, all required) and must not contain (``must_not_contain``: none may appear); the
                   share of those rows whose reply passes. Matching is case-insensitive, with whitespace
                   collapsed and thousands separators dropped ("1,500" = "1500").
fact consistency   without such fields, against ``--docs``: the numbers, dates and names a reply states,
                   and the share of them that the documents state too. A stale number ("1.7 litres" where
                   the docs now say 2) is absent from the docs, so it counts against the reply. Claims the
                   question itself makes, or the voice's fixed greeting and sign-off, are left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

FACT_KEYS = ("fact", "must_contain", "must_not_contain")
_MONTHS = frozenset(
    {"january", "february", "march", "april", "may", "june"}
    | {"july", "august", "september", "october", "november", "december"}
)
# A number and the word after it ("1.7 litres", "2-year"): the unit is what tells "2-year warranty" from
# "2.2 litres"; a number in a list ("70, 80 and 90 degrees") stands alone.
_NUMBER = re.compile(r"(?<![\w.])(\d+(?:[.,]\d+)*)(?![\w])(?:[ -]([a-z]+))?", re.IGNORECASE)
_NOT_UNITS = frozenset(
    [
        "and",
        "or",
        "to",
        "of",
        "in",
        "on",
        "at",
        "the",
        "a",
        "an",
        "for",
        "from",
        "with",
        "by",
        "per",
        "is",
        "are",
        "was",
        "were",
        "it",
        "as",
        "than",
    ]
)
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-zA-Z0-9-]*[a-z0-9][a-zA-Z0-9-]*\b")


@dataclass(frozen=True)
class FactSpec:
    must: tuple[str, ...] = ()
    must_not: tuple[str, ...] = ()


def normalise(text: str) -> str:
    """Lower case, one space between words, no thousands separators, plain dashes and quotes."""
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text.lower())
    text = text.translate(str.maketrans({"–": "-", "—": "-", "’": "'", "‘": "'", "“": '"', "”": '"'}))
    return " ".join(text.split())


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    values = value if isinstance(value, list) else [value]
    return tuple(str(v) for v in values if str(v).strip())


def fact_spec(fields: dict[str, Any] | None) -> FactSpec | None:
    """What a row's fields say a right answer must (not) contain, or None when they say nothing."""
    if not fields or not any(k in fields for k in FACT_KEYS):
        return None
    must = _strings(fields.get("fact")) + _strings(fields.get("must_contain"))
    spec = FactSpec(must, _strings(fields.get("must_not_contain")))
    return spec if spec.must or spec.must_not else None


def _contains(text: str, needle: str) -> bool:
    # Whole words at the ends, so "2 litres" does not match inside "12 litres".
    return re.search(rf"(?<!\w){re.escape(normalise(needle))}(?!\w)", text) is not None


@dataclass
class FactCheck:
    ok: bool
    missing: list[str] = field(default_factory=list)  # required facts the reply does not state
    forbidden: list[str] = field(default_factory=list)  # stale or wrong facts the reply does state

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "missing": self.missing, "forbidden": self.forbidden}


def check_facts(reply: str, spec: FactSpec) -> FactCheck:
    text = normalise(reply)
    missing = [x for x in spec.must if not _contains(text, x)]
    forbidden = [x for x in spec.must_not if _contains(text, x)]
    return FactCheck(not missing and not forbidden, missing, forbidden)


def fact_accuracy(checks: Sequence[FactCheck | None]) -> float | None:
    scored = [c for c in checks if c is not None]
    return sum(c.ok for c in scored) / len(scored) if scored else None


# ---- consistency with the documents -------------------------------------------------------------------
def claims(text: str) -> set[str]:
    """The checkable claims of a text: numbers with their unit word, month names and capitalised names (not
    a sentence's first word), normalised."""
    found = {
        " ".join(x for x in (normalise(n), "" if unit.lower() in _NOT_UNITS else unit.lower()) if x)
        for n, unit in _NUMBER.findall(text)
    }
    words = re.findall(r"[a-z]+", text.lower())
    found |= {w for w in words if w in _MONTHS}
    found |= {n.lower() for n in _NAME.findall(text)}
    return found


class DocsFacts:
    """The claims the documents make, to check replies against."""

    def __init__(self, texts: Iterable[str]) -> None:
        joined = "\n".join(texts)
        self.claims = claims(joined)
        self.words = set(re.findall(r"[a-z0-9][a-z0-9-]*", normalise(joined)))

    def unsupported(self, reply: str, skip: set[str]) -> list[str]:
        """The claims of ``reply`` that the docs do not make (those in ``skip`` left out)."""
        return sorted(c for c in claims(reply) - skip if c not in self.claims and c not in self.words)


def skip_set(question: str, voice: Iterable[str] = ()) -> set[str]:
    """What a reply may say without the docs: the question's own claims and the voice's fixed phrases
    (style markers, e.g. a greeting that names the company)."""
    words = {w for phrase in voice for w in re.findall(r"[a-z0-9][a-z0-9-]*", phrase.lower())}
    return claims(question) | words


def consistency(replies: Sequence[str], docs: DocsFacts, skips: Sequence[set[str]]) -> tuple[float | None, list]:
    """(share of the replies' claims that the docs make, the unsupported claims of each reply).

    A reply that states nothing checkable counts for nothing either way."""
    per_row = [docs.unsupported(r, s) for r, s in zip(replies, skips, strict=True)]
    stated = sum(len(claims(r) - s) for r, s in zip(replies, skips, strict=True))
    if not stated:
        return None, per_row
    return 1.0 - sum(len(u) for u in per_row) / stated, per_row


def stale_replies(convs: Sequence[Any], docs_texts: Iterable[str]) -> list[list[str]]:
    """For each training conversation, the claims of its last reply that the docs do not make (numbers with
    their units, dates, names): a reply the docs now contradict teaches a stale fact. Its question's own
    claims and the voice's recurring openings and closings are left out; rows without a reply get []."""
    from tunesmith.eval.metrics import find_style_markers

    def reply(c: Any) -> str | None:
        last = c.messages[-1] if c.messages else None
        ok = last is not None and last.role == "assistant" and not c.text_only
        return last.content if ok else None

    replies = [reply(c) for c in convs]
    markers = find_style_markers([r for r in replies if r])
    voice = [*markers.openings, *markers.closings]
    docs = DocsFacts(docs_texts)
    out = []
    for conv, text in zip(convs, replies, strict=True):
        question = next((m.content for m in reversed(conv.messages) if m.role == "user"), "")
        out.append(docs.unsupported(text, skip_set(question, voice)) if text else [])
    return out
