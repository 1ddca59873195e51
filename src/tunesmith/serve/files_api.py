"""File routes (upload, list, retrieve, content, delete), in OpenAI's shapes, over the SQLite ``Store``.

Uploads are parsed with the same reader as `tunesmith train` (``data.formats.parse_file``) and refused
with the problems listed. An upload is written durably and only then registered (see ``jobs``); the name the
client gave is kept as a label only (its last path component), never used as a path. A job's step metrics
are files too (purpose fine-tune-results, a CSV: ``job_metrics``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from tunesmith import runs
from tunesmith.serve import jobs_rft
from tunesmith.serve import responses as doc
from tunesmith.serve.job_metrics import RESULTS_PURPOSE
from tunesmith.serve.jobs import Store, new_id
from tunesmith.serve.schemas import ApiError, not_found

MAX_LIST = 100
SHOWN_PROBLEMS = 3
MEDIA_TYPES = {RESULTS_PURPOSE: "text/csv"}


def _file_object(f: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f["id"],
        "object": "file",
        "bytes": f["bytes"],
        "created_at": f["created_at"],
        "filename": f["filename"],
        "purpose": f["purpose"],  # fine-tune (an upload) or fine-tune-results (a job's step metrics)
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


def page(items: list[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    if not 1 <= limit <= MAX_LIST:
        raise ApiError(400, f"limit must be between 1 and {MAX_LIST}", param="limit")
    if after is not None:
        ids = [i["id"] for i in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}


def _problems(messages: list[str], tmp: Path, filename: str) -> str:
    shown = [m.replace(str(tmp), filename) for m in messages[:SHOWN_PROBLEMS]]
    more = f" (and {len(messages) - SHOWN_PROBLEMS} more)" if len(messages) > SHOWN_PROBLEMS else ""
    return "; ".join(shown) + more


def _safe_filename(name: str | None) -> str:
    """The client's file name as a label: its last component, printable, at most 255 characters."""
    base = PurePosixPath((name or "").replace("\\", "/")).name[-255:]
    return base if base and base.isprintable() and base not in (".", "..") else "upload.jsonl"


def _write_temp(store: Store, src: BinaryIO) -> Path:
    """Copy an upload into a temp file beside its final place, flushed to disk."""
    with tempfile.NamedTemporaryFile(dir=store.files_dir, prefix=".upload-", suffix=".jsonl", delete=False) as out:
        try:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        except BaseException:
            Path(out.name).unlink(missing_ok=True)
            raise
    return Path(out.name)


def _publish(tmp: Path, final: Path) -> int:
    size = tmp.stat().st_size
    tmp.replace(final)
    runs.fsync_dir(final.parent)  # the rename itself survives a crash before the row is written
    return size


def _validate_upload(tmp: Path, filename: str) -> tuple[int, str | None]:
    from tunesmith.data.formats import parse_file

    parsed = parse_file(tmp)
    if parsed.problems:
        rft_rows = jobs_rft.rft_rows(tmp)
        if rft_rows is not None:  # prompts for reinforcement fine-tuning: messages ending with a user message
            return rft_rows, "rft"
        message = _problems([str(p) for p in parsed.problems], tmp, filename)
        raise ApiError(400, f"invalid training file: {message}", param="file", code="invalid_file")
    return len(parsed.examples), parsed.format


def files_router(store: Store) -> APIRouter:
    r = APIRouter(prefix="/v1")

    @r.post("/files", response_model=None, responses=doc.ok(doc.FileObject), openapi_extra=doc.UPLOAD_BODY)
    async def upload(request: Request) -> dict[str, Any]:
        form = await request.form(max_files=1, max_fields=8)
        upload, purpose = form.get("file"), form.get("purpose")
        if purpose != "fine-tune":
            raise ApiError(400, "purpose must be 'fine-tune'", param="purpose")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "a 'file' part is required", param="file")
        filename = _safe_filename(upload.filename)
        file_id = new_id("file")
        with store.uploading():
            tmp = await run_in_threadpool(_write_temp, store, upload.file)
            try:
                rows, fmt = await run_in_threadpool(_validate_upload, tmp, filename)
                size = await run_in_threadpool(_publish, tmp, store.file_path(file_id))
            finally:
                tmp.unlink(missing_ok=True)
            store.add_file(file_id, filename, purpose, size, rows, fmt)
        return _file_object(store.get_file(file_id))

    @r.get("/files", response_model=None, responses=doc.ok(doc.FileList))
    async def list_files(purpose: str | None = None, after: str | None = None, limit: int = 100) -> dict[str, Any]:
        return page([_file_object(f) for f in store.list_files(purpose)], after, limit)

    def get_file(file_id: str) -> dict[str, Any]:
        f = store.get_file(file_id)
        if f is None:
            raise not_found("file", file_id, param="file_id")
        return f

    @r.get("/files/{file_id}", response_model=None, responses=doc.ok(doc.FileObject))
    async def retrieve_file(file_id: str) -> dict[str, Any]:
        return _file_object(get_file(file_id))

    content = {"content": {"application/jsonl": {"schema": {"type": "string"}}}}

    @r.get("/files/{file_id}/content", response_class=FileResponse, responses={200: content, **doc.ERRORS})
    async def file_content(file_id: str) -> FileResponse:
        f = get_file(file_id)
        return FileResponse(store.file_path(file_id), media_type=MEDIA_TYPES.get(f["purpose"], "application/jsonl"))

    @r.delete("/files/{file_id}", response_model=None, responses=doc.ok(doc.FileDeleted))
    async def delete_file(file_id: str) -> dict[str, Any]:
        get_file(file_id)
        if store.file_in_use(file_id):
            raise ApiError(400, "the file is used by a job that has not finished", param="file_id")
        store.delete_file(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    return r
