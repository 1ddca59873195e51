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

pyarrow and datasets are imported only when a file needs them.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import itertools
import json
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import DataError

KINDS = "JSONL, JSON, CSV/TSV, Parquet, Arrow or a `datasets` folder (any file may be gzipped)"
# Every key some row format reads: the targets --columns may name (a typo there is an error).
ROW_KEYS = (
    *("messages", "conversations", "tools", "functions", "parallel_tool_calls", "system", "prompt", "completion"),
    *("instruction", "input", "output", "history", "text", "chosen", "rejected", "preferred_output"),
    "non_preferred_output",
)
# One example this large cannot fit any context we could train on (~2M tokens), and reading it through a
# tokenizer would take minutes: the line is reported instead of parsed.
MAX_LINE_BYTES = 8 << 20
_TABLES = {".parquet": "parquet", ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow"}
_TEXT = {".json": "json", ".csv": "csv", ".tsv": "tsv"}


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
        return _datasets_folder(path, columns)
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
    kind = _TABLES.get(suffix) or _sniff_table(data)
    if kind:
        return Source(kind, digest, _table_rows(data, kind, name, columns))
    unsupported = _unsupported(data, suffix)
    if unsupported:
        return Source("unsupported", digest, [], ("unsupported-file", unsupported))
    kind = _TEXT.get(suffix, "jsonl")
    problem = file_level_problem(data, kind)
    if problem:
        return Source(kind, digest, [], problem)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if kind == "jsonl":
        return Source(kind, digest, _renamed(jsonl_rows(data), columns))
    if kind == "json":
        return Source(kind, digest, _renamed(_json_array_rows(data), columns))
    return _csv_source(data, kind, digest, columns)


# -- what a file is, from its first bytes ----------------------------------------------------------------
def _sniff_table(data: bytes) -> str | None:
    if data[:4] == b"PAR1":
        return "parquet"
    if data[:6] == b"ARROW1":
        return "arrow"
    return None


_MAGIC = [
    (b"%PDF", "a PDF document"),
    (b"\xd0\xcf\x11\xe0", "an old Microsoft Office file (.xls / .doc)"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"BZh", "a bzip2 archive; decompress it first"),
    (b"\xfd7zXZ\x00", "an xz archive; decompress it first"),
    (b"7z\xbc\xaf", "a 7-Zip archive; extract it first"),
    (b"Rar!", "a RAR archive; extract it first"),
    (b"GGUF", "a GGUF model file, not data"),
    (b"\x93NUMPY", "a NumPy array file"),
]


def _unsupported(data: bytes, suffix: str) -> str | None:
    """What a file of a kind tunesmith does not read looks like, or None for text (and unknown bytes)."""
    what = next((label for magic, label in _MAGIC if data.startswith(magic)), None)
    if what is None and data[:4] == b"PK\x03\x04":
        what = _zip_kind(data)
    if what is None and data.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        what = "an HTML page (a download link that returned a web page?)"
    if what is None and data[:4] == b"\xff\xff\xff\xff" and suffix not in _TEXT:
        what = "Arrow stream data without an .arrow name; name it .arrow"
    if what is None:
        return None
    return f"the file is {what}; tunesmith reads {KINDS}"


def _zip_kind(data: bytes) -> str:
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except zipfile.BadZipFile:
        return "a damaged zip archive"
    if any(n.startswith("xl/") for n in names):
        return "an Excel workbook (.xlsx); save the sheet as CSV"
    if any(n.startswith("word/") for n in names):
        return "a Word document (.docx)"
    if any(n.startswith("ppt/") for n in names):
        return "a PowerPoint file (.pptx)"
    return f"a zip archive of {len(names)} file(s); extract it first"


def _is_json(text: bytes, kind: type) -> bool:
    try:
        return isinstance(json.loads(text.decode("utf-8-sig")), kind)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False


def file_level_problem(data: bytes, kind: str = "jsonl") -> tuple[str, str] | None:
    """(code, message) for mistakes of the whole text file, reported once rather than once per line."""
    if not data.strip():
        return "empty-file", "the file is empty"
    sample = data[:65536]
    # UTF-16 puts a NUL beside every ASCII character; a BOM says so outright.
    zeros = max(sample[0::2].count(0), sample[1::2].count(0))
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(sample) >= 4 and zeros >= len(sample) // 4):
        return "utf16", "the file is UTF-16; save it as UTF-8"
    if b"\x00" in sample or sample.decode("utf-8", errors="replace").count("\ufffd") > len(sample) // 4:
        return "binary", f"not valid UTF-8: the file looks like binary data; tunesmith reads {KINDS}"
    if kind != "jsonl":
        return None
    lines = [ln.strip() for ln in itertools.islice((ln for ln in data.split(b"\n") if ln.strip()), 20)]
    head = lines[0].lstrip(b"\xef\xbb\xbf")[:1]
    if head == b"[" and _is_json(data, list):
        return "json-array", "the file is one JSON array; name it .json to read it so, or write one object per line"
    if head == b"{" and not _is_json(lines[0], dict) and _is_json(data, dict):
        return "json-object", "the file is one JSON object spread over several lines; write one object per line"
    looks_tabular = head not in (b"{", b"[", b'"') and any(c in lines[0] for c in (b",", b"\t", b";"))
    if looks_tabular and not any(_is_json(ln, dict) for ln in lines):
        return "csv", "not valid JSON: the file looks like CSV or TSV; name it .csv or .tsv to read it as a table"
    return None


# -- JSONL and JSON ----------------------------------------------------------------------------------------
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


def _json_array_rows(data: bytes) -> Iterator[tuple[int, Any]]:
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


def _renamed(rows: Iterable[tuple[int, Any]], columns: dict[str, str] | None) -> Iterator[tuple[int, Any]]:
    for n, row in rows:
        if columns and isinstance(row, dict):
            row = _rename(row, columns)
        yield n, row


def _rename(row: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """The columns named in ``columns`` under their row keys; every other column as it was."""
    sources = set(columns.values())
    out = {k: v for k, v in row.items() if k not in sources}
    out.update({key: row[col] for key, col in columns.items() if col in row})
    return out


# -- CSV / TSV ---------------------------------------------------------------------------------------------
def _csv_source(data: bytes, kind: str, digest: str, columns: dict[str, str] | None) -> Source:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        return Source(kind, digest, [], ("invalid-utf8", f"line {line}: not valid UTF-8 (byte 0x{data[e.start]:02x})"))
    delimiter = "\t" if kind == "tsv" else _delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [h.strip() for h in next(reader, [])]
    missing = _missing_columns(header, columns)
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

    return Source(kind, digest, _renamed(rows(), columns))


def _delimiter(text: str) -> str:
    """A .csv file's delimiter: whichever of , ; and tab splits the header line into the most columns."""
    first = text.split("\n", 1)[0]
    return max((",", ";", "\t"), key=first.count)


def _missing_columns(have: list[str], columns: dict[str, str] | None) -> tuple[str, str] | None:
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


# -- Parquet, Arrow, datasets folders ---------------------------------------------------------------------
def _drop_nulls(value: Any) -> Any:
    """Nulls out of a table row, at every depth: Arrow gives a struct every field any row has."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _table_rows(data: bytes, kind: str, name: str, columns: dict[str, str] | None) -> Iterator[tuple[int, Any]]:
    """Rows of a Parquet or Arrow file, numbered from 1. A file pyarrow cannot read is one problem at row 0."""
    import pyarrow as pa

    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(pa.BufferReader(data))
        else:
            table = _read_arrow(data)
    except (pa.ArrowException, OSError, ValueError) as e:
        what = "Parquet" if kind == "parquet" else "Arrow (IPC file or stream)"
        yield 0, BadRow("bad-table", f"not a readable {what} file ({str(e).splitlines()[0]})")
        return
    yield from _rows_of_table(table, columns)


def _read_arrow(data: bytes) -> Any:
    """Arrow's IPC file format (``ARROW1`` magic) or its stream format, which ``datasets`` writes."""
    import pyarrow as pa

    if data[:6] == b"ARROW1":
        return pa.ipc.open_file(pa.BufferReader(data)).read_all()
    return pa.ipc.open_stream(pa.BufferReader(data)).read_all()


def _rows_of_table(table: Any, columns: dict[str, str] | None) -> Iterator[tuple[int, Any]]:
    missing = _missing_columns(list(table.column_names), columns)
    if missing:
        yield 0, BadRow(*missing)
        return
    n = 0
    for batch in table.to_batches(max_chunksize=1024):
        for row in batch.to_pylist():
            n += 1
            yield n, _rename(_drop_nulls(row), columns) if columns else _drop_nulls(row)


def _datasets_folder(path: Path, columns: dict[str, str] | None) -> Source:
    """A folder written by ``Dataset.save_to_disk`` (or a DatasetDict's): read with ``datasets`` itself."""
    name = str(path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(path).as_posix().encode() + b"\0" + f.read_bytes())
    markers = {"dataset_info.json", "state.json", "dataset_dict.json"}
    if not markers & {f.name for f in files}:
        msg = f"is a folder, not a file nor a `datasets` folder (no dataset_dict.json or state.json); reads {KINDS}"
        raise DataError(f"{name}: {msg}")
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise DataError(f"{name}: cannot read the `datasets` folder ({str(e).splitlines()[0]})") from None
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds)
        if "train" not in ds:
            raise DataError(
                f"{name}: a DatasetDict without a 'train' split (splits: {', '.join(splits)}); "
                f"pass one split's folder, e.g. {path / splits[0]}"
            )
        from tunesmith import console

        console.note(f"{name} is a DatasetDict ({', '.join(splits)}): reading its 'train' split")
        ds = ds["train"]
    return Source("datasets", digest.hexdigest(), _rows_of_table(ds.with_format("arrow")[:], columns))


def columns_flag(text: str | None) -> dict[str, str] | None:
    """``--columns`` for the commands that take it outside a run config (eval, bakeoff): one UserError line."""
    from tunesmith.errors import UserError

    try:
        return parse_columns(text)
    except ValueError as e:
        raise UserError(str(e)) from None
