"""CSV and TSV files with a header row of column names; empty cells count as absent."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from tunesmith.data.readers import BadRow, Source, missing_columns, renamed


def csv_source(data: bytes, kind: str, digest: str, columns: dict[str, str] | None) -> Source:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        return Source(kind, digest, [], ("invalid-utf8", f"line {line}: not valid UTF-8 (byte 0x{data[e.start]:02x})"))
    delimiter = "\t" if kind == "tsv" else _delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [h.strip() for h in next(reader, [])]
    missing = missing_columns(header, columns)
    if missing:
        return Source(kind, digest, [], missing)
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        return Source(kind, digest, [], ("bad-header", f"the header names the column {dup!r} twice"))

    def rows() -> Iterator[tuple[int, Any]]:
        line = reader.line_num + 1
        try:
            for cells in reader:
                if any(c.strip() for c in cells):
                    if len(cells) != len(header):
                        msg = f"{len(cells)} cells where the header has {len(header)} columns"
                        yield line, BadRow("bad-row", msg)
                    else:
                        yield line, {h: c for h, c in zip(header, cells, strict=True) if c != ""}
                line = reader.line_num + 1
        except csv.Error as e:
            yield line, BadRow("bad-row", f"not valid {kind.upper()} ({e})")

    return Source(kind, digest, renamed(rows(), columns))


def _delimiter(text: str) -> str:
    """A .csv file's delimiter: whichever of , ; and tab splits the header line into the most columns."""
    first = text.split("\n", 1)[0]
    return max((",", ";", "\t"), key=first.count)
