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

from tunesmith.data.rows import Message

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


def last_user(prompt: Sequence[dict[str, Any]]) -> str:
    return next((str(m["content"]) for m in reversed(prompt) if m["role"] == "user"), "")


def prompts_with_docs(prompts: list[list[dict[str, Any]]], index: Any, k: int) -> tuple[list[list[dict]], list]:
    """Each prompt with the ``k`` chunks of ``index`` (a ``decide.retrieval.DocsIndex``) nearest to its last
    user message: the format a run trained with ``--docs`` learned. Also each prompt's chunk sources."""
    near = index.nearest([last_user(p) for p in prompts], k)
    out = [with_context(p, chunks=[c.text for c in cs]) for p, cs in zip(prompts, near, strict=True)]
    return out, [[c.source for c in cs] for cs in near]


STALE_ROW_MODES = ("mask", "plain", "drop")  # what training does with rows whose replies the docs contradict


def add_docs_context(
    convs: list[Any], index: Any, k: int, stale_rows: str = "mask", shuffle_seed: int | None = None
) -> tuple[list[Any], str]:
    """Training rows with their ``k`` nearest doc chunks in the system message, so that the adapter learns
    to take facts from the context and the voice from its weights; and the line that says what was done.

    A row whose reply states numbers, dates or names that the docs do not (a stale fact) must not teach the
    model to overrule the docs, nor put the old value into its weights. By default (``"mask"``) it trains
    with its context, its stale values and the rest of their sentences left untrained (data/span_mask.py):
    it still teaches the voice and which fact answers which question. ``"plain"`` trains it whole, without
    context; ``"drop"`` leaves it out (README, "When facts change", has what each measured). When every row
    is stale, dropping would leave nothing to train on, so they train plain.

    With ``shuffle_seed`` (training rows), each row's chunks come in a shuffled order, the same for a seed.
    Retrieval puts the chunk that answers first for most training questions, which are worded as the docs
    are; a model trained on that learns to copy the first chunk, and at inference a question worded
    differently ("guarantee" for warranty) has it second or later. Shuffled, the model learns to pick the
    chunk that answers the question."""
    import dataclasses
    import random

    from tunesmith.data.span_mask import claim_spans
    from tunesmith.eval.facts import stale_replies

    if not convs:
        return convs, ""
    stale_claims = stale_replies(convs, [c.text for c in index.chunks])
    questions = [last_user([m.as_dict() for m in c.messages[:-1]]) for c in convs]
    near = index.nearest(questions, k)
    out, stale = [], []
    for i, (conv, claims, found) in enumerate(zip(convs, stale_claims, near, strict=True)):
        if shuffle_seed is not None:
            found = list(found)
            random.Random(f"{shuffle_seed}:{i}").shuffle(found)
        last = conv.messages[-1]
        if claims:
            stale.append(conv)
        spans = claim_spans(last.content, claims) if claims and stale_rows == "mask" else []
        if conv.text_only or last.role != "assistant" or (claims and not spans):
            out.append(conv)
            continue
        prompt = [m.as_dict() for m in conv.messages[:-1]]
        system = with_context(prompt, chunks=[c.text for c in found])[0]["content"]  # (its own system message too)
        rest = [m for m in conv.messages if m.role != "system"]  # as they were: weights, tool calls
        out.append(dataclasses.replace(conv, messages=[Message("system", system), *rest], untrained=tuple(spans)))
    given = sum(a is not b for a, b in zip(out, convs, strict=True))
    line = f"context: {given} of {len(convs)} training rows get their {k} nearest chunks of --docs {index.folder}"
    if shuffle_seed is not None:
        line += " in a shuffled order (so the model learns to pick the chunk that answers, not the first one)"
    if not stale:
        return out, line
    example = stale[0].source or "a row"
    masked = sum(bool(getattr(o, "untrained", ())) for o in out)
    what = f"; {len(stale)} replies state facts the docs do not (a stale fact, e.g. {example})"
    if stale_rows == "drop" and len(stale) < len(convs):
        gone = {id(c) for c in stale}
        out = [o for o, c in zip(out, convs, strict=True) if id(c) not in gone]
        return out, line + what + ": those rows are left out (--stale-rows drop)"
    if masked:
        line += what + f": {masked} train with context but without those facts' sentences (--stale-rows mask)"
        return out, line + ("" if masked == len(stale) else f", {len(stale) - masked} without context")
    why = "--stale-rows plain" if stale_rows == "plain" else "every row is stale, so none is left out"
    return out, line + what + f": they train without context, so the model does not learn to overrule the docs ({why})"
