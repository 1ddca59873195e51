"""Response shapes, for the OpenAPI document only (/openapi.json).

The routes build plain dicts (the hot path pays for no second validation); these models describe them so
that the document tells the truth about every answer, errors included. tests/test_serve_fuzz.py holds
the two together: schemathesis checks each real response against this document.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

FinishReason = Literal["stop", "length"]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


_WHY = {
    400: "Invalid request (bad parameter, unknown field, malformed JSON)",
    401: "Missing or wrong API key",
    404: "Unknown model, file or job",
    413: "Request body larger than the server's limit",
    422: "Invalid messages",
    429: "Too many sequences in flight; retry shortly",
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": why} for code, why in _WHY.items()
}


def ok(model: type[BaseModel], **extra: Any) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: this model on 200, and the errors every /v1 route may answer."""
    return {200: {"model": model, "description": "OK", **extra}, **ERRORS}


def streamed(model: type[BaseModel], chunk: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """A route answering JSON, or server-sent events when the request says `stream: true`.

    Per OpenAPI 3.1 the event-stream schema describes one event: its `data` is a chunk (or, if generation
    fails mid-stream, an error) as JSON, and the last one is the literal `[DONE]`."""
    payload = {"contentMediaType": "application/json", "contentSchema": {"anyOf": [chunk, _ERROR]}}
    event = {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"type": "string", "if": {"const": "[DONE]"}, "then": True, "else": payload}},
    }
    return ok(model, content={"text/event-stream": {"schema": event}})


# Chunk schemas are written out flat (no $ref): they sit inside `contentSchema`, where a reference would
# resolve against the whole document.
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_USAGE = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {
        k: {"type": "integer", "minimum": 0} for k in ("prompt_tokens", "completion_tokens", "total_tokens")
    },
}


def _chunk(kind: str, choice: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": kind},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": choice},
            "usage": _USAGE,  # only in the last chunk, with stream_options.include_usage (and no choices)
        },
    }


_FINISH = {"enum": ["stop", "length", None]}
_TOOL_CALL_DELTA = {
    "type": "object",
    "required": ["index"],
    "properties": {
        "index": {"type": "integer", "minimum": 0},
        "id": {"type": "string"},
        "type": {"const": "function"},
        "function": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}},
        },
    },
}
CHAT_CHUNK = _chunk(
    "chat.completion.chunk",
    {
        "type": "object",
        "required": ["index", "delta", "finish_reason"],
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "delta": {
                "type": "object",
                "properties": {
                    "role": {"const": "assistant"},
                    "content": {"type": "string"},
                    "tool_calls": {"type": "array", "items": _TOOL_CALL_DELTA},
                },
                "additionalProperties": False,
            },
            "finish_reason": {"enum": ["stop", "length", "tool_calls", None]},
            "logprobs": {"type": "null"},
        },
    },
)
COMPLETION_CHUNK = _chunk(
    "text_completion",
    {
        "type": "object",
        "required": ["index", "text", "finish_reason"],
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "text": {"type": "string"},
            "finish_reason": _FINISH,
            "logprobs": {"type": "null"},
        },
    },
)


class Health(BaseModel):
    status: Literal["ok"]
    models: list[str] | None = None
    engine: dict[str, int] | None = None


class Model(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[Model]


class Usage(BaseModel):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)


class ToolFunction(BaseModel):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(BaseModel):
    id: str
    type: Literal["function"]
    function: ToolFunction


class ChatMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None  # None when the reply is only tool calls
    tool_calls: list[ToolCall] | None = None


class ChatChoice(BaseModel):
    index: int = Field(ge=0)
    message: ChatMessage
    finish_reason: Literal["stop", "length", "tool_calls"]
    logprobs: None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(BaseModel):
    index: int = Field(ge=0)
    text: str
    finish_reason: FinishReason
    logprobs: None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class FileObject(BaseModel):
    id: str
    object: Literal["file"]
    bytes: int = Field(ge=0)
    created_at: int
    filename: str
    purpose: Literal["fine-tune", "fine-tune-results"]
    status: Literal["processed"]
    status_details: None
    expires_at: None


class FileList(BaseModel):
    object: Literal["list"]
    data: list[FileObject]
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"]
    deleted: bool


class JobHyperparameters(BaseModel):
    n_epochs: int | Literal["auto"]
    batch_size: int | Literal["auto"]
    learning_rate_multiplier: float | Literal["auto"]


class JobMethod(BaseModel):
    type: Literal["supervised", "dpo"]
    supervised: dict[str, JobHyperparameters] | None = None
    dpo: dict[str, dict[str, Any]] | None = None
    tunesmith: dict[str, Any]


class JobError(BaseModel):
    code: str
    message: str
    param: str | None


class Job(BaseModel):
    object: Literal["fine_tuning.job"]
    id: str
    created_at: int
    model: str
    training_file: str
    validation_file: str | None
    hyperparameters: JobHyperparameters
    method: JobMethod
    # "paused" is OpenAI's status after jobs.pause (the SDK's Literal does not list it; it parses anyway)
    status: Literal["validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"]
    fine_tuned_model: str | None
    finished_at: int | None
    error: JobError | None
    trained_tokens: int | None
    result_files: list[str]
    seed: int
    suffix: str | None
    organization_id: str
    integrations: list[Any]
    metadata: dict[str, str] | None
    estimated_finish: int | None


class JobList(BaseModel):
    object: Literal["list"]
    data: list[Job]
    has_more: bool


class JobEvent(BaseModel):
    object: Literal["fine_tuning.job.event"]
    id: str
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any] | None


class JobEventList(BaseModel):
    object: Literal["list"]
    data: list[JobEvent]
    has_more: bool


class Checkpoint(BaseModel):
    object: Literal["fine_tuning.job.checkpoint"]
    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, Any]
    step_number: int


class CheckpointList(BaseModel):
    object: Literal["list"]
    data: list[Checkpoint]
    has_more: bool


class GraderValidated(BaseModel):
    grader: dict[str, Any]


class GraderRunMetadata(BaseModel):
    name: str
    type: str
    errors: dict[str, Any]
    execution_time: float
    scores: dict[str, Any]
    token_usage: int | None
    sampled_model_name: str | None


class GraderRun(BaseModel):
    reward: float
    sub_rewards: dict[str, Any]
    model_grader_token_usage_per_model: dict[str, Any]
    metadata: GraderRunMetadata


UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": ["fine-tune"]},
                    },
                    "required": ["file", "purpose"],
                }
            }
        },
    }
}
