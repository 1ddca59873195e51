"""What a file is, from its first bytes: a table (Parquet, Arrow), a kind tunesmith does not read (named),
or text, with the mistakes of a whole text file reported once rather than once per line."""

from __future__ import annotations

import io
import itertools
import json
import zipfile

from tunesmith.data.readers import KINDS, TEXT_SUFFIXES


def sniff_table(data: bytes) -> str | None:
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


def unsupported(data: bytes, suffix: str) -> str | None:
    """What a file of a kind tunesmith does not read looks like, or None for text (and unknown bytes)."""
    what = next((label for magic, label in _MAGIC if data.startswith(magic)), None)
    if what is None and data[:4] == b"PK\x03\x04":
        what = _zip_kind(data)
    if what is None and data.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        what = "an HTML page (a download link that returned a web page?)"
    if what is None and data[:4] == b"\xff\xff\xff\xff" and suffix not in TEXT_SUFFIXES:
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
