"""JSONL datasets -> ``Conversation`` objects.

Three row formats, detected per file from its first valid row:
  * chat (OpenAI fine-tuning): ``{"messages": [{"role", "content", "weight"?}, ...]}``
  * prompt/completion:         ``{"prompt": ..., "completion": ...}``
  * alpaca:                    ``{"instruction": ..., "input"?: ..., "output": ..., "system"?: ...}``

Every malformed row becomes a ``Problem`` naming the file, the line and what is wrong. ``parse_file``
returns all of them (the dataset doctor shows them all); ``read_examples`` raises one ``DataError``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.errors import DataError

ROLES = ("system", "user", "assistant")
FORMATS = ("chat", "prompt_completion", "alpaca")
_MESSAGE_KEYS = {"role", "content", "weight"}
_ROW_KEYS = {
    "chat": {"messages"},
    "prompt_completion": {"prompt", "completion"},
    "alpaca": {"instruction", "input", "output", "system"},
}


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    weight: int = 1  # OpenAI's per-message weight: 0 excludes an assistant turn from the loss

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass
class Conversation:
    messages: list[Message]
    source: str = ""  # "file:line", for messages that point the user at the row
    meta: dict[str, Any] = field(default_factory=dict)

    def as_dicts(self) -> list[dict[str, str]]:
        return [m.as_dict() for m in self.messages]


@dataclass(frozen=True)
class Problem:
    file: str
    line: int  # 1-based; 0 for the whole file
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


@dataclass
class ParsedFile:
    path: Path
    format: str | None
    examples: list[Conversation]
    problems: list[Problem]
    sha256: str


class _RowError(Exception):
    pass


def detect_format(row: dict[str, Any]) -> str | None:
    if "messages" in row:
        return "chat"
    if "prompt" in row or "completion" in row:
        return "prompt_completion"
    if "instruction" in row or "output" in row:
        return "alpaca"
    return None


def _text(row: dict[str, Any], key: str, *, allow_empty: bool = False) -> str:
    value = row.get(key)
    if value is None:
        raise _RowError(f"'{key}' is missing")
    if not isinstance(value, str):
        raise _RowError(f"'{key}' must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise _RowError(f"'{key}' is empty")
    return value


def _chat_messages(row: dict[str, Any]) -> list[Message]:
    raw = row.get("messages")
    if not isinstance(raw, list):
        raise _RowError("'messages' must be a list of {role, content} objects")
    if not raw:
        raise _RowError("'messages' is empty")
    out: list[Message] = []
    for i, m in enumerate(raw, start=1):
        if not isinstance(m, dict):
            raise _RowError(f"message {i} is not an object")
        unknown = set(m) - _MESSAGE_KEYS
        if unknown:
            raise _RowError(f"message {i} has unknown key(s) {sorted(unknown)}; allowed: role, content, weight")
        role = m.get("role")
        if role not in ROLES:
            raise _RowError(f"message {i} has unknown role {role!r}; expected one of {', '.join(ROLES)}")
        content = m.get("content")
        if not isinstance(content, str):
            raise _RowError(f"message {i} ({role}) has no text content")
        if not content.strip():
            raise _RowError(f"message {i} ({role}) has empty content")
        weight = m.get("weight", 1)
        if isinstance(weight, bool) or weight not in (0, 1):
            raise _RowError(f"message {i} has weight {weight!r}; weight must be 0 or 1")
        if "weight" in m and role != "assistant":
            raise _RowError(f"message {i} ({role}) has a weight; only assistant messages take one")
        out.append(Message(role, content, int(weight)))
    _check_role_order(out)
    return out


def _check_role_order(messages: list[Message]) -> None:
    """Optional system first, then user/assistant alternating from user: what chat templates accept."""
    body = messages[1:] if messages[0].role == "system" else messages
    if any(m.role == "system" for m in body):
        raise _RowError("a system message may only come first")
    if not body or body[0].role != "user":
        raise _RowError("the conversation must start with a user message (after an optional system message)")
    for prev, cur in itertools.pairwise(body):
        if prev.role == cur.role:
            raise _RowError(f"two {cur.role} messages in a row; user and assistant must alternate")
    if not any(m.role == "assistant" for m in body):
        raise _RowError("no assistant reply to train on")
    if not any(m.role == "assistant" and m.weight for m in body):
        raise _RowError("every assistant reply has weight 0, so nothing would be trained")


def row_to_messages(row: Any, fmt: str) -> list[Message]:
    if not isinstance(row, dict):
        raise _RowError(f"row is a JSON {type(row).__name__}, not an object")
    row_fmt = detect_format(row)
    if row_fmt is None:
        raise _RowError(f"row has none of the keys of a known format (keys: {sorted(row)[:6]})")
    if row_fmt != fmt:
        raise _RowError(f"row is in {row_fmt} format but the file is in {fmt} format")
    unknown = set(row) - _ROW_KEYS[fmt]
    if unknown:
        raise _RowError(f"unknown key(s) {sorted(unknown)} for {fmt} format")
    if fmt == "chat":
        return _chat_messages(row)
    if fmt == "prompt_completion":
        return [Message("user", _text(row, "prompt")), Message("assistant", _text(row, "completion"))]
    instruction = _text(row, "instruction")
    extra = _text(row, "input", allow_empty=True) if "input" in row else ""
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages = [Message("user", user), Message("assistant", _text(row, "output"))]
    if "system" in row:
        messages.insert(0, Message("system", _text(row, "system")))
    return messages


def _file_level_problem(path: Path, data: bytes) -> str | None:
    if not data.strip():
        return "the file is empty"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "the file is UTF-16; save it as UTF-8 JSONL"
    head = data.lstrip()[:1]
    if head == b"[":
        try:
            if isinstance(json.loads(data.decode("utf-8-sig")), list):
                return "the file is one JSON array; write one JSON object per line (JSONL)"
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass
    return None


def parse_file(path: Path | str) -> ParsedFile:
    """Read a JSONL file; every bad row becomes a Problem, never an exception."""
    path = Path(path)
    name = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{name}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{name}: is a folder, not a JSONL file") from None
    except OSError as e:
        raise DataError(f"{name}: cannot read ({e.strerror})") from None
    digest = hashlib.sha256(data).hexdigest()
    problem = _file_level_problem(path, data)
    if problem:
        return ParsedFile(path, None, [], [Problem(name, 0, problem)], digest)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    fmt: str | None = None
    examples: list[Conversation] = []
    problems: list[Problem] = []
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            problems.append(
                Problem(name, lineno, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})")
            )
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            problems.append(Problem(name, lineno, f"not valid JSON ({e.msg} at column {e.colno})"))
            continue
        except RecursionError:
            problems.append(Problem(name, lineno, "JSON nested too deeply"))
            continue
        if fmt is None and isinstance(row, dict):
            fmt = detect_format(row)
        try:
            messages = row_to_messages(row, fmt or "chat")
        except _RowError as e:
            problems.append(Problem(name, lineno, str(e)))
            continue
        examples.append(Conversation(messages, source=f"{name}:{lineno}"))
    if not examples and not problems:
        problems.append(Problem(name, 0, "no examples in the file"))
    return ParsedFile(path, fmt, examples, problems, digest)


def read_examples(path: Path | str) -> ParsedFile:
    """Parse a dataset and raise one clear DataError if anything in it is malformed."""
    parsed = parse_file(path)
    if parsed.problems:
        first = parsed.problems[0]
        more = len(parsed.problems) - 1
        tail = f" (and {more} more problem{'s' if more > 1 else ''}; `tunesmith check` lists them all)" if more else ""
        raise DataError(f"{first}{tail}")
    return parsed


def split_examples(
    examples: list[Conversation], fraction: float, seed: int
) -> tuple[list[Conversation], list[Conversation]]:
    """A seeded split: the same data, fraction and seed always hold out the same rows."""
    if fraction <= 0 or len(examples) < 2:
        return list(examples), []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = min(len(examples) - 1, max(1, round(len(examples) * fraction)))
    val_idx = set(order[:n_val])
    train = [e for i, e in enumerate(examples) if i not in val_idx]
    val = [e for i, e in enumerate(examples) if i in val_idx]
    return train, val
