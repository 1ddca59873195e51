"""JSONL (one row per line, numbered by line) and a .json file holding one array of rows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from tunesmith.data.readers import BadRow

# One example this large cannot fit any context we could train on (~2M tokens), and reading it through a
# tokenizer would take minutes: the line is reported instead of parsed.
MAX_LINE_BYTES = 8 << 20


def _json_row(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        return BadRow("invalid-json", f"not valid JSON ({e.msg} at column {e.colno})")
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        return BadRow("invalid-json", f"not valid JSON ({str(e).splitlines()[0]})")
    except RecursionError:
        return BadRow("invalid-json", "JSON nested too deeply")


def jsonl_rows(data: bytes) -> Iterator[tuple[int, Any]]:
    """One row per non-blank line; blank lines still count, so line numbers match the editor's."""
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        if len(raw) > MAX_LINE_BYTES:
            size = f"{len(raw) / 2**20:.1f} MB, more than one example can hold (limit {MAX_LINE_BYTES >> 20} MB)"
            yield lineno, BadRow("line-too-long", f"the line is {size}")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield lineno, BadRow("invalid-utf8", f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})")
            continue
        yield lineno, _json_row(text)


def json_array_rows(data: bytes) -> Iterator[tuple[int, Any]]:
    """The objects of one JSON array, each numbered by the line it starts on (read one at a time, so a broken
    object is reported at its line and the objects before it still count)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        yield line, BadRow("invalid-utf8", f"not valid UTF-8 (byte 0x{data[e.start]:02x})")
        return
    decoder, ws = json.JSONDecoder(), " \t\r\n"
    pos = len(text) - len(text.lstrip(ws))
    if not text.startswith("[", pos):
        yield 1, BadRow("json-not-array", "a .json file must hold one array of rows ([{...}, {...}]); JSONL is .jsonl")
        return
    pos += 1
    while True:
        while pos < len(text) and text[pos] in ws + ",":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return
        line = text.count("\n", 0, pos) + 1
        try:
            row, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            yield line, BadRow("invalid-json", f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})")
            return
        except (ValueError, RecursionError) as e:
            yield line, BadRow("invalid-json", f"not valid JSON ({str(e).splitlines()[0] or type(e).__name__})")
            return
        yield line, row
