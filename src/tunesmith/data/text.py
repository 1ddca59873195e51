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

from tunesmith.data.render import Rendered
from tunesmith.data.rows import Conversation


def render_text(tokenizer: Any, conv: Conversation) -> Rendered:
    """A text row's tokens, every one of them a label."""
    text = conv.messages[0].content
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    eos = tokenizer.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    return Rendered(ids, list(ids), source=conv.source)


def pieces(r: Rendered, max_len: int) -> list[Rendered]:
    """A long document as consecutive pieces of at most ``max_len`` tokens (a last piece of one token would
    train nothing: it is left out)."""
    out = []
    for start in range(0, len(r.input_ids), max_len):
        ids = r.input_ids[start : start + max_len]
        if len(ids) > 1:
            out.append(Rendered(ids, r.labels[start : start + max_len], r.source))
    return out
