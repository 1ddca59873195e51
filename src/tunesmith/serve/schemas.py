"""Request models for the OpenAI wire format, and its error shape.

Only what changes a reply is modelled; other fields the official client may send (``user``,
``metadata``...) are accepted and ignored, the way OpenAI ignores them. A request that asks for something
we cannot do (tools, logprobs) is refused with 400 rather than silently answered differently.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Ids we mint are matched strictly before any path is built from them (see jobs.py).
FILE_ID = re.compile(r"^file-[0-9a-f]{24}$")
JOB_ID = re.compile(r"^ftjob-[0-9a-f]{24}$")
SUFFIX = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
MAX_STOP = 4


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def not_found(what: str, ident: str, param: str | None = None, code: str | None = None) -> ApiError:
    # The id is echoed back only when it is short and printable: an error must not reflect arbitrary input.
    shown = ident if len(ident) <= 200 and ident.isprintable() else "(invalid id)"
    return ApiError(404, f"The {what} '{shown}' does not exist", param=param, code=code)


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int | None = Field(None, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    logprobs: bool | int | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        items = [v] if isinstance(v, str) else (v or [])
        if len(items) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        if any(not s for s in items):
            raise ValueError("stop sequences must not be empty")
        return v

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class ChatRequest(_Request):
    # Typed loosely on purpose: a malformed conversation is a 422 (invalid messages), not a 400.
    messages: Any = None
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    def limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_Request):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(min_length=1)
    echo: bool | None = False
    best_of: int | None = None


ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def _content_text(content: Any, i: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _invalid(f"messages[{i}].content: only text parts are supported")
            parts.append(part["text"])
        return "".join(parts)
    raise _invalid(f"messages[{i}].content must be a string or a list of text parts")


def _invalid(message: str) -> ApiError:
    return ApiError(422, message, param="messages", code="invalid_messages")


def parse_messages(raw: Any) -> list[dict[str, str]]:
    """The conversation as {role, content} dicts for the chat template, or a 422 naming what is wrong."""
    if not isinstance(raw, list) or not raw:
        raise _invalid("'messages' must be a non-empty list of {role, content} objects")
    out: list[dict[str, str]] = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise _invalid(f"messages[{i}] is not an object")
        role = m.get("role")
        if role not in ROLES:
            raise _invalid(f"messages[{i}].role {role!r} is not one of system, developer, user, assistant")
        if m.get("tool_calls") or m.get("function_call"):
            raise _invalid(f"messages[{i}]: tool calls are not supported")
        out.append({"role": ROLES[role], "content": _content_text(m.get("content"), i)})
    if out[-1]["role"] == "assistant":
        raise _invalid("the last message must not be an assistant message (continuing a reply is not supported)")
    return out


# -- fine-tuning jobs ------------------------------------------------------------------------------------


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_epochs: int | Literal["auto"] = "auto"
    batch_size: int | Literal["auto"] = "auto"
    learning_rate_multiplier: float | Literal["auto"] = "auto"

    @field_validator("n_epochs", "batch_size")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= 256:
            raise ValueError("must be between 1 and 256")
        return v

    @field_validator("learning_rate_multiplier")
    @classmethod
    def _multiplier(cls, v: float | str) -> float | str:
        if isinstance(v, float | int) and not 0 < v <= 100:
            raise ValueError("must be > 0 and <= 100")
        return v


class TunesmithOptions(BaseModel):
    """tunesmith's extension of `method`: LoRA or full fine-tuning, and a few settings worth exposing."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["lora", "full"] = "lora"
    lora_r: int | None = Field(None, ge=1, le=1024)
    lora_alpha: int | None = Field(None, ge=1, le=4096)
    max_len: int | None = Field(None, ge=16, le=1 << 17)
    max_steps: int | None = Field(None, ge=1)
    save_every: int | None = Field(None, ge=1)


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=256)
    training_file: str
    validation_file: str | None = None
    hyperparameters: Hyperparameters | None = None
    suffix: str | None = None
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    method: dict[str, Any] | None = None

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, v: str | None) -> str | None:
        if v is not None and not SUFFIX.match(v):
            raise ValueError("suffix must be 1-40 letters, digits, '-' or '_'")
        return v

    def resolved(self) -> tuple[Hyperparameters, TunesmithOptions]:
        """Hyperparameters from `method.supervised.hyperparameters` (new style) or the top level (old style)."""
        method = self.method or {}
        kind = method.get("type", "supervised")
        if kind != "supervised":
            raise ApiError(400, f"method.type {kind!r} is not supported; use 'supervised'", param="method.type")
        hp = (method.get("supervised") or {}).get("hyperparameters")
        try:
            params = Hyperparameters.model_validate(hp) if hp is not None else self.hyperparameters
            options = TunesmithOptions.model_validate(method.get("tunesmith") or {})
        except ValueError as e:
            raise ApiError(400, f"invalid method: {e}", param="method") from None
        return params or Hyperparameters(), options
