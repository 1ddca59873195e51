"""Text-only rows (``{"text": ...}``): continued pretraining on a user's own documents.

    <bos> The whole document, tokenized as plain text ... <eos>
    |------------------- every token trained --------------------|

No chat template is applied: a document is not a conversation. BOS comes first when the tokenizer adds one
to plain text (as it would at inference on raw text), EOS closes the document so that the model learns where
documents end. A document longer than ``max_len`` is cut into ``max_len`` pieces rather than dropped, and the
training pipeline packs the pieces and the shorter documents into rows of ``max_len`` tokens, each document
attending only to itself (``train/batches.py``).
"""

from __future__ import annotations

from typing import Any


def text_ids(tokenizer: Any, text: str) -> list[int]:
    """A document's tokens (every one of them a label): BOS where the tokenizer adds one, then EOS."""
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    eos = tokenizer.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    return ids


def piece_bounds(n: int, max_len: int) -> list[tuple[int, int]]:
    """A long document as consecutive [start, end) pieces of at most ``max_len`` tokens (a last piece of one
    token would train nothing: it is left out)."""
    return [(a, min(a + max_len, n)) for a in range(0, n, max_len) if min(a + max_len, n) - a > 1]
