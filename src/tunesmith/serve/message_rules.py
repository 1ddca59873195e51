"""Checking a chat request's ``messages``: roles, text content, tool calls and the tool results that answer them.

Done by hand rather than by pydantic so that a malformed conversation is a 422 (``invalid_messages``) whose
message names the message at fault. ``schemas.MESSAGES_SCHEMA`` documents the same rules for /openapi.json.
"""

from __future__ import annotations

import json
from typing import Any

from tunesmith.serve.schemas import ROLES, ApiError


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


def _tool_calls(m: dict[str, Any], i: int) -> list[dict[str, Any]]:
    """An assistant message's ``tool_calls``, checked: ids, names, and arguments that are a JSON object."""
    raw = m.get("tool_calls")
    if not isinstance(raw, list):
        raise _invalid(f"messages[{i}].tool_calls must be a list")
    out = []
    for k, c in enumerate(raw):
        where = f"messages[{i}].tool_calls[{k}]"
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise _invalid(f"{where} needs a function with a name and arguments")
        if not isinstance(c.get("id"), str) or not c["id"] or c.get("type", "function") != "function":
            raise _invalid(f"{where} needs an id and type 'function'")
        try:
            args = json.loads(fn.get("arguments"))
        except (TypeError, ValueError):
            args = None
        if not isinstance(args, dict):
            raise _invalid(f"{where}.function.arguments must be a JSON object as a string")
        out.append({"id": c["id"], "type": "function", "function": {"name": fn["name"], "arguments": fn["arguments"]}})
    return out


def _message(m: Any, i: int, open_calls: set[str]) -> dict[str, Any]:
    """One message as the Renderer takes it: {role, content} plus tool_calls / tool_call_id where they apply."""
    if not isinstance(m, dict):
        raise _invalid(f"messages[{i}] is not an object")
    role = m.get("role")
    if role not in ROLES:
        raise _invalid(f"messages[{i}].role {role!r} is not one of system, developer, user, assistant, tool")
    if m.get("function_call"):
        raise _invalid(f"messages[{i}]: the legacy function_call is not supported; use tool_calls")
    if not isinstance(m.get("name", ""), str):
        raise _invalid(f"messages[{i}].name must be a string")
    if m.get("tool_calls") is not None and role != "assistant":
        raise _invalid(f"messages[{i}]: only assistant messages carry tool_calls, not {role}")
    if "tool_call_id" in m and not isinstance(m["tool_call_id"], str):
        raise _invalid(f"messages[{i}].tool_call_id must be a string")
    calls = _tool_calls(m, i) if role == "assistant" and m.get("tool_calls") else []
    # An assistant turn that only calls tools may have no content.
    content = "" if calls and m.get("content") is None else _content_text(m.get("content"), i)
    out: dict[str, Any] = {"role": ROLES[role], "content": content}
    if calls:
        out["tool_calls"] = calls
    if role == "tool":
        call_id = m.get("tool_call_id")
        if not isinstance(call_id, str) or call_id not in open_calls:
            raise _invalid(f"messages[{i}] (tool) must answer a tool call of the assistant message before it "
                           "with its tool_call_id")  # fmt: skip
        open_calls.discard(call_id)
        out["tool_call_id"] = call_id
        if isinstance(m.get("name"), str):
            out["name"] = m["name"]
    return out


def parse_messages(raw: Any) -> list[dict[str, Any]]:
    """The conversation as message dicts for the Renderer, or a 422 naming what is wrong."""
    if not isinstance(raw, list) or not raw:
        raise _invalid("'messages' must be a non-empty list of {role, content} objects")
    out: list[dict[str, Any]] = []
    open_calls: set[str] = set()  # the calls of the latest assistant turn, awaiting their results
    for i, m in enumerate(raw):
        msg = _message(m, i, open_calls)
        if msg["role"] == "assistant":
            open_calls = {c["id"] for c in msg.get("tool_calls", [])}
        elif msg["role"] != "tool":
            open_calls = set()
        out.append(msg)
    if out[-1]["role"] == "assistant":
        raise _invalid("the last message must not be an assistant message (continuing a reply is not supported)")
    return out
