"""Parquet and Arrow files and ``datasets`` folders: rows numbered from 1, nulls absent at every depth.

pyarrow and datasets are imported only when a file needs them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunesmith.data.readers import KINDS, BadRow, Source, missing_columns, rename
from tunesmith.errors import DataError


def _drop_nulls(value: Any) -> Any:
    """Nulls out of a table row, at every depth: Arrow gives a struct every field any row has."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def table_rows(data: bytes, kind: str, name: str, columns: dict[str, str] | None) -> Iterator[tuple[int, Any]]:
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
    missing = missing_columns(list(table.column_names), columns)
    if missing:
        yield 0, BadRow(*missing)
        return
    n = 0
    for batch in table.to_batches(max_chunksize=1024):
        for row in batch.to_pylist():
            n += 1
            yield n, rename(_drop_nulls(row), columns) if columns else _drop_nulls(row)


def datasets_folder(path: Path, columns: dict[str, str] | None) -> Source:
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
