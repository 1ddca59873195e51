"""OpenAI's graders API: ``POST /v1/fine_tuning/alpha/graders/validate`` and ``/run``, in the shapes the
official client's ``client.fine_tuning.alpha.graders`` sends and reads (``openai.types.fine_tuning.alpha``).

A grader is run off the event loop (``run_in_threadpool``), and a python grader in the sandbox's worker
process, never in the server's own; a semaphore bounds how many run at once, so a flood of hostile
graders queues instead of forking without end. A model grader (score_model, label_model) may only name a
model this server serves: a client must not make the server load a path of its choosing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from tunesmith.graders import Grade, GraderError, load_grader, sample_from_text
from tunesmith.graders.spec import sub_graders
from tunesmith.serve import responses as doc
from tunesmith.serve.registry import Registry
from tunesmith.serve.schemas import ApiError

CONCURRENT_RUNS = 4
ERROR_FLAGS = (
    "formula_parse_error",
    "invalid_variable_error",
    "model_grader_parse_error",
    "model_grader_refusal_error",
    "model_grader_server_error",
    "other_error",
    "python_grader_runtime_error",
    "python_grader_server_error",
    "sample_parse_error",
    "truncated_observation_error",
    "unresponsive_reward_error",
)


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _served_models(spec: dict, registry: Registry) -> dict:
    """The spec with each model grader's ``model`` replaced by what the served model was loaded from;
    an ApiError for a model this server does not serve."""
    kind = spec.get("type")
    if kind == "multi":
        named = sub_graders(spec)
        return {**spec, "graders": {k: _served_models(v, registry) for k, v in named.items()}}
    if kind in ("score_model", "label_model"):
        served = registry.get(str(spec.get("model")))
        if served is None or not served.source:
            names = ", ".join(s.name for s in registry.names())
            raise ApiError(400, f"the judge model '{spec.get('model')}' is not served here ({names})", param="grader")
        return {**spec, "model": served.source}
    return spec


def _load(body: dict[str, Any], registry: Registry) -> Any:
    spec = body.get("grader")
    if not isinstance(spec, dict):
        raise ApiError(400, "'grader' must be a grader object", param="grader")
    try:
        return load_grader(_served_models(spec, registry))
    except GraderError as e:
        raise ApiError(400, str(e), param="grader") from None


def _flags(spec: dict, grade: Grade) -> dict[str, Any]:
    """OpenAI's error flags for a grade, from its error line (one grader failure sets one flag)."""
    flags: dict[str, Any] = {name: False for name in ERROR_FLAGS}
    flags["python_grader_runtime_error_details"] = None
    flags["python_grader_server_error_type"] = None
    flags["model_grader_server_error_details"] = None
    error = grade.error
    if not error:
        return flags
    if "template names" in error:
        flags["invalid_variable_error"] = True
    elif "calculate_output" in error:
        flags["formula_parse_error"] = True
    elif "timed out" in error:
        flags["unresponsive_reward_error"] = True
    elif "judge model failed" in error:
        flags["model_grader_server_error"] = True
        flags["model_grader_server_error_details"] = error
    elif "judge" in error:
        flags["model_grader_parse_error"] = True
    elif "sandbox failed" in error or "could not hide" in error:
        flags["python_grader_server_error"] = True
        flags["python_grader_server_error_type"] = "sandbox"
    elif _has_python(spec):
        flags["python_grader_runtime_error"] = True
        flags["python_grader_runtime_error_details"] = error
    else:
        flags["other_error"] = True
    return flags


def _has_python(spec: dict) -> bool:
    if spec.get("type") == "multi":
        return any(_has_python(s) for s in sub_graders(spec).values())
    return spec.get("type") == "python"


def _run(grader: Any, model_sample: str, item: Any) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        grade = grader.grade([sample_from_text(model_sample)], [item])[0]
    finally:
        grader.close()
    spec = grader.spec
    scores: dict[str, Any] = dict(grade.sub_scores) or {spec["name"]: grade.score}
    return {
        "reward": grade.score,
        "sub_rewards": dict(grade.sub_scores),
        "model_grader_token_usage_per_model": {},
        "metadata": {
            "name": spec["name"],
            "type": spec["type"],
            "errors": _flags(spec, grade),
            "execution_time": time.perf_counter() - start,
            "scores": scores,
            "token_usage": None,
            "sampled_model_name": None,
        },
    }


def graders_router(registry: Registry) -> APIRouter:
    r = APIRouter(prefix="/v1/fine_tuning/alpha/graders")
    gate = asyncio.Semaphore(CONCURRENT_RUNS)

    @r.post("/validate", response_model=None, responses=doc.ok(doc.GraderValidated))
    async def validate(request: Request) -> dict[str, Any]:
        body = await _json_object(request)
        grader = _load(body, registry)
        grader.close()
        return {"grader": body["grader"]}

    @r.post("/run", response_model=None, responses=doc.ok(doc.GraderRun))
    async def run(request: Request) -> dict[str, Any]:
        body = await _json_object(request)
        sample = body.get("model_sample")
        if not isinstance(sample, str):
            raise ApiError(400, "'model_sample' must be a string", param="model_sample")
        grader = _load(body, registry)
        async with gate:
            return await run_in_threadpool(_run, grader, sample, body.get("item", {}))

    return r
