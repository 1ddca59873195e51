"""Fine-tuning job routes, in OpenAI's shapes, over the SQLite ``Store`` (uploads: ``files_api``).

Creating a job runs the dataset doctor (``data.checks``) with the base model's tokenizer and refuses
error-level findings, so a job that is accepted can train. The training itself happens in ``worker``.

Pause sets `paused` and resume sets `queued` at once, each with its event in the same transaction; the
supervisor then stops the training process at a step boundary with a checkpoint, or starts it again from
that checkpoint (``worker``). A job that succeeded has its step metrics as a CSV file (``job_metrics``).
"""

from __future__ import annotations

import random
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from tunesmith import runs
from tunesmith.serve import jobs_rft
from tunesmith.serve import responses as doc
from tunesmith.serve.files_api import SHOWN_PROBLEMS, page
from tunesmith.serve.jobs import ACTIVE, Store, new_id
from tunesmith.serve.registry import Registry
from tunesmith.serve.schemas import ApiError, JobRequest, check_metadata, not_found
from tunesmith.serve.worker import job_overrides

PAUSABLE = ("validating_files", "queued", "running")


def _check_job_data(store: Store, job: dict[str, Any], cfg: Any) -> None:
    """The dataset doctor's error-level findings, with the base model's tokenizer and the job's settings."""
    if job["options"].get("objective") == "rft":
        return jobs_rft.check_data(store, job)
    try:
        from tunesmith.data.checks import check_dataset
    except ImportError:  # an install without the doctor still has parse_file's checks from the upload
        return
    from tunesmith.models.load import load_tokenizer

    tokenizer = load_tokenizer(job["base_source"], trust_remote_code=bool(job["options"].get("trust_remote_code")))
    val = store.file_path(job["validation_file"]) if job["validation_file"] else None
    report = check_dataset(
        store.file_path(job["training_file"]),
        val,
        tokenizer=tokenizer,
        max_len=cfg.data.max_len,
        overlong=cfg.data.overlong,
        train_on=cfg.data.train_on,
    )
    from tunesmith.train.objectives import choose_objective

    choose_objective(job["options"].get("objective"), report.files[0].format == "preference", "the training file")
    errors = [str(f) for f in report.errors]
    if errors:
        raise ApiError(
            400, f"the training data has errors: {'; '.join(errors[:SHOWN_PROBLEMS])}", param="training_file"
        )


OBJECTIVE_OF = {"supervised": "sft", "dpo": "dpo", "reinforcement": "rft"}
METHOD_OF = {v: k for k, v in OBJECTIVE_OF.items()}


def _job_object(store: Store, job: dict[str, Any]) -> dict[str, Any]:
    hp = dict(job["hyperparameters"])
    kind = METHOD_OF.get(job["options"].get("objective") or "sft", "supervised")
    resolved = store.job_path(job["id"]) / runs.CONFIG_YAML
    if resolved.is_file():  # after training started: the values actually used
        from tunesmith.config import load_config
        from tunesmith.train.auto import default_learning_rate

        t = load_config(resolved).train
        default_lr = default_learning_rate(t.method, t.objective)
        hp = {
            "n_epochs": t.epochs,
            "batch_size": t.batch_size,
            "learning_rate_multiplier": round((t.learning_rate or default_lr) / default_lr, 6),
            **({"beta": t.beta} if kind == "dpo" else {}),
            **({"eval_interval": t.eval_every, "compute_multiplier": hp.get("compute_multiplier", "auto")}
               if kind == "reinforcement" else {}),
        }  # fmt: skip
    return {
        "object": "fine_tuning.job",
        "id": job["id"],
        "created_at": job["created_at"],
        "model": job["model"],
        "training_file": job["training_file"],
        "validation_file": job["validation_file"],
        "hyperparameters": hp,
        "method": {"type": kind, kind: jobs_rft.method_body(job, hp), "tunesmith": _client_options(job)},
        "status": job["status"],
        "fine_tuned_model": job["fine_tuned_model"],
        "finished_at": job["finished_at"],
        "error": job["error"],
        "trained_tokens": job["trained_tokens"],
        "result_files": job["result_files"] or [],
        "seed": job["seed"],
        "suffix": job["suffix"],
        "organization_id": "tunesmith",
        "integrations": [],
        "metadata": job["metadata"],
        # OpenAI: "null if the fine-tuning job is not running"; the worker sets it from the steps done.
        "estimated_finish": job["estimated_finish"] if job["status"] == "running" else None,
    }


def jobs_router(store: Store, registry: Registry, settings: Any) -> APIRouter:
    r = APIRouter(prefix="/v1")

    def get_job(job_id: str) -> dict[str, Any]:
        job = store.get_job(job_id)
        if job is None:
            raise not_found("fine-tuning job", job_id, param="fine_tuning_job_id")
        return job

    # -- jobs ----------------------------------------------------------------------------------------------
    @r.post("/fine_tuning/jobs", response_model=None, responses=doc.ok(doc.Job))
    async def create_job(body: JobRequest) -> dict[str, Any]:
        return await _create_job(store, registry, body)

    @r.get("/fine_tuning/jobs", response_model=None, responses=doc.ok(doc.JobList))
    async def list_jobs(request: Request, after: str | None = None, limit: int = 20) -> dict[str, Any]:
        wanted, null = _metadata_filter(request)
        return page([_job_object(store, j) for j in store.list_jobs(wanted, null_metadata=null)], after, limit)

    @r.get("/fine_tuning/jobs/{job_id}", response_model=None, responses=doc.ok(doc.Job))
    async def retrieve_job(job_id: str) -> dict[str, Any]:
        return _job_object(store, get_job(job_id))

    @r.post("/fine_tuning/jobs/{job_id}/cancel", response_model=None, responses=doc.ok(doc.Job))
    async def cancel_job(job_id: str) -> dict[str, Any]:
        job = get_job(job_id)
        cancelled = store.update_job(
            job_id, only_if=ACTIVE, status="cancelled", finished_at=int(time.time()), events=[("Job cancelled", "info")]
        )
        if not cancelled:
            raise ApiError(400, f"the job has already {job['status']}", param="fine_tuning_job_id")
        return _job_object(store, get_job(job_id))

    @r.post("/fine_tuning/jobs/{job_id}/pause", response_model=None, responses=doc.ok(doc.Job))
    async def pause_job(job_id: str) -> dict[str, Any]:
        get_job(job_id)
        # The training process (if any) stops at its next step boundary with a checkpoint (worker._watch).
        if not store.update_job(
            job_id, only_if=PAUSABLE, status="paused", estimated_finish=None, events=[("Job paused", "info")]
        ):
            raise _cannot("pause", get_job(job_id)["status"])
        return _job_object(store, get_job(job_id))

    @r.post("/fine_tuning/jobs/{job_id}/resume", response_model=None, responses=doc.ok(doc.Job))
    async def resume_job(job_id: str) -> dict[str, Any]:
        get_job(job_id)
        # Back in the queue; when its turn comes it continues from the checkpoint the pause saved.
        if not store.update_job(job_id, only_if=("paused",), status="queued", events=[("Job resumed", "info")]):
            raise _cannot("resume", get_job(job_id)["status"])
        return _job_object(store, get_job(job_id))

    @r.get("/fine_tuning/jobs/{job_id}/events", response_model=None, responses=doc.ok(doc.JobEventList))
    async def events(job_id: str, after: str | None = None, limit: int = 20) -> dict[str, Any]:
        get_job(job_id)
        items = [
            {"object": "fine_tuning.job.event", **{k: v for k, v in e.items() if k not in ("_order", "seq", "job_id")}}
            for e in store.events(job_id)
        ]
        return page(items, after, limit)

    @r.get("/fine_tuning/jobs/{job_id}/checkpoints", response_model=None, responses=doc.ok(doc.CheckpointList))
    async def checkpoints(job_id: str, after: str | None = None, limit: int = 10) -> dict[str, Any]:
        job = get_job(job_id)
        return page(_checkpoints(store, job), after, limit)

    return r


async def _create_job(store: Store, registry: Registry, body: JobRequest) -> dict[str, Any]:
    """A new job, queued once its files and settings pass the checks a training run would make (400 otherwise)."""
    hp, options, kind = body.resolved()
    grader = jobs_rft.valid_grader(body)
    base = _base_source(registry, body.model)
    for param, file_id in (("training_file", body.training_file), ("validation_file", body.validation_file)):
        if file_id is not None and store.get_file(file_id) is None:
            raise ApiError(400, f"{param} '{file_id[:64]}' is not an uploaded file", param=param, code="invalid_file")
    job = {
        "id": new_id("ftjob"),
        "created_at": int(time.time()),
        "model": body.model,
        "base_source": base,
        "training_file": body.training_file,
        "validation_file": body.validation_file,
        "hyperparameters": hp.model_dump(),
        # The server's --trust-remote-code, never the client's say: the job trains a model it serves.
        "options": {
            **options.model_dump(exclude_none=True),
            "trust_remote_code": registry.trust_remote_code,
            "objective": OBJECTIVE_OF[kind],
            **({"grader": grader} if grader is not None else {}),
        },
        "suffix": body.suffix,
        "seed": body.seed if body.seed is not None else random.randrange(2**31),
        "status": "validating_files",
        "metadata": body.metadata,
    }
    from tunesmith.config import load_config
    from tunesmith.errors import UserError

    try:
        cfg = load_config(None, job_overrides(job, store))
        await run_in_threadpool(_check_job_data, store, job, cfg)
    except (UserError, ApiError) as e:
        store.job_path(job["id"], ".grader.json").unlink(missing_ok=True)
        if isinstance(e, ApiError):
            raise
        raise ApiError(400, str(e).replace(str(store.root), "$TUNESMITH_HOME/serve"), param="hyperparameters") from None
    job["status"] = "queued"
    events = [(f"Created fine-tuning job: {job['id']}", "info")]
    effort = getattr(hp, "reasoning_effort", None)
    if effort is not None:
        events.append((f"reasoning_effort {effort!r} ignored: tunesmith's models have no reasoning mode", "warn"))
    store.create_job(job, events=events)
    return _job_object(store, store.get_job(job["id"]))


def _cannot(action: str, status: str) -> ApiError:
    if action == "pause" and status == "paused":
        why = "the job is already paused"
    elif action == "resume":
        why = f"only a paused job can be resumed, and this one is {status}"
    else:
        why = f"the job has already {status}"
    return ApiError(400, f"cannot {action} the job: {why}", param="fine_tuning_job_id", code="invalid_job_status")


def _metadata_filter(request: Request) -> tuple[dict[str, str], bool]:
    """`jobs.list(metadata={"k": "v"})` as the SDK sends it: `metadata[k]=v` query parameters (every pair
    must match), or the literal `metadata=null` for jobs created without metadata."""
    wanted: dict[str, str] = {}
    null = False
    for name, value in request.query_params.multi_items():
        if name == "metadata":
            if value != "null":
                raise ApiError(400, "metadata filters are metadata[KEY]=VALUE, or metadata=null", param="metadata")
            null = True
        elif name.startswith("metadata[") and name.endswith("]"):
            wanted[name[len("metadata[") : -1]] = value
    if null and wanted:
        raise ApiError(400, "metadata=null cannot be combined with metadata[KEY]=VALUE", param="metadata")
    try:
        check_metadata(wanted)
    except ValueError as e:
        raise ApiError(400, f"metadata: {e}", param="metadata") from None
    return wanted, null


def _client_options(job: dict[str, Any]) -> dict[str, Any]:
    """The job's tunesmith options as a client may send them (the server's trust setting is its own)."""
    return {k: v for k, v in job["options"].items() if k not in ("trust_remote_code", "objective", "grader")}


def _base_source(registry: Registry, model: str) -> str:
    """What a job trains: a base model this server serves, or an embedded alias."""
    from tunesmith.models.defaults import EMBEDDED

    served = registry.served.get(model)
    if served is not None and served.kind == "base":
        return served.source
    if model in EMBEDDED:
        return model
    raise not_found("base model", model, param="model", code="model_not_found")


def _checkpoints(store: Store, job: dict[str, Any]) -> list[dict[str, Any]]:
    from tunesmith.train.checkpoint import list_checkpoints

    metrics = store.metrics(job["id"])
    name = job["fine_tuned_model"] or f"ft:{job['model']}:{job['suffix'] or ''}:{job['id'][6:14]}"
    out = []
    for folder in reversed(list_checkpoints(store.job_path(job["id"]) / runs.CHECKPOINTS)):
        step = int(folder.name.split("-")[-1])
        out.append(
            {
                "object": "fine_tuning.job.checkpoint",
                "id": f"ftckpt-{job['id'][6:]}-{step}",
                "created_at": int(folder.stat().st_mtime),
                "fine_tuned_model_checkpoint": f"{name}:ckpt-step-{step}",
                "fine_tuning_job_id": job["id"],
                "metrics": metrics.get(step, {"step": step}),
                "step_number": step,
            }
        )
    return out
