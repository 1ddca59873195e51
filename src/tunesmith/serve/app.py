"""The FastAPI app: OpenAI's wire format in front of the engines in ``registry``.

Routes: GET /health, GET /v1/models[/{id}], POST /v1/chat/completions, POST /v1/completions (both with
SSE streaming), and the routes of ``files_api`` and ``jobs_api``; GET /openapi.json describes them
all (``responses`` has the response shapes). The dashboard (``ui``) is at /. Every error answers in
OpenAI's shape with the status the official client maps to its exception classes: 400 bad parameter,
unknown field or malformed body, 401 key, 404 unknown model/file/job, 413 body too large, 422 invalid
messages, 429 over the concurrency limit. Request bodies and keys are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from tunesmith import console
from tunesmith.serve import responses as doc
from tunesmith.serve.guard import Guard, ServeSettings, install_errors
from tunesmith.serve.message_rules import parse_messages
from tunesmith.serve.registry import Registry, Served, stats
from tunesmith.serve.requests import Event, GenRequest, Sampling
from tunesmith.serve.schemas import ApiError, ChatRequest, CompletionRequest, _Request, not_found
from tunesmith.serve.tools import ToolPlan, ToolReply, prompt_ids, tool_message, tool_plan


def create_app(registry: Registry, settings: ServeSettings | None = None, store: Any = None) -> FastAPI:
    """The app for a registry whose models are already loaded (so load errors surface before serving)."""
    settings = settings or ServeSettings()
    supervisor = None
    if settings.jobs and store is not None:
        from tunesmith.serve.worker import Supervisor

        supervisor = Supervisor(store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if store is not None and (orphans := store.clean_orphans()):
            console.warn(f"removed {len(orphans)} incomplete upload(s) left by a server that stopped mid-upload")
        registry.start()
        jobs_running = supervisor.start() if supervisor else False
        if supervisor and not jobs_running:
            console.warn(f"another server runs the jobs of {store.root}; jobs created here will run there")
        try:
            yield
        finally:
            if supervisor and jobs_running:
                supervisor.stop()
            registry.stop()

    app = FastAPI(title="tunesmith", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.add_middleware(Guard, settings=settings)
    install_errors(app)
    gen = _Generation(registry, settings)

    @app.get("/health", response_model=None, responses={200: {"model": doc.Health, "description": "OK"}})
    async def health(request: Request) -> dict[str, Any]:
        # Open to liveness probes; what is served and the engine counters only with the key (if one is set).
        if not Guard.authorized(request.headers.get("authorization", "").encode(), settings.api_key):
            return {"status": "ok"}
        return {"status": "ok", "models": [s.name for s in registry.names()], "engine": stats(registry)}

    @app.get("/v1/models", response_model=None, responses=doc.ok(doc.ModelList))
    async def models() -> dict[str, Any]:
        data = [_model_object(s.name, s.created) for s in registry.names()]
        if store is not None:
            known = {d["id"] for d in data}
            data += [
                _model_object(j["fine_tuned_model"], j["finished_at"] or j["created_at"])
                for j in store.list_jobs()
                if j["status"] == "succeeded" and j["fine_tuned_model"] not in known
            ]
        return {"object": "list", "data": data}

    @app.get("/v1/models/{model:path}", response_model=None, responses=doc.ok(doc.Model))
    async def model(model: str) -> dict[str, Any]:
        served = await gen.lookup(model)
        return _model_object(served.name, served.created)

    @app.post("/v1/chat/completions", response_model=None, responses=doc.streamed(doc.ChatCompletion, doc.CHAT_CHUNK))
    async def chat(body: ChatRequest, request: Request) -> Any:
        messages = parse_messages(body.messages)
        body.refuse_unsupported()
        plan = tool_plan(body.tools, body.tool_choice, body.parallel_tool_calls)
        served = await gen.lookup(body.model)
        engine = served.engine
        if served.docs is not None:
            messages = await run_in_threadpool(served.with_docs, messages)

        def render() -> tuple[list[int], str]:
            with engine.tok_lock:  # the prompt is rendered with the tools as training renders them
                return prompt_ids(engine.renderer, messages, plan)

        try:
            prompt, prefix = await run_in_threadpool(render)
        except Exception as e:  # a chat template may refuse a conversation (e.g. role order)
            raise ApiError(422, f"the model's chat template rejected the messages: {e}", param="messages") from None
        tools = (plan, prefix) if plan.parse else None
        return await gen.respond(request, body, served, [prompt], body.limit(), chat=True, tools=tools)

    @app.post("/v1/completions", response_model=None, responses=doc.streamed(doc.Completion, doc.COMPLETION_CHUNK))
    async def completions(body: CompletionRequest, request: Request) -> Any:
        body.refuse_unsupported()
        if body.best_of not in (None, body.n or 1):
            raise ApiError(400, "best_of is not supported (it must equal n)", param="best_of")
        served = await gen.lookup(body.model)
        prompts = await run_in_threadpool(_tokenize_prompts, served, body.prompt)
        return await gen.respond(request, body, served, prompts, body.max_tokens or 16, chat=False)

    from tunesmith.serve.graders_api import graders_router

    app.include_router(graders_router(registry))
    if store is not None:
        from tunesmith.serve.files_api import files_router
        from tunesmith.serve.jobs_api import jobs_router

        app.include_router(files_router(store))
        app.include_router(jobs_router(store, registry, settings))
    from tunesmith.serve.ui import mount_ui

    mount_ui(app, settings, store, registry)  # the dashboard at /
    _document_limits(app, settings)
    return app


def _document_limits(app: FastAPI, settings: ServeSettings) -> None:
    """Put this server's own limits into /openapi.json, so that the document describes what it accepts."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = plain()
            for model in ("ChatRequest", "CompletionRequest"):
                props = spec.get("components", {}).get("schemas", {}).get(model, {}).get("properties", {})
                for name in ("max_tokens", "max_completion_tokens"):
                    for branch in props.get(name, {}).get("anyOf", []):
                        if branch.get("type") == "integer":
                            branch["maximum"] = settings.max_tokens
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _model_object(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "tunesmith"}


def _tokenize_prompts(served: Served, prompt: Any) -> list[list[int]]:
    engine = served.engine
    if isinstance(prompt, str):
        prompt = [prompt]
    if all(isinstance(p, int) for p in prompt):
        prompt = [prompt]
    out = []
    vocab = len(engine.tokenizer)
    for p in prompt:
        if isinstance(p, str):
            with engine.tok_lock:
                ids = list(engine.tokenizer(p)["input_ids"])
        else:
            ids = list(p)
            if any(not 0 <= t < vocab for t in ids):
                raise ApiError(400, f"prompt token ids must be in [0, {vocab})", param="prompt")
        if not ids:
            raise ApiError(400, "the prompt is empty", param="prompt")
        out.append(ids)
    return out


class _Generation:
    """Admission (limits, lookups) and the two response shapes (JSON or SSE) over engine events."""

    def __init__(self, registry: Registry, settings: ServeSettings) -> None:
        self.registry, self.settings = registry, settings

    async def lookup(self, name: str) -> Served:
        served = self.registry.served.get(name) or await run_in_threadpool(self.registry.get, name)
        if served is None:
            raise not_found("model", name, param="model", code="model_not_found")
        return served

    def _sampling(self, body: _Request, served: Served, prompts: list[list[int]], limit: int | None) -> Sampling:
        if limit is not None and limit > self.settings.max_tokens:
            raise ApiError(400, f"max_tokens is larger than this server's limit ({self.settings.max_tokens})",
                           param="max_tokens", code="invalid_value")  # fmt: skip
        room = served.engine.context - max(len(p) for p in prompts)
        if room < 1:
            raise ApiError(400, f"the prompt is longer than the model's context ({served.engine.context} tokens)",
                           param="messages", code="context_length_exceeded")  # fmt: skip
        return Sampling(
            max_tokens=min(limit or self.settings.max_tokens, room),
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            seed=body.seed,
            stop=body.stops(),
        )

    def _admit(self, rows: int) -> None:
        """The bounded queue: sequences in flight (running or queued) across engines, this request's included.

        Counted by the engines, which release a sequence when it finishes, fails or is dropped because its
        client left, so a vanished client cannot leak a slot. No await between this check and the submits
        that follow: two requests cannot both take the last slot."""
        limit = self.settings.max_concurrency
        if rows > limit:
            raise ApiError(400, f"this request asks for {rows} sequences (prompts x n); this server's limit is {limit}",
                           param="n", code="invalid_value")  # fmt: skip
        if sum(e.load() for e in self.registry.engines()) + rows > limit:
            raise ApiError(429, f"{limit} sequences are already in flight; retry shortly",
                           type="rate_limit_error", code="rate_limit_exceeded")  # fmt: skip

    async def respond(
        self,
        request: Request,
        body: _Request,
        served: Served,
        prompts: list[list[int]],
        limit: int | None,
        chat: bool,
        tools: tuple[ToolPlan, str] | None = None,
    ) -> Any:
        """Submit every row and answer as JSON or SSE; ``tools``: parse replies into tool calls (plan, opening)."""
        sampling = self._sampling(body, served, prompts, limit)
        n = body.n or 1
        self._admit(len(prompts) * n)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()
        reqs = []
        for p, ids in enumerate(prompts):
            for j in range(n):
                seeded = (
                    sampling if sampling.seed is None else Sampling(**{**sampling.__dict__, "seed": sampling.seed + j})
                )
                reqs.append(GenRequest(ids, seeded, lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev),
                                       served.adapter, index=p * n + j))  # fmt: skip
        for r in reqs:
            served.engine.submit(r)
        meta = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(12)}",
            "created": int(time.time()),
            "model": served.name,
        }
        stream = _drain(events, reqs)
        if body.stream:
            return StreamingResponse(_sse(stream, meta, chat, n, body.include_usage(), tools),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})  # fmt: skip
        collected = await _unless_disconnected(request, _collect(stream))
        if collected is None:  # the client left: its rows were cancelled, and nobody reads an answer
            return Response(status_code=499)
        texts, reasons, usage = [""] * len(reqs), [None] * len(reqs), _Usage()
        for ev in collected:
            texts[ev.index] += ev.text
            if ev.finish_reason:
                reasons[ev.index] = ev.finish_reason
                usage.add(ev, n)
        if "error" in reasons:
            raise ApiError(500, "generation failed on the server", type="server_error")
        if chat:
            choices = [_chat_choice(i, t, r, tools) for i, (t, r) in enumerate(zip(texts, reasons, strict=True))]
            return {**meta, "object": "chat.completion", "choices": choices, "usage": usage.as_dict()}
        if getattr(body, "echo", False):
            texts = [await run_in_threadpool(_decode, served, prompts[i // n]) + t for i, t in enumerate(texts)]
        choices = [
            {"index": i, "text": t, "finish_reason": r, "logprobs": None}
            for i, (t, r) in enumerate(zip(texts, reasons, strict=True))
        ]
        return {**meta, "object": "text_completion", "choices": choices, "usage": usage.as_dict()}


def _chat_choice(index: int, text: str, reason: str, tools: tuple[ToolPlan, str] | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tools is not None:
        reply = ToolReply(*tools)
        reply.text += text
        message, reason = tool_message(reply, reason)
    return {"index": index, "message": message, "finish_reason": reason, "logprobs": None}


def _chat_delta(
    ev: Event, replies: dict[int, ToolReply], tools: tuple[ToolPlan, str] | None
) -> tuple[dict[str, Any], str | None]:
    """The delta a chat chunk carries for an engine event, and its finish_reason."""
    if tools is None:
        return ({"content": ev.text} if ev.text else {}), ev.finish_reason
    reply = replies.setdefault(ev.index, ToolReply(*tools))
    if ev.finish_reason is None:
        text = reply.feed(ev.text)
        return ({"content": text} if text else {}), None
    reply.text += ev.text
    return reply.finish_delta(ev.finish_reason)


def _decode(served: Served, ids: list[int]) -> str:
    with served.engine.tok_lock:
        return served.engine.tokenizer.decode(ids, skip_special_tokens=True)


class _Usage:
    def __init__(self) -> None:
        self.prompt = self.completion = 0

    def add(self, ev: Event, n: int) -> None:
        # A prompt is counted once however many choices it has, as OpenAI does.
        self.prompt += ev.prompt_tokens if ev.index % n == 0 else 0
        self.completion += ev.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
        }


async def _collect(stream: AsyncIterator[Event]) -> list[Event]:
    return [ev async for ev in stream]


async def _unless_disconnected(request: Request, work: Any, every_s: float = 0.5) -> Any:
    """Await ``work``; None if the client disconnects first (then ``work`` is cancelled, and with it the rows).

    A streamed reply notices a gone client when Starlette cancels it; a plain JSON reply would otherwise
    keep its sequences decoding to max_tokens for nobody."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every_s)
            if done:
                return task.result()
            if await request.is_disconnected():
                return None
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _drain(events: asyncio.Queue[Event], reqs: list[GenRequest]) -> AsyncIterator[Event]:
    """Engine events until every row has finished. Leaving early (client gone) cancels the rows."""
    left = len(reqs)
    try:
        while left:
            ev = await events.get()
            left -= ev.finish_reason is not None
            yield ev
    finally:
        for r in reqs:
            r.cancelled = True


async def _sse(
    events: AsyncIterator[Event], meta: dict, chat: bool, n: int, include_usage: bool, tools: tuple | None = None
):
    def chunk(choices: list[dict], **extra: Any) -> str:
        obj = {**meta, "object": "chat.completion.chunk" if chat else "text_completion", "choices": choices, **extra}
        return f"data: {json.dumps(obj)}\n\n"

    usage, started, replies = _Usage(), set(), {}
    try:
        async for ev in events:
            if ev.finish_reason == "error":
                err = ApiError(500, "generation failed on the server", type="server_error")
                yield f"data: {json.dumps(err.body())}\n\n"
                return
            if chat and ev.index not in started:
                started.add(ev.index)
                yield chunk([{"index": ev.index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            if chat:
                delta, reason = _chat_delta(ev, replies, tools)
                if delta.get("tool_calls"):  # as OpenAI: the calls in their own chunk, then the finish_reason
                    yield chunk([{"index": ev.index, "delta": delta, "finish_reason": None, "logprobs": None}])
                    delta = {}
                if delta or reason:
                    yield chunk([{"index": ev.index, "delta": delta, "finish_reason": reason, "logprobs": None}])
            elif ev.text or ev.finish_reason:
                yield chunk([{"index": ev.index, "text": ev.text, "finish_reason": ev.finish_reason, "logprobs": None}])
            if ev.finish_reason:
                usage.add(ev, n)
    finally:
        # However this generator ends (client gone, cancelled, closed), close the drain now, not at garbage
        # collection: its own `finally` cancels the rows still decoding.
        await events.aclose()  # type: ignore[attr-defined]
    if include_usage:
        yield chunk([], usage=usage.as_dict())
    yield "data: [DONE]\n\n"
