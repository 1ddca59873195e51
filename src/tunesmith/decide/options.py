"""What a bakeoff is asked to do: its options, kept apart from ``bakeoff.py`` (which runs it) and from
``training.py`` (which obtains its fine-tuned runs), so that both can import them without a circle."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.decide import economics as econ
from tunesmith.errors import UserError

METHODS = ("prompt", "fewshot", "rag", "lora", "full", "lora+rag")
TUNED = ("lora", "full", "lora+rag")
DEFAULT_METHODS = ("prompt", "fewshot", "rag", "lora", "full")  # + lora+rag when there are docs


@dataclass
class BakeoffOptions:
    train: Path
    test: Path
    columns: dict[str, str] | None = None  # --columns: row keys read from other columns of both files
    instructions: Path | None = None
    docs: Path | None = None
    k: int = 4  # examples (and document chunks) in front of each few-shot / RAG prompt
    methods: tuple[str, ...] = DEFAULT_METHODS
    model: str | None = None  # None: the base model of a given run, else tunesmith's default
    retriever: str = "bm25"
    rag_examples: str = "none"  # with --docs: retrieved examples left out (measured best), "style" or "turns"
    lora_run: Path | None = None
    lora_rag_run: Path | None = None  # a LoRA run for lora+rag (e.g. one trained with `train --docs`)
    # lora+rag's adapter is trained on prompts that carry the retrieved doc chunks (train --docs); False: the
    # lora method's adapter (trained without context) gets retrieval at inference only
    train_with_docs: bool = True
    full_run: Path | None = None
    config: Path | None = None  # a `tunesmith train` YAML for the runs trained here
    train_overrides: dict[str, Any] = field(default_factory=dict)  # on top of ``config`` (tests: max_steps)
    price_per_1k_input_tokens: float = econ.DEFAULT_PRICE_PER_1K_INPUT_TOKENS
    price_per_hour: float = econ.DEFAULT_PRICE_PER_HOUR
    requests_per_month: float | None = None
    max_new_tokens: int | None = None
    batch_size: int = 16
    latency_samples: int = 3
    max_memory_gb: float | None = None  # None: the memory available on this machine now
    max_train_minutes: float | None = None  # skip training estimated to take longer than this
    quality_tolerance: float = 0.02
    seed: int = 0
    trust_remote_code: bool = False  # let the model run its own Python code (--trust-remote-code)


def parse_methods(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(x.strip().lower() for x in text.split(",") if x.strip()))
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise UserError(f"--methods: unknown method {', '.join(unknown) or '(none)'}; choose from {','.join(METHODS)}")
    return names
