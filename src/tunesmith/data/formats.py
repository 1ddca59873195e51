"""Dataset files -> ``Conversation`` objects.

``data/sources.py`` reads the file (JSONL, JSON, CSV/TSV, Parquet, Arrow, a ``datasets`` folder) into rows;
the row format is detected per file from its first valid row:
  * chat (OpenAI fine-tuning): ``{"messages": [{"role", "content", "weight"?, ...}, ...], "tools"?: [...]}``,
    with tool calls, tool results and every other field OpenAI accepts (``data/openai_chat.py``)
  * prompt/completion:         ``{"prompt": ..., "completion": ...}``
  * alpaca:                    ``{"instruction": ..., "input"?: ..., "output": ..., "system"?: ..., "history"?: ...}``
  * preference pairs (``data/preference.py``); ShareGPT, TRL's conversational prompt/completion and
    text-only rows (``data/shapes.py``)

Every malformed row becomes a ``Problem`` naming the file, the line and what is wrong. ``parse_file``
returns all of them (the dataset doctor shows them all); ``read_examples`` raises one ``DataError``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.data import preference, shapes
from tunesmith.data.openai_chat import ROW_KEYS as _CHAT_KEYS
from tunesmith.data.openai_chat import chat_row
from tunesmith.data.rows import Conversation, Message, ToolCall  # noqa: F401 (re-exported: the row types)
from tunesmith.data.rows import RowError as _RowError
from tunesmith.data.rows import check_unicode as _check_unicode
from tunesmith.data.rows import did_you_mean as _did_you_mean
from tunesmith.errors import DataError

FORMATS = ("chat", "prompt_completion", "alpaca", "preference", "sharegpt", "text")
_ROW_KEYS = {
    "chat": _CHAT_KEYS,
    "prompt_completion": {"prompt", "completion"},
    "alpaca": {"instruction", "input", "output", "system", "history"},
    "preference": preference.OPENAI_KEYS | preference.TRL_KEYS,
    "sharegpt": shapes.SHAREGPT_KEYS,
    "text": {"text"},
}
_ALL_KEYS = set().union(*_ROW_KEYS.values())


@dataclass(frozen=True)
class Problem:
    file: str
    line: int  # 1-based; 0 for the whole file
    message: str
    code: str = "format"  # a stable name for the kind of problem (`tunesmith check --format json`)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


@dataclass
class ParsedFile:
    path: Path
    format: str | None
    examples: list[Conversation]
    problems: list[Problem]
    sha256: str
    metadata_keys: list[str] = field(default_factory=list)  # row keys kept as metadata (id, fact...), for one warning


REPLY_KEYS = ("completion", "output")


def detect_format(row: dict[str, Any]) -> str | None:
    if preference.is_preference(row):
        return "preference"
    if shapes.is_sharegpt(row):
        return "sharegpt"
    if "messages" in row:
        return "chat"
    if "prompt" in row or "completion" in row:
        return "prompt_completion"
    if "instruction" in row or "output" in row:
        return "alpaca"
    if "text" in row:
        return "text"
    return None


def _text(row: dict[str, Any], key: str, *, allow_empty: bool = False) -> str:
    value = row.get(key)
    if value is None:
        raise _RowError(f"'{key}' is missing", "missing-content")
    if not isinstance(value, str):
        raise _RowError(f"'{key}' must be a string, got {type(value).__name__}", "bad-type")
    if not allow_empty and not value.strip():
        raise _RowError(f"'{key}' is empty", "empty-reply" if key in REPLY_KEYS else "empty-content")
    _check_unicode(value, f"'{key}'")
    return value


def _reply(row: dict[str, Any], key: str, require_reply: bool) -> list[Message]:
    """The reference reply; for evaluation data a missing or empty one means "no reference"."""
    if not require_reply and (row.get(key) is None or (isinstance(row[key], str) and not row[key].strip())):
        return []
    return [Message("assistant", _text(row, key))]


def row_to_messages(row: Any, fmt: str, *, require_reply: bool = True) -> list[Message]:
    return parse_row(row, fmt, require_reply=require_reply).messages


def parse_row(row: Any, fmt: str, *, require_reply: bool = True) -> Conversation:
    """One row -> a Conversation (without its source), or a _RowError naming the field."""
    if not isinstance(row, dict):
        raise _RowError(f"row is a JSON {type(row).__name__}, not an object", "not-object")
    row_fmt = detect_format(row)
    if row_fmt is None:
        keys = {k for k in row if isinstance(k, str)}
        message = f"row has none of the keys of a known format (keys: {sorted(row)[:6]}){_typos(keys)}"
        raise _RowError(message, "unknown-format")
    if row_fmt != fmt:
        raise _RowError(f"row is in {row_fmt} format but the file is in {fmt} format", "format-mismatch")
    extra = _metadata_keys(row, fmt)
    conv = _parse_shape(row, fmt, require_reply)
    conv.fields = {k: row[k] for k in extra}
    return conv


def _typos(keys: set[str]) -> str:
    """ " (did you mean 'messages' for 'mesages'?)" for the keys that look like typos of known keys, or ""."""
    pairs = [(k, close) for k in sorted(keys) if (close := _did_you_mean(k, _ALL_KEYS))]
    if not pairs:
        return ""
    return " (did you mean " + ", ".join(f"'{c}' for '{k}'" for k, c in pairs) + "?)"


def _metadata_keys(row: dict[str, Any], fmt: str) -> list[str]:
    """The row's keys that its format does not read: metadata (id, source, tags, fact...), kept with the row.

    A key of another format (``system`` on a prompt/completion row) would be silently ignored, and a key one
    letter away from a known one (``mesages``) is a typo: both stay errors."""
    unknown = set(row) - _ROW_KEYS[fmt]
    foreign = unknown & _ALL_KEYS
    if foreign:
        raise _RowError(f"unknown key(s) {sorted(foreign)} for {fmt} format", "unknown-key")
    typos = _typos(unknown)
    if typos:
        raise _RowError(f"unknown key(s) {sorted(unknown)} for {fmt} format{typos}", "unknown-key")
    return sorted(unknown)


def _parse_shape(row: dict[str, Any], fmt: str, require_reply: bool) -> Conversation:
    if fmt == "preference":
        return preference.preference_row(row)
    if fmt == "chat":
        messages, tools, parallel = chat_row(row, require_reply=require_reply)
        return Conversation(messages, tools=tools, parallel_tool_calls=parallel)
    if fmt == "sharegpt":
        return shapes.sharegpt_row(row, require_reply=require_reply)
    if fmt == "text":
        return shapes.text_row(row)
    if fmt == "prompt_completion" and shapes.is_conversational(row):
        return shapes.conversational_row(row, require_reply=require_reply)
    if fmt == "prompt_completion":
        return Conversation([Message("user", _text(row, "prompt")), *_reply(row, "completion", require_reply)])
    instruction = _text(row, "instruction")
    extra = _text(row, "input", allow_empty=True) if "input" in row else ""
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages = [*shapes.alpaca_history(row), Message("user", user), *_reply(row, "output", require_reply)]
    if "system" in row:
        messages.insert(0, Message("system", _text(row, "system")))
    return Conversation(messages)


def parse_file(path: Path | str, *, require_reply: bool = True, columns: dict[str, str] | None = None) -> ParsedFile:
    """Read a dataset file or folder (``data/sources.py`` lists the kinds); every bad row becomes a Problem,
    never an exception. For Parquet, Arrow and ``datasets`` folders a Problem's line is the row number.

    ``require_reply=False`` is for evaluation data, where a row may stop before the assistant's reply.
    ``columns`` renames a file's columns to row keys (``{"prompt": "question"}``)."""
    from tunesmith.data import sources

    path = Path(path)
    name = str(path)
    source = sources.open_source(path, columns)
    if source.problem:
        code, message = source.problem
        return ParsedFile(path, None, [], [Problem(name, 0, message, code)], source.digest)
    fmt: str | None = None
    examples: list[Conversation] = []
    problems: list[Problem] = []
    for lineno, row in source.rows:
        if isinstance(row, sources.BadRow):
            problems.append(Problem(name, lineno, row.message, row.code))
            continue
        if fmt is None and isinstance(row, dict):
            fmt = detect_format(row)
        try:
            conv = parse_row(row, fmt or "chat", require_reply=require_reply)
        except _RowError as e:
            problems.append(Problem(name, lineno, str(e), e.code))
            continue
        conv.source, conv.meta = f"{name}:{lineno}", {"line": lineno}
        examples.append(conv)
    if not examples and not problems:
        problems.append(Problem(name, 0, "no examples in the file", "no-examples"))
    extra = sorted({k for c in examples for k in c.fields})
    return ParsedFile(path, fmt, examples, _one_mixing_problem(name, fmt, problems), source.digest, extra)


def metadata_warning(parsed: ParsedFile) -> str | None:
    """One line for a training file whose rows carry metadata keys: kept, not trained on."""
    if not parsed.metadata_keys:
        return None
    return (
        f"{parsed.path}: rows carry key(s) {parsed.metadata_keys} that training does not read; kept as metadata "
        "(eval and bakeoff show them; a grader receives them)"
    )


def _one_mixing_problem(name: str, fmt: str | None, problems: list[Problem]) -> list[Problem]:
    """A file that mixes supervised rows and preference pairs is one error, not one per row."""
    mixed = [p for p in problems if p.code == "format-mismatch" and "preference" in p.message]
    if not mixed:
        return problems
    first = "preference pairs" if fmt == "preference" else "supervised rows"
    message = (
        f"the file mixes supervised rows and preference pairs ({len(mixed)} rows are not {first} like line 1's, "
        f"the first at line {mixed[0].line}): put the pairs in a file of their own (SFT first, then DPO on the pairs)"
    )
    rest = [p for p in problems if p not in mixed]
    return [*rest, Problem(name, mixed[0].line, message, "mixed-objectives")]


def read_examples(path: Path | str, *, require_reply: bool = True, columns: dict[str, str] | None = None) -> ParsedFile:
    """Parse a dataset and raise one clear DataError if anything in it is malformed."""
    return require_clean(parse_file(path, require_reply=require_reply, columns=columns))


def require_clean(parsed: ParsedFile) -> ParsedFile:
    """``parsed`` itself, or one clear DataError for its first problem."""
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
