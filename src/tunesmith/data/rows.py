"""The parsed form of a dataset row, shared by every reader and by the renderer.

A ``Conversation`` is a list of ``Message``s plus, for tool-calling rows, the function definitions
(OpenAI's ``tools``). Plain chats carry no tool fields at all, so they render exactly as before.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

IGNORE = -100  # the label of a token that is not trained (PyTorch's cross-entropy ignore_index)


class RowError(Exception):
    """One malformed row: the message names the field, the code is stable (`tunesmith check --format json`)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def did_you_mean(key: str, known: Iterable[str]) -> str | None:
    """The known key ``key`` is most likely a typo of (``mesages`` -> ``messages``), or None."""
    # 0.85 catches a dropped, doubled or swapped letter, and leaves metadata names (id, tags, fact) alone.
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.85)
    return close[0] if close else None


def check_unicode(value: str, where: str) -> None:
    # json.loads accepts "\ud800" escapes, but a lone surrogate is not text: tokenizers raise on it.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        message = f"{where} holds a lone surrogate (\\ud800-\\udfff), not valid Unicode text"
        raise RowError(message, "invalid-unicode") from None


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # the JSON text as the data holds it (already checked to parse to an object)

    @property
    def args(self) -> dict[str, Any]:
        return json.loads(self.arguments)

    def as_dict(self) -> dict[str, Any]:
        # Chat templates take the arguments as a mapping (Qwen's and Llama's write them with `tojson`).
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.args}}


@dataclass(frozen=True)
class Message:
    role: str  # system | user | assistant | tool
    content: str  # "" for an assistant turn that only calls tools
    weight: int = 1  # OpenAI's per-message weight: 0 excludes an assistant turn from the loss
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None  # on a tool message: the call it answers
    name: str | None = None  # OpenAI's participant name; on a tool message, the function's name

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.as_dict() for c in self.tool_calls]
        if self.role == "tool":
            out["tool_call_id"] = self.tool_call_id
            if self.name:
                out["name"] = self.name
        return out

    @property
    def text(self) -> str:
        """Everything the message says, tool calls included (for duplicate and special-token checks)."""
        calls = "".join(f"\n{c.name}({c.arguments})" for c in self.tool_calls)
        return self.content + calls


@dataclass
class Conversation:
    messages: list[Message]
    source: str = ""  # "file:line", for messages that point the user at the row
    meta: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] | None = None  # OpenAI `tools`: [{"type": "function", "function": {...}}]
    parallel_tool_calls: bool | None = None
    rejected: list[Message] | None = None  # a preference pair's non-preferred reply (the last message is the other)
    text_only: bool = False  # a {"text": ...} row: one document, every token trained, no chat template
    # The row's other top-level fields (id, source, tags, fact, must_contain, references...): kept as given.
    # Training ignores them; eval and the bakeoff show them per row and score `fact` / `must_contain`.
    fields: dict[str, Any] = field(default_factory=dict)
    # Character spans of the last message's text that are not trained (data/span_mask.py): a stale fact.
    untrained: tuple[tuple[int, int], ...] = ()

    def as_dicts(self) -> list[dict[str, Any]]:
        return [m.as_dict() for m in self.messages]

    @property
    def uses_tools(self) -> bool:
        return bool(self.tools) or any(m.tool_calls or m.role == "tool" for m in self.messages)
