"""What runs before and around every route: settings, the API key, body limits, and errors in OpenAI's shape.

The key is checked in constant time on digests, before any route; a body larger than the limit is refused
with 413 before it is parsed (by its Content-Length, or as it arrives when it has none). Every error,
including FastAPI's own validation errors, answers {"error": {"message", "type", "param", "code"}}; the key
and request bodies are never echoed or logged. The dashboard's pages and routes need the key too: as a
bearer header, or as the session cookie its login form sets (``ui.auth``); a page asked for without either
gets the login form.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from tunesmith.serve.schemas import ApiError
from tunesmith.serve.ui import auth as ui_auth


@dataclass
class ServeSettings:
    api_key: str | None = None
    max_body_bytes: int = 4 << 20  # a chat request; uploads have their own limit
    max_file_bytes: int = 256 << 20
    max_tokens: int = 4096  # the most new tokens one request may ask for
    max_concurrency: int = 64  # generation requests in flight; more are answered 429
    jobs: bool = True
    runs_dir: Path | None = None  # the dashboard lists the runs in this folder (`--runs`; None: ./runs)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than the server's limit of {limit} bytes")


class Guard:
    """ASGI middleware: API key (constant-time compare) and body size, checked before any route runs."""

    def __init__(self, app: Any, settings: ServeSettings) -> None:
        self.app, self.settings = app, settings
        self.key = settings.api_key

    @staticmethod
    def authorized(header: bytes, key: str | None) -> bool:
        if not key:
            return True
        token = header[7:] if header[:7].lower() == b"bearer " else b""
        # Constant time, and on digests so that not even the key's length shows in the timing.
        return hmac.compare_digest(hashlib.sha256(token).digest(), hashlib.sha256(key.encode()).digest())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        path = scope["path"]
        if (
            self.key
            and ui_auth.needs_key(path)
            and not self.authorized(headers.get(b"authorization", b""), self.key)
            and not ui_auth.cookie_ok(headers, scope.get("method", "GET"), self.key)  # the dashboard's session
        ):
            if ui_auth.is_page(path) and not path.startswith("/ui/api"):
                return await HTMLResponse(ui_auth.login_page(), 401)(scope, receive, send)
            err = ApiError(401, "Incorrect or missing API key", param=None, code="invalid_api_key")
            return await JSONResponse(err.body(), 401)(scope, receive, send)
        limit = self.settings.max_file_bytes if scope["path"] == "/v1/files" else self.settings.max_body_bytes
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > limit:
            err = ApiError(413, BodyTooLarge(limit).detail, code="request_too_large")
            return await JSONResponse(err.body(), 413)(scope, receive, send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:  # a chunked body without Content-Length
                raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited, send)


_UNION_TAG = re.compile(r"(constrained-)?(str|int|float|bool|dict|list|none)(\[.*\])?|.*\[.*\]|literal\[.*")


def install_errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = e.errors()
        # Of a union's errors, "not a string" for the string branch is noise: report the one that explains.
        first = next((x for x in errors if not str(x.get("type", "")).endswith("_type")), errors[0])
        if first.get("type") == "json_invalid":
            err = ApiError(400, f"the request body is not valid JSON: {first.get('msg')}", code="invalid_json")
            return JSONResponse(err.body(), 400)
        if tuple(first.get("loc", ())) == ("body",):
            ctype = request.headers.get("content-type", "")
            message = "the request body must be a JSON object"
            if "json" not in ctype.lower():  # FastAPI reads a body as JSON only when it is labelled so
                message += f" sent as Content-Type: application/json (not {ctype[:60] or 'none'!r})"
            return JSONResponse(ApiError(400, message, code="invalid_json").body(), 400)
        where = tuple(first.get("loc", ()))
        # Drop where it came from (body, query) and pydantic's union member tags ("constrained-str", "list[int]").
        loc = [str(x) for x in (where[1:] if where[:1] in (("body",), ("query",), ("path",)) else where)]
        loc = [x for x in loc if not _UNION_TAG.fullmatch(x)]
        # `param` names the top-level field, as OpenAI's does; the message has the whole path.
        param, path = (loc[0] if loc else None), ".".join(loc)
        if first.get("type") == "extra_forbidden" and len(loc) == 1:  # OpenAI's words for an unknown field
            err = ApiError(
                400, f"Unrecognized request argument supplied: {param}", param=param, code="unknown_parameter"
            )
            return JSONResponse(err.body(), 400)
        status = 422 if param == "messages" else 400
        message = f"{path}: {first.get('msg')}" if path else f"invalid request body: {first.get('msg')}"
        return JSONResponse(ApiError(status, message, param=param, code="invalid_value").body(), status)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException) -> JSONResponse:
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        message, code = str(e.detail), "request_too_large" if isinstance(e, BodyTooLarge) else None
        if e.status_code == 400 and message == "There was an error parsing the body":
            # FastAPI's answer to a body json.loads cannot read at all: invalid UTF-8, nesting too deep.
            message, code = (
                "the request body is not valid JSON (UTF-8, nested at most a few hundred deep)",
                "invalid_json",
            )
        return JSONResponse(ApiError(e.status_code, message, type=kind, code=code).body(), e.status_code)

    @app.exception_handler(Exception)
    async def crash(_: Request, e: Exception) -> JSONResponse:
        err = ApiError(500, "The server had an error while processing the request", type="server_error")
        return JSONResponse(err.body(), 500)
