"""Leave parts of a reply untrained: character spans of the last reply's text -> its tokens' labels ignored.

Used for training rows whose reply states a fact the docs now contradict (``--stale-rows mask``): the row
trains with its doc context and its voice, which question takes which fact, but not the stale value, so
the model neither learns the old fact nor learns to overrule the docs."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tunesmith.data.rows import IGNORE

_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def claim_spans(text: str, claims: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans of ``text`` from each claim (as eval.facts normalises it: "2 year" for "2-year") to
    the end of its sentence: what follows a stale value in its sentence is usually about it too ("1.7
    litres, enough for about seven cups")."""
    spans = []
    for claim in claims:
        words = [re.escape(w) for w in claim.split()]
        if not words:
            continue
        m = re.search(r"[\s\-]*".join(words), text, flags=re.IGNORECASE)
        if m is None:
            continue
        end = _SENTENCE_END.search(text, m.end())
        spans.append((m.start(), end.end() if end else len(text)))
    return spans


def unlabel_spans(
    tokenizer: Any, ids: list[int], labels: list[int], content: str, spans: Sequence[tuple[int, int]]
) -> list[int]:
    """``labels`` with the tokens of the last trained reply that overlap ``spans`` (offsets into
    ``content``, the reply's text) set to IGNORE. Token offsets come from decoding growing prefixes of the
    reply, so they hold for any tokenizer; a reply the decoding does not contain is left as it was."""
    trained = [i for i, x in enumerate(labels) if x != IGNORE]
    if not spans or not trained:
        return labels
    start = trained[-1]
    while start - 1 >= 0 and labels[start - 1] != IGNORE:  # back to the first token of the last reply
        start -= 1
    end = trained[-1] + 1
    text = tokenizer.decode(ids[start:end])
    offset = text.find(content[: min(len(content), 24)])
    if offset < 0:
        return labels
    out = list(labels)
    before = 0
    for i in range(start, end):
        after = len(tokenizer.decode(ids[start : i + 1]))
        lo, hi = before - offset, after - offset
        if any(lo < s_end and hi > s_start for s_start, s_end in spans):
            out[i] = IGNORE
        before = after
    return out
