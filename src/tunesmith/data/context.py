"""The one format in which retrieved context reaches a model: train (``--docs``), eval, serve and the bakeoff
all build prompts here, so what was measured is what ships.

With documents, the system message makes them the source of facts, and training examples (when shown at
all) come marked as style examples whose facts may be out of date: a base model otherwise copies the stale
facts of the examples and ignores the document (issue 23's finding). Without documents, retrieved examples
are earlier turns, as few-shot examples are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DOCS_HEADER = (
    "Reference documents. They are current: take every fact (numbers, dates, names, prices, settings) from them, "
    "even where an example or your own knowledge says otherwise."
)
STYLE_HEADER = (
    "Style examples: follow their tone and format only. Their facts may be out of date; "
    "take facts from the reference documents."
)
EXAMPLE_MODES = ("style", "none", "turns")  # how retrieved training examples are shown next to documents


def docs_block(chunks: Sequence[str]) -> str:
    body = "\n\n".join(f"[{j + 1}] {text}" for j, text in enumerate(chunks))
    return f"{DOCS_HEADER}\n\n{body}"


def style_block(examples: Sequence[tuple[str, str]]) -> str:
    body = "\n\n".join(f"Question: {q}\nAnswer: {a}" for q, a in examples)
    return f"{STYLE_HEADER}\n\n{body}"


def with_context(
    prompt: list[dict[str, Any]],
    *,
    instructions: str = "",
    chunks: Sequence[str] = (),
    examples: Sequence[tuple[str, str]] = (),
    examples_as: str = "style",
) -> list[dict[str, Any]]:
    """``prompt`` with the instructions, the document chunks and the examples in front of it.

    The system message is: instructions, then the documents, then (``examples_as="style"``) the marked style
    examples; the row's own system message follows them. ``examples_as="turns"`` shows the examples as
    earlier user/assistant turns instead (nearest last), ``"none"`` leaves them out."""
    parts = [instructions] if instructions else []
    if chunks:
        parts.append(docs_block(chunks))
    if examples and examples_as == "style":
        parts.append(style_block(examples))
    rest = prompt
    if prompt and prompt[0]["role"] == "system":
        parts.append(prompt[0]["content"])
        rest = prompt[1:]
    head = [{"role": "system", "content": "\n\n".join(p for p in parts if p)}] if any(parts) else []
    turns: list[dict[str, Any]] = []
    if examples and examples_as == "turns":
        turns = [m for q, a in examples for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
    return [*head, *turns, *rest]
