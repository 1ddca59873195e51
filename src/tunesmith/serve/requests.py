"""What a generation request is, and what the engine sends back: the plain data shared by the HTTP layer
(``serve/app.py``) and the batching engine (``serve/batching.py``), plus the stop-string hold-back rule that
decides how much generated text may be streamed yet."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

MIN_TEMPERATURE = 1e-4  # below this, sampling is greedy (the API allows any temperature in [0, 2])


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class Event:
    """What the engine tells a request: new text, and at the end why it stopped and the token counts."""

    index: int
    text: str = ""
    finish_reason: str | None = None  # "stop" | "length" | "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(eq=False)
class GenRequest:
    prompt_ids: list[int]
    sampling: Sampling
    emit: Callable[[Event], None]  # must be thread-safe; called from the engine thread
    adapter: str | None = None  # internal adapter name, None for the base model
    index: int = 0  # choice index, echoed in every event
    cancelled: bool = False  # set by the server when the client goes away


def holdback(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters might still become a stop string (or a multi-byte character)."""
    if text.endswith("\ufffd"):
        return len(text) - len(text.rstrip("\ufffd"))
    longest = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:k]):
                longest = k
                break
    return longest
