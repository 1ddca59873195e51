"""The prompts the prompting methods of a bakeoff send: training pairs for few-shot, and per-row
retrieval-augmented prompts (the K nearest training examples as earlier turns, the K nearest document
chunks in the system message)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tunesmith.data.formats import Conversation
from tunesmith.eval.rows import EvalRow, prompted


def pairs_of(examples: list[Conversation]) -> list[list[dict[str, str]]]:
    """(user, assistant) message pairs from the training data: what few-shot and retrieval show."""
    return [c.as_dicts()[-2:] for c in examples if len(c.messages) >= 2 and c.messages[-2].role == "user"]


def last_user(prompt: list[dict[str, str]]) -> str:
    return next((x["content"] for x in reversed(prompt) if x["role"] == "user"), "")


@dataclass
class RagPrompts:
    prompts: list[list[dict[str, str]]]
    seconds_per_request: float  # retrieval only, measured
    index_s: float
    retriever: str
    sources: list[list[str]]  # what each row was shown


def rag_prompts(
    rows: list[EvalRow], pairs: list[list[dict[str, str]]], chunks: list[Any], instructions: str, k: int, kind: str
) -> RagPrompts:
    """Each row's own prompt: the K training examples nearest to its input as earlier turns and, with
    --docs, the K nearest document chunks in the system message."""
    from tunesmith.decide.retrieval import make_retriever

    t0 = time.perf_counter()
    examples = make_retriever(kind, [p[0]["content"] for p in pairs]) if pairs else None
    docs = make_retriever(kind, [c.text for c in chunks]) if chunks else None
    index_s = time.perf_counter() - t0
    queries = [last_user(r.prompt) for r in rows]
    t0 = time.perf_counter()
    near = examples.search(queries, k) if examples else [[] for _ in rows]
    near_docs = docs.search(queries, k) if docs else [[] for _ in rows]
    per_request = (time.perf_counter() - t0) / max(1, len(rows))
    prompts, sources = [], []
    for row, ex, dc in zip(rows, near, near_docs, strict=True):
        system = instructions
        if dc:
            context = "\n\n".join(f"[{j + 1}] {chunks[i].text}" for j, i in enumerate(dc))
            system = "\n\n".join(x for x in (instructions, f"Reference documents:\n{context}") if x)
        # Nearest last: the closest example sits right before the question.
        shots = [msg for i in reversed(ex) for msg in pairs[i]]
        prompts.append(prompted(row.prompt, system, shots))
        sources.append([f"example {i}" for i in ex] + [chunks[i].source for i in dc])
    name = examples.name if examples else docs.name if docs else kind
    return RagPrompts(prompts, per_request, index_s, name, sources)
