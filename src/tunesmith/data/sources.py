"""A dataset file or folder -> numbered rows (plain dicts), before any row is parsed.

    JSONL  .jsonl (any other name whose bytes are JSON lines, too)    numbered by line
    JSON   .json: one array of objects                                 numbered by the line each object starts on
    CSV    .csv / .tsv with a header row of column names               numbered by line (the header is line 1)
    Parquet, Arrow (.arrow / .feather, IPC file or stream format)      numbered by row (1-based)
    a HF ``datasets`` folder (``save_to_disk``; a DatasetDict reads its ``train`` split and says so)
    any file gzipped (``.jsonl.gz``, ``.csv.gz``, ...)

``columns`` (``--columns prompt=question,completion=answer``) renames a file's columns to the keys a row
format reads. Table cells that are null (and empty CSV cells) count as absent: a table has every column in
every row, where a JSON row simply leaves the key out. A file of any other kind is one problem that names
what it looks like (a PDF, an Excel workbook, an image), found from its first bytes before anything else.

The readers, one module per container format, are in ``data/readers``; pyarrow and datasets are imported only
when a file needs them.
"""

from __future__ import annotations

import gzip
import hashlib
import zipfile
from pathlib import Path

from tunesmith.data.readers import KINDS, ROW_KEYS, TEXT_SUFFIXES, BadRow, Source, renamed
from tunesmith.data.readers.delimited import csv_source
from tunesmith.data.readers.json_rows import MAX_LINE_BYTES, json_array_rows, jsonl_rows
from tunesmith.data.readers.sniff import file_level_problem, sniff_table, unsupported
from tunesmith.data.readers.tables import datasets_folder, table_rows
from tunesmith.errors import DataError

# Re-exported: the names other modules (and tests) import from here.
__all__ = [
    "KINDS",
    "MAX_LINE_BYTES",
    "ROW_KEYS",
    "BadRow",
    "Source",
    "columns_flag",
    "file_level_problem",
    "jsonl_rows",
    "open_source",
    "parse_columns",
]

_TABLES = {".parquet": "parquet", ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow"}


def parse_columns(text: str | dict[str, str] | None) -> dict[str, str] | None:
    """``"prompt=question,completion=answer"`` -> ``{"prompt": "question", "completion": "answer"}``."""
    if text is None or isinstance(text, dict):
        pairs = list((text or {}).items())
    else:
        pairs = []
        for part in (p.strip() for p in str(text).split(",") if p.strip()):
            key, eq, column = part.partition("=")
            if not eq or not key.strip() or not column.strip():
                raise ValueError(f"--columns takes KEY=COLUMN pairs (prompt=question,completion=answer), not {part!r}")
            pairs.append((key.strip(), column.strip()))
    unknown = [k for k, _ in pairs if k not in ROW_KEYS]
    if unknown:
        raise ValueError(f"--columns: {unknown[0]!r} is not a key any row format reads ({', '.join(ROW_KEYS)})")
    return dict(pairs) or None


def open_source(path: Path, columns: dict[str, str] | None = None) -> Source:
    """The rows of ``path``; raises DataError only when the path cannot be read at all."""
    name = str(path)
    if path.is_dir():
        return datasets_folder(path, columns)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{name}: file not found") from None
    except OSError as e:
        raise DataError(f"{name}: cannot read ({e.strerror})") from None
    digest = hashlib.sha256(data).hexdigest()
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zipfile.BadZipFile) as e:
            return Source("gzip", digest, [], ("bad-gzip", f"a gzip file that cannot be decompressed ({e})"))
        suffixes = suffixes[:-1] if suffixes[-1:] == [".gz"] else suffixes
    suffix = suffixes[-1] if suffixes else ""
    kind = _TABLES.get(suffix) or sniff_table(data)
    if kind:
        return Source(kind, digest, table_rows(data, kind, name, columns))
    what = unsupported(data, suffix)
    if what:
        return Source("unsupported", digest, [], ("unsupported-file", what))
    kind = TEXT_SUFFIXES.get(suffix, "jsonl")
    problem = file_level_problem(data, kind)
    if problem:
        return Source(kind, digest, [], problem)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if kind == "jsonl":
        return Source(kind, digest, renamed(jsonl_rows(data), columns))
    if kind == "json":
        return Source(kind, digest, renamed(json_array_rows(data), columns))
    return csv_source(data, kind, digest, columns)


def columns_flag(text: str | None) -> dict[str, str] | None:
    """``--columns`` for the commands that take it outside a run config (eval, bakeoff): one UserError line."""
    from tunesmith.errors import UserError

    try:
        return parse_columns(text)
    except ValueError as e:
        raise UserError(str(e)) from None
