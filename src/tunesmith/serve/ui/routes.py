"""The dashboard's routes: its page and assets, and the few JSON routes the OpenAI API has no shape for.

    GET  /                      the single page (everything else is drawn by static/app.js)
    GET  /ui/static/NAME        the shipped assets (a fixed list: nothing is looked up by the client's name)
    GET  /ui/login, POST        the key form (see ``auth``)
    GET  /ui/api/runs           every run under the runs folder and every job, for the list
    GET  /ui/api/run?src=       one run's details; src is run:NAME (under the runs folder) or job:ID
    GET  /ui/api/metrics?src=   its metrics.jsonl as server-sent events, following the file while it grows
    GET  /ui/api/report?src=&kind=eval|bakeoff   its report, sandboxed (no script of it reaches this origin)
    POST /ui/api/check          `tunesmith check` on an uploaded file (run_check, the CLI's own call)
    POST /ui/api/serve?src=     attach a finished run to the server, to talk to it in the playground

Jobs, files, models and chat go through the OpenAI-compatible API itself (/v1), as any client would.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse

from tunesmith import runs
from tunesmith.serve.schemas import JOB_ID, ApiError
from tunesmith.serve.ui import auth, runs_view

STATIC = Path(__file__).parent / "static"
ASSETS = {"style.css": "text/css", **{f"{n}.js": "text/javascript" for n in ("app", "chart", "work", "playground")}}
# The page may load and connect only to this origin: nothing from a CDN, and no inline script to inject into.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# A report is shown in a frame as an opaque origin: its own script runs, but cannot reach the API or cookie.
REPORT_CSP = "sandbox allow-scripts; frame-ancestors 'self'"
HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}
POLL_S = 0.5
KEEPALIVE_S = 15.0
SHOW_ROWS = 3


def ui_router(settings: Any, store: Any, registry: Any) -> APIRouter:
    r = APIRouter(include_in_schema=False)
    root = Path(settings.runs_dir or "runs")

    def source(src: str) -> tuple[Path, Path, dict[str, Any] | None]:
        """run:NAME or job:ID -> (its run folder, the folder it must stay inside, the job row or None)."""
        kind, _, name = src.partition(":")
        if kind == "job" and store is not None and JOB_ID.match(name) and (job := store.get_job(name)):
            return store.job_path(name), store.jobs_dir, job
        if kind == "run" and (path := runs_view.resolve_run(root, name)) is not None:
            return path, root, None
        raise ApiError(404, f"no run {src[:140]!r}", type="not_found_error", param="src")

    @r.get("/")
    async def index() -> FileResponse:
        headers = {**HEADERS, "Content-Security-Policy": PAGE_CSP}
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=headers)

    @r.get("/ui/static/{name}")
    async def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise ApiError(404, "no such asset", type="not_found_error")
        return FileResponse(STATIC / name, media_type=ASSETS[name], headers=HEADERS)

    @r.get("/ui/login")
    async def login_form() -> HTMLResponse:
        return HTMLResponse(auth.login_page(), headers=HEADERS)

    @r.post("/ui/login")
    async def login(request: Request) -> Response:
        key = settings.api_key
        if not key:
            return RedirectResponse("/", 303)
        form = await request.form(max_files=0, max_fields=2)
        given = str(form.get("key") or "")
        if not hmac.compare_digest(given.encode(), key.encode()):
            return HTMLResponse(auth.login_page("That is not this server's key."), 401, headers=HEADERS)
        return RedirectResponse("/", 303, headers={"Set-Cookie": auth.set_cookie_header(key)})

    @r.get("/ui/api/runs")
    async def list_all() -> dict[str, Any]:
        return await run_in_threadpool(_listing, root, store)

    @r.get("/ui/api/run")
    async def run_detail(src: str) -> dict[str, Any]:
        path, within, job = source(src)
        detail = await run_in_threadpool(runs_view.read_run_folder, path)
        detail["reports"] = runs_view.reports(path, within)
        detail["job"] = job["id"] if job else None
        if job is not None and (f := store.get_file(job["training_file"])):
            detail["data"] = f["filename"]  # the name it was uploaded as, not the id it is stored under
        return {"src": src, "name": job["id"] if job else src[4:], **detail}

    @r.get("/ui/api/report")
    async def report(src: str, kind: str) -> FileResponse:
        path, within, _ = source(src)
        found = runs_view.report_path(path, within, kind)
        if found is None:
            raise ApiError(404, f"this run has no {kind[:20]} report", type="not_found_error", param="kind")
        return FileResponse(found, media_type="text/html", headers={**HEADERS, "Content-Security-Policy": REPORT_CSP})

    @r.get("/ui/api/metrics")
    async def metrics(src: str, request: Request, offset: int = 0) -> StreamingResponse:
        path, _, job = source(src)
        resume = request.headers.get("last-event-id", "")
        start = int(resume) if resume.isdigit() else max(0, offset)

        def done() -> bool:
            if job is not None:
                return store.get_job(job["id"])["status"] in ("succeeded", "failed", "cancelled")
            return runs.is_run(path) or runs_view.read_run_folder(path)["status"] == "stopped"

        return StreamingResponse(
            _follow(request, path / runs.METRICS, start, done),
            media_type="text/event-stream",
            headers={**HEADERS, "X-Accel-Buffering": "no"},
        )

    @r.post("/ui/api/check")
    async def check(request: Request) -> dict[str, Any]:
        if store is None:
            raise ApiError(400, "this server runs without the files API (--no-jobs)")
        body = await request.json()
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
        file_id, model = str(body.get("file_id", "")), str(body.get("model", ""))
        return await run_in_threadpool(_check, store, registry, file_id, model)

    @r.post("/ui/api/serve")
    async def serve_run(src: str) -> dict[str, Any]:
        path, _, job = source(src)
        if job is not None or not runs.is_run(path):
            raise ApiError(400, "only a finished run from the runs folder can be attached", param="src")
        try:
            names = await run_in_threadpool(registry.add_run, path, src[4:])
        except Exception as e:  # a run whose weights cannot load: say why, in one line
            raise ApiError(400, f"cannot serve {src[4:]}: {str(e).splitlines()[0][:300]}", param="src") from None
        return {"models": names}

    return r


async def _follow(request: Request, metrics: Path, offset: int, done: Any):
    """Server-sent events: every complete metrics line, then new ones as training appends them.

    Each event's id is the byte offset after it, so a reconnecting EventSource resumes where it stopped.
    A file that shrank (a resumed run trims lines past its checkpoint) starts over with a `reset` event."""
    quiet = 0.0
    while not await request.is_disconnected():
        size = await run_in_threadpool(_size, metrics)
        if size < offset:
            offset = 0
            yield "event: reset\ndata: {}\n\n"
        points, offset_after = await run_in_threadpool(runs_view.metrics_points, metrics, offset)
        if points:
            offset, quiet = offset_after, 0.0
            yield f"id: {offset}\ndata: {json.dumps({'points': points})}\n\n"
            continue
        if await run_in_threadpool(done):
            # One last read: the final lines may have landed between the read above and the check.
            points, offset = await run_in_threadpool(runs_view.metrics_points, metrics, offset)
            if points:
                yield f"id: {offset}\ndata: {json.dumps({'points': points})}\n\n"
            yield "event: end\ndata: {}\n\n"
            return
        quiet += POLL_S
        if quiet >= KEEPALIVE_S:
            quiet = 0.0
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_S)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _listing(root: Path, store: Any) -> dict[str, Any]:
    keep = ("status", "model", "method", "data", "best_val_loss", "created", "updated", "steps")
    out_runs = []
    for name, path in runs_view.list_runs(root):
        d = runs_view.read_run_folder(path)
        out_runs.append({"src": f"run:{name}", "name": name, **{k: d[k] for k in keep}})
    out_runs.sort(key=lambda x: x["created"] or 0, reverse=True)
    jobs = []
    for job in store.list_jobs() if store is not None else []:
        folder = store.job_path(job["id"])
        f = store.get_file(job["training_file"])
        jobs.append(
            {
                "src": f"job:{job['id']}",
                "name": job["id"],
                "status": job["status"],
                "model": job["model"],
                "method": job["options"].get("method", "lora"),
                "data": f["filename"] if f else job["training_file"],
                "best_val_loss": runs_view.best_val_loss(folder / runs.METRICS),
                "created": job["created_at"],
                "updated": job["finished_at"],
                "fine_tuned_model": job["fine_tuned_model"],
            }
        )
    return {"runs_dir": str(root), "runs": out_runs, "jobs": jobs}


def _check(store: Any, registry: Any, file_id: str, model: str) -> dict[str, Any]:
    """`tunesmith check` on an uploaded file, through the CLI's own library call, with a few masked rows."""
    from tunesmith.config import load_config
    from tunesmith.errors import UserError
    from tunesmith.serve.jobs_api import _base_source
    from tunesmith.train.preflight import run_check

    f = store.get_file(file_id)
    if f is None:
        raise ApiError(404, f"no uploaded file {file_id[:64]!r}", type="not_found_error", param="file_id")
    path = store.file_path(file_id)
    overrides = {
        "model": {"name": _base_source(registry, model), "trust_remote_code": registry.trust_remote_code},
        "data": {"train": str(path)},
    }
    try:
        result = run_check(load_config(None, overrides), show=SHOW_ROWS, estimate=False)
    except UserError as e:
        raise ApiError(400, str(e).replace(str(path), f["filename"])) from None
    # The report names the file by where it is stored; the user knows it by the name it was uploaded as.
    return json.loads(json.dumps(result.as_dict()).replace(json.dumps(str(path))[1:-1], f["filename"]))
