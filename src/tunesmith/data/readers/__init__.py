"""The readers behind ``data.sources``, one module per container format, and what they share.

    sniff.py       what a file is from its first bytes; mistakes of a whole text file
    json_rows.py   JSONL (numbered by line) and one JSON array (numbered by the line each object starts on)
    delimited.py   CSV / TSV with a header row
    tables.py      Parquet, Arrow and ``datasets`` folders (pyarrow and datasets imported only when needed)

Every reader yields ``(number, row)`` pairs, where a row that could not even be read is a ``BadRow``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

KINDS = "JSONL, JSON, CSV/TSV, Parquet, Arrow or a `datasets` folder (any file may be gzipped)"
# Every key some row format reads: the targets --columns may name (a typo there is an error).
ROW_KEYS = (
    *("messages", "conversations", "tools", "functions", "parallel_tool_calls", "system", "prompt", "completion"),
    *("instruction", "input", "output", "history", "text", "chosen", "rejected", "preferred_output"),
    "non_preferred_output",
)
TEXT_SUFFIXES = {".json": "json", ".csv": "csv", ".tsv": "tsv"}


@dataclass(frozen=True)
class BadRow:
    """A row that could not even be read (invalid JSON, not UTF-8, too long): its code and message."""

    code: str
    message: str


@dataclass
class Source:
    kind: str  # jsonl | json | csv | tsv | parquet | arrow | datasets
    digest: str  # sha256 of the bytes read (a folder: of its files)
    rows: Iterable[tuple[int, Any]]  # (line or row number, the row, or a BadRow)
    problem: tuple[str, str] | None = None  # (code, message) of a mistake of the whole file


def renamed(rows: Iterable[tuple[int, Any]], columns: dict[str, str] | None) -> Iterator[tuple[int, Any]]:
    for n, row in rows:
        if columns and isinstance(row, dict):
            row = rename(row, columns)
        yield n, row


def rename(row: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """The columns named in ``columns`` under their row keys; every other column as it was."""
    sources = set(columns.values())
    out = {k: v for k, v in row.items() if k not in sources}
    out.update({key: row[col] for key, col in columns.items() if col in row})
    return out


def missing_columns(have: list[str], columns: dict[str, str] | None) -> tuple[str, str] | None:
    """A table whose columns cannot make rows: a --columns name it lacks, or no column a row format reads."""
    shown = ", ".join(have[:12]) + (", ..." if len(have) > 12 else "")
    missing = [c for c in (columns or {}).values() if c not in have]
    if missing:
        return (
            "missing-column",
            f"--columns names the column {missing[0]!r}, which the file lacks (columns: {shown})",
        )
    keys = set(have) | set(columns or {})
    if not keys & set(ROW_KEYS):
        example = f"prompt={have[0]},completion={have[-1]}" if len(have) > 1 else f"text={have[0]}" if have else ""
        tail = f", e.g. --columns {example}" if example else ""
        return "missing-column", f"no column is one a row format reads (columns: {shown}); name them{tail}"
    return None
