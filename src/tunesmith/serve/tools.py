"""Tool calling in chat completions: what the request asks for, and the reply turned back into calls.

    tools + tool_choice ──► ToolPlan ──► the prompt (rendered with the tools, exactly as training renders them)
                                    └──► ToolReply: generated text ──► data/tools.py's parser ──► message.tool_calls

``tool_choice``:
  none      the tools are left out of the prompt and the reply is not parsed: plain text, as without tools.
  auto      (the default when tools are given) the model decides; a call it writes comes back as tool_calls.
  required  the reply is started with the template's own call opening (``<tool_call>\\n{"name": "`` for
            Qwen and the fallback, ``{"name": "`` for Llama 3), so the model can only go on to name a function.
  {"type": "function", "function": {"name": F}}
            the reply is started with the call of F up to its arguments, so the model writes only those.
The opening is read off the chat template by rendering a probe call (``call_prefix``), not hard-coded per
family. A forced reply that still does not parse as a call (cut off by max_tokens, or arguments that are not
JSON) is returned as it is: the text (opening included) as content, no tool_calls, finish_reason "stop" or
"length" as the engine says. A client checking ``finish_reason == "tool_calls"`` sees that no call came,
and nothing is invented for it.

``parallel_tool_calls: false`` keeps the first call of a reply; a named tool_choice keeps the calls of F.

Streaming mirrors the stop-string hold-back rule (``requests.holdback``): text is sent as content only
while it cannot be the start of a call. From the first call marker on (or from a reply that opens with
``{`` / ``[``, which may be a Llama 3 JSON call) the rest is held, parsed at the end and sent as OpenAI
sends tool calls: one ``delta.tool_calls[]`` entry per call with its index, id, type, name and arguments.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from tunesmith.data.openai_chat import parse_tools
from tunesmith.data.rows import RowError
from tunesmith.data.tools import CALL_MARKERS, parse_tool_calls
from tunesmith.serve.requests import holdback
from tunesmith.serve.schemas import ApiError

_PROBE_NAME, _PROBE_ARGS = "zq_probe_fn", '{"zq_arg": "zq_value"}'


@dataclass(frozen=True)
class ToolPlan:
    tools: list[dict[str, Any]] | None = None  # rendered into the prompt; None: no tools there
    parse: bool = False  # turn the reply into tool calls
    required: bool = False  # tool_choice "required"
    named: str | None = None  # tool_choice naming one function
    parallel: bool = True

    @property
    def forced(self) -> bool:
        return self.required or self.named is not None


def _bad(message: str, param: str) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value")


def tool_plan(tools: list[dict[str, Any]] | None, choice: Any, parallel: bool | None) -> ToolPlan:
    """The request's ``tools``, ``tool_choice`` and ``parallel_tool_calls``, checked (400 naming the field)."""
    try:
        defined = parse_tools({"tools": tools}) if tools else None
    except RowError as e:
        raise _bad(f"tools: {e}", "tools") from None
    names = {t["function"]["name"] for t in defined or []}
    if choice is None:
        choice = "auto" if defined else "none"
    if choice == "none":
        return ToolPlan()
    if choice not in ("auto", "required") and not isinstance(choice, dict):
        raise _bad(f"tool_choice {choice!r} is not one of none, auto, required or a named function", "tool_choice")
    if not defined:
        raise _bad("tool_choice is only allowed when tools are specified", "tool_choice")
    if choice == "auto":
        return ToolPlan(defined, True, parallel=parallel is not False)
    if choice == "required":
        return ToolPlan(defined, True, required=True, parallel=parallel is not False)
    fn = choice.get("function") if choice.get("type") == "function" else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str):
        raise _bad('a named tool_choice is {"type": "function", "function": {"name": ...}}', "tool_choice")
    if name not in names:
        raise _bad(f"tool_choice names {name!r}, which tools does not define", "tool_choice")
    return ToolPlan(defined, True, named=name, parallel=parallel is not False)


def call_prefix(renderer: Any, messages: list[dict[str, Any]], plan: ToolPlan) -> str:
    """The text that starts a forced reply: the template's own opening of a call (see the module docstring).

    Read off a probe: the conversation rendered with one assistant call appended, minus the generation
    prompt. '' when the template does not render that way (then the reply is not forced)."""
    if not plan.forced:
        return ""
    name = plan.named or _PROBE_NAME
    call = {"id": "zqprobe01", "type": "function", "function": {"name": name, "arguments": _PROBE_ARGS}}
    head = renderer.prompt_text(messages, plan.tools)
    try:
        full = renderer.conversation_text([*messages, {"role": "assistant", "content": "", "tool_calls": [call]}],
                                          plan.tools)  # fmt: skip
    except Exception:  # a template that refuses the probe: no forcing
        return ""
    if not full.startswith(head):
        return ""
    reply = full[len(head) :]
    if plan.named:  # up to the arguments
        cut = reply.find(_PROBE_ARGS)
    else:  # up to the call's JSON (the model writes the whole object, name first)
        at = reply.find(_PROBE_NAME)
        cut = max(reply.rfind("{", 0, at), reply.rfind("[", 0, at)) if at >= 0 else -1
    return _on_token_boundary(renderer.tokenizer, reply, cut) if cut > 0 else ""


def _on_token_boundary(tokenizer: Any, reply: str, cut: int) -> str:
    """The longest run of whole tokens of ``reply`` that ends at or before ``cut``.

    Cutting mid-token ('"name": "' where training saw ' "get') would show the model a tokenization it
    never saw, and a tiny model answers that with nonsense."""
    ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
    best = ""
    for k in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:k])
        if len(text) > cut or not reply.startswith(text):
            break
        best = text
    return best


def prompt_ids(renderer: Any, messages: list[dict[str, Any]], plan: ToolPlan) -> tuple[list[int], str]:
    """Token ids of the prompt (and of the forced opening, if any), and that opening."""
    prefix = call_prefix(renderer, messages, plan)
    text = renderer.prompt_text(messages, plan.tools) + prefix
    # As the Renderer tokenizes: the template wrote its special tokens, so none are added.
    return list(renderer.tokenizer(text, add_special_tokens=False)["input_ids"]), prefix


def _call_dict(call: Any) -> dict[str, Any]:
    return {
        "id": f"call_{secrets.token_hex(12)}",
        "type": "function",
        "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
    }


class ToolReply:
    """One choice's reply in a request that parses tool calls: text in, content deltas and calls out."""

    def __init__(self, plan: ToolPlan, prefix: str = "") -> None:
        self.plan, self.text, self.sent = plan, prefix, 0

    def feed(self, delta: str) -> str:
        """Add generated text; return the content that may be streamed now (it cannot be part of a call)."""
        self.text += delta
        if self.plan.forced and self.text.strip() and not self.sent:
            return ""  # a forced reply is a call from its first character
        body = self.text.lstrip()
        if not self.sent and body.startswith(("{", "[")):
            return ""  # may be a Llama 3 JSON call: held to the end
        at = [i for i in (body.find(x) for x in CALL_MARKERS) if i >= 0]
        end = min(at) if at else len(body) - holdback(body, CALL_MARKERS)
        safe = body[:end].rstrip()  # the parsed content is stripped: trailing space waits for what follows
        if len(safe) <= self.sent:
            return ""
        out, self.sent = safe[self.sent :], len(safe)
        return out

    def finish(self, reason: str) -> tuple[str | None, list[dict[str, Any]], str, str]:
        """(content or None, tool calls, finish_reason, the content not yet streamed)."""
        parsed = parse_tool_calls(self.text)
        calls = parsed.calls
        if self.plan.named is not None:
            calls = [c for c in calls if c.name == self.plan.named]
        if not self.plan.parallel:
            calls = calls[:1]
        content = parsed.content if calls else self.text.strip()
        sent = self.text.lstrip()[: self.sent]
        rest = content[len(sent) :] if content.startswith(sent) else ""
        if calls and reason == "stop":
            reason = "tool_calls"
        return (content or None) if calls else content, [_call_dict(c) for c in calls], reason, rest

    def finish_delta(self, reason: str) -> tuple[dict[str, Any], str]:
        """The streamed end of the reply: the last delta (rest of the content, the calls) and finish_reason."""
        _, calls, reason, rest = self.finish(reason)
        delta: dict[str, Any] = {"content": rest} if rest else {}
        if calls:
            delta["tool_calls"] = [{"index": k, **c} for k, c in enumerate(calls)]
        return delta, reason


def tool_message(reply: ToolReply, reason: str) -> tuple[dict[str, Any], str]:
    """The non-streamed assistant message of a reply, and its finish_reason."""
    content, calls, reason, _ = reply.finish(reason)
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        msg["tool_calls"] = calls
    return msg, reason
