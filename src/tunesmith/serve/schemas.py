"""Request models for the OpenAI wire format, and its error shape.

Every field of OpenAI's request bodies is declared, and an unknown one is refused with 400 "Unrecognized
request argument supplied: NAME", as OpenAI does: a misspelt ``max_token`` must not be silently ignored.
Fields that do not change a reply here (``user``, ``metadata``, ``store``...) are accepted and ignored, the
way OpenAI ignores them. Tools are honoured (``serve/tools.py``). A field that asks for something this
server cannot do (logprobs, penalties, the legacy ``functions``...) is accepted only at its neutral value
and refused with 400 otherwise, rather than answered as if it had been applied. The models double as the
server's OpenAPI document (/openapi.json).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

# Ids we mint are matched strictly before any path is built from them (see jobs.py).
FILE_ID = re.compile(r"^file-[0-9a-f]{24}$")
JOB_ID = re.compile(r"^ftjob-[0-9a-f]{24}$")
SUFFIX = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
MAX_STOP = 4
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


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


_Stop = Annotated[str, Field(min_length=1)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool | None = None
    include_obfuscation: bool | None = None  # OpenAI pads chunks against side channels; nothing to pad here


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int | None = Field(None, ge=1, le=16)
    stop: _Stop | Annotated[list[_Stop], Field(max_length=MAX_STOP)] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)  # torch generators take 64 bits
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    # Accepted and ignored: they do not change a reply.
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    # Not available here: accepted only at their neutral value (see NEUTRAL).
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None

    NEUTRAL: ClassVar[dict[str, tuple[Any, ...]]] = {
        "frequency_penalty": (0,),
        "presence_penalty": (0,),
        "logit_bias": ({},),
        "logprobs": (False, 0),
    }

    def refuse_unsupported(self) -> None:
        """400 for a feature asked for that this server does not have (a neutral value is no request)."""
        for name, neutral in self.NEUTRAL.items():
            value = getattr(self, name)
            if value is not None and value not in neutral:
                raise ApiError(400, f"{name} is not supported by this server", param=name, code="unsupported_parameter")

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


_TEXT_PART = {
    "type": "object",
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
    "required": ["type", "text"],
}
MESSAGES_SCHEMA = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "properties": {
            "role": {"enum": list(ROLES)},
            "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": _TEXT_PART}]},
            "name": {"type": "string"},
            "tool_calls": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "type": {"const": "function"},
                        "function": {
                            "type": "object",
                            "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}},
                            "required": ["name", "arguments"],
                        },
                    },
                    "required": ["id", "function"],
                },
            },
            "tool_call_id": {"type": "string"},
        },
        "required": ["role"],
    },
}


class ChatRequest(_Request):
    # Validated by message_rules.parse_messages, not pydantic: a malformed conversation is a 422 (invalid
    # messages) with a message that names the message at fault. The schema documents the same rules.
    messages: Annotated[Any, WithJsonSchema(MESSAGES_SCHEMA)]
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    modalities: list[str] | None = None
    prediction: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    web_search_options: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None

    NEUTRAL: ClassVar[dict[str, tuple[Any, ...]]] = {
        **_Request.NEUTRAL,
        "top_logprobs": (0,),
        "response_format": ({"type": "text"},),
        "functions": ([],),
        "function_call": ("none",),
        "audio": (),
        "modalities": (["text"],),
        "prediction": (),
        "reasoning_effort": (),
        "verbosity": (),
        "web_search_options": (),
    }

    def limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


_TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class CompletionRequest(_Request):
    prompt: (
        str | Annotated[list[str], Field(min_length=1)] | _TokenIds | Annotated[list[_TokenIds], Field(min_length=1)]
    )
    echo: bool | None = False
    best_of: int | None = Field(None, ge=1, le=16)
    logprobs: int | None = Field(None, ge=0, le=5)
    suffix: str | None = None

    NEUTRAL: ClassVar[dict[str, tuple[Any, ...]]] = {**_Request.NEUTRAL, "suffix": ("",)}


# -- fine-tuning jobs ------------------------------------------------------------------------------------

# OpenAI's limits on `metadata`: "Set of 16 key-value pairs ... Keys are strings with a maximum length of
# 64 characters. Values are strings with a maximum length of 512 characters." (the SDK's Metadata type)
METADATA_KEYS, METADATA_KEY_LEN, METADATA_VALUE_LEN = 16, 64, 512


def check_metadata(v: dict[str, str] | None) -> dict[str, str] | None:
    if v is None:
        return v
    if len(v) > METADATA_KEYS:
        raise ValueError(f"at most {METADATA_KEYS} key-value pairs are allowed (got {len(v)})")
    for key, value in v.items():
        if not 1 <= len(key) <= METADATA_KEY_LEN:
            raise ValueError(f"keys are 1 to {METADATA_KEY_LEN} characters (a key has {len(key)})")
        if len(value) > METADATA_VALUE_LEN:
            raise ValueError(f"the value of {key[:64]!r} is longer than {METADATA_VALUE_LEN} characters")
    return v


_Count = Annotated[int, Field(ge=1, le=256)]


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    n_epochs: _Count | Literal["auto"] = "auto"
    batch_size: _Count | Literal["auto"] = "auto"
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=100)] | Literal["auto"] = "auto"


class DpoHyperparameters(Hyperparameters):
    beta: Annotated[float, Field(gt=0, le=100)] | Literal["auto"] = "auto"


class ReinforcementHyperparameters(Hyperparameters):
    """OpenAI's reinforcement hyperparameters. compute_multiplier scales K (completions per prompt);
    reasoning_effort is accepted and ignored (tunesmith's models have no reasoning mode; an event says so)."""

    eval_interval: _Count | Literal["auto"] = "auto"
    eval_samples: _Count | Literal["auto"] = "auto"
    compute_multiplier: Annotated[float, Field(gt=0, le=16)] | Literal["auto"] = "auto"
    reasoning_effort: Literal["default", "low", "medium", "high"] | None = None


class TunesmithOptions(BaseModel):
    """tunesmith's extension of `method`: LoRA or full fine-tuning, and a few settings worth exposing."""

    model_config = ConfigDict(extra="forbid", strict=True)

    method: Literal["lora", "full"] = "lora"
    lora_r: int | None = Field(None, ge=1, le=1024)
    lora_alpha: int | None = Field(None, ge=1, le=4096)
    max_len: int | None = Field(None, ge=16, le=1 << 17)
    max_steps: int | None = Field(None, ge=1)
    save_every: int | None = Field(None, ge=1)


class Supervised(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    hyperparameters: Hyperparameters | None = None


class Dpo(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    hyperparameters: DpoHyperparameters | None = None


class Reinforcement(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    grader: dict[str, Any]  # validated by the graders package at job creation (graders/spec.py)
    hyperparameters: ReinforcementHyperparameters | None = None


METHOD_TYPES = ("supervised", "dpo", "reinforcement")


class Method(BaseModel):
    """OpenAI's `method` (supervised, dpo or reinforcement), plus tunesmith's own options under `tunesmith`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["supervised", "dpo", "reinforcement"] = "supervised"
    supervised: Supervised | None = None
    dpo: Dpo | None = None
    reinforcement: Reinforcement | None = None
    tunesmith: TunesmithOptions | None = None

    @model_validator(mode="after")
    def _params_match_type(self) -> Method:
        for other in METHOD_TYPES:
            if other != self.type and getattr(self, other) is not None:
                raise ValueError(f"method.{other} is given but method.type is {self.type!r}")
        if self.type == "reinforcement" and self.reinforcement is None:
            raise ValueError("method.reinforcement (with its grader) is required when method.type is 'reinforcement'")
        return self


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1, max_length=256)
    training_file: str = Field(max_length=256)
    validation_file: str | None = Field(None, max_length=256)
    hyperparameters: Hyperparameters | None = None
    suffix: str | None = Field(None, pattern=SUFFIX.pattern)  # letters, digits, '-', '_': part of a model name
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    method: Method | None = None
    metadata: dict[str, str] | None = None  # stored and returned; jobs.list filters on it
    integrations: list[dict[str, Any]] | None = None  # only none: there is no Weights & Biases here

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        return check_metadata(v)

    @field_validator("integrations")
    @classmethod
    def _no_integrations(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if v:
            raise ValueError("integrations are not supported by this server")
        return v

    def resolved(self) -> tuple[Hyperparameters, TunesmithOptions, str]:
        """(hyperparameters, tunesmith's options, the method's type). Hyperparameters come from
        `method.<type>.hyperparameters` (new style) or the top level (old style, supervised only)."""
        method = self.method or Method()
        if method.type == "reinforcement":
            assert method.reinforcement is not None
            params = method.reinforcement.hyperparameters
            default = ReinforcementHyperparameters()
        elif method.type == "dpo":
            params: Hyperparameters | None = method.dpo.hyperparameters if method.dpo else None
            default: Hyperparameters = DpoHyperparameters()
        else:
            params = method.supervised.hyperparameters if method.supervised else None
            default = Hyperparameters()
        return params or self.hyperparameters or default, method.tunesmith or TunesmithOptions(), method.type
