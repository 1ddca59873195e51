"""The prompts the prompting methods of a bakeoff send: training pairs for few-shot, and per-row
retrieval-augmented prompts (the K nearest document chunks as the source of facts, the K nearest training
examples as marked style examples, or as earlier turns when there are no documents)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tunesmith.data.context import last_user, with_context
from tunesmith.data.formats import Conversation
from tunesmith.eval.rows import EvalRow


def pairs_of(examples: list[Conversation]) -> list[list[dict[str, str]]]:
    """(user, assistant) message pairs from the training data: what few-shot and retrieval show."""
    return [c.as_dicts()[-2:] for c in examples if len(c.messages) >= 2 and c.messages[-2].role == "user"]


@dataclass
class RagPrompts:
    prompts: list[list[dict[str, str]]]
    seconds_per_request: float  # retrieval only, measured
    index_s: float
    retriever: str
    sources: list[list[str]]  # what each row was shown


def rag_prompts(
    rows: list[EvalRow],
    pairs: list[list[dict[str, str]]],
    chunks: list[Any],
    instructions: str,
    k: int,
    kind: str,
    examples_as: str = "style",
) -> RagPrompts:
    """Each row's own prompt: the K training examples nearest to its input and, with --docs, the K nearest
    document chunks, in ``data/context.py``'s format. With documents the examples are marked as style
    examples (``examples_as="style"``), left out (``"none"``) or shown as earlier turns (``"turns"``);
    without documents they are earlier turns."""
    from tunesmith.decide.retrieval import make_retriever

    if not chunks:
        examples_as = "turns"
    t0 = time.perf_counter()
    use_examples = bool(pairs) and examples_as != "none"
    examples = make_retriever(kind, [p[0]["content"] for p in pairs]) if use_examples else None
    docs = make_retriever(kind, [c.text for c in chunks]) if chunks else None
    index_s = time.perf_counter() - t0
    queries = [last_user(r.prompt) for r in rows]
    t0 = time.perf_counter()
    near = examples.search(queries, k) if examples else [[] for _ in rows]
    near_docs = docs.search(queries, k) if docs else [[] for _ in rows]
    per_request = (time.perf_counter() - t0) / max(1, len(rows))
    prompts, sources = [], []
    for row, ex, dc in zip(rows, near, near_docs, strict=True):
        # Nearest last: the closest example sits right before the question.
        shown = [(pairs[i][0]["content"], pairs[i][1]["content"]) for i in reversed(ex)]
        texts = [chunks[i].text for i in dc]
        prompts.append(
            with_context(row.prompt, instructions=instructions, chunks=texts, examples=shown, examples_as=examples_as)
        )
        sources.append([f"example {i}" for i in ex] + [chunks[i].source for i in dc])
    name = examples.name if examples else docs.name if docs else kind
    return RagPrompts(prompts, per_request, index_s, name, sources)
