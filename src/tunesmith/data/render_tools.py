"""Tool calling in the one renderer (``data/render.py``): whether a chat template renders tools itself (probed),
and the message dicts each way needs (see render.py's docstring for the two formats)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from tunesmith.data.formats import Message
from tunesmith.data.rows import ToolCall
from tunesmith.data.tools import format_tool_call, format_tool_result, tools_system_prompt

# -- tool calling ---------------------------------------------------------------------------------------------
_PROBE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "zq_probe_fn",
            "description": "zq probe description",
            "parameters": {"type": "object", "properties": {"zq_arg": {"type": "string"}}},
        },
    }
]
_PROBE_CALL = {
    "id": "zqprobe01",
    "type": "function",
    "function": {"name": "zq_probe_fn", "arguments": {"zq_arg": "zq_value"}},
}
_PROBE = [
    {"role": "user", "content": "zq question"},
    {"role": "assistant", "content": "", "tool_calls": [_PROBE_CALL]},
    {"role": "tool", "tool_call_id": "zqprobe01", "name": "zq_probe_fn", "content": "zq_result"},
    {"role": "assistant", "content": "zq answer"},
]


def template_renders_tools(tokenizer: Any) -> bool:
    """True when the chat template itself writes the tool definitions, the calls and the results.

    Probed rather than guessed from the template's text: a template that raises, or that silently drops
    any of the three (SmolLM2's renders only role and content), gets the fallback."""
    try:
        text = tokenizer.apply_chat_template(_PROBE, tools=_PROBE_TOOLS, tokenize=False)
    except Exception:  # a template's raise_exception, or a missing filter: it cannot render tools
        return False
    return all(marker in text for marker in ("zq probe description", "zq_value", "zq_result"))


def as_message(m: Message | dict[str, Any]) -> Message:
    """A caller's message dict (serve, eval) -> a Message, tool calls included."""
    if isinstance(m, Message):
        return m
    calls = []
    for k, c in enumerate(m.get("tool_calls") or [], start=1):
        fn = c.get("function", c)
        args = fn.get("arguments", {})
        calls.append(
            ToolCall(c.get("id") or f"call_{k}", fn["name"], args if isinstance(args, str) else json.dumps(args))
        )
    role = "system" if m.get("role") == "developer" else m.get("role", "user")
    return Message(role, m.get("content") or "", 1, tuple(calls), m.get("tool_call_id"), m.get("name"))


_NINE = re.compile(r"[A-Za-z0-9]{9}")


def _template_id(call_id: str | None) -> str:
    """Mistral's templates take only 9 alphanumeric characters as a call id; the others ignore ids."""
    call_id = call_id or ""
    if _NINE.fullmatch(call_id):
        return call_id
    return hashlib.sha256(call_id.encode()).hexdigest()[:9]


def _native(m: Message) -> dict[str, Any]:
    d = m.as_dict()
    for c in d.get("tool_calls", []):
        c["id"] = _template_id(c["id"])
    if m.role == "tool":
        d["tool_call_id"] = _template_id(m.tool_call_id)
    return d


def _fallback(msgs: list[Message], tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after_tool = False
    for m in msgs:
        if m.role == "tool":
            block = format_tool_result(m.content)
            if after_tool:  # the results of one turn's calls: one user turn
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block})
            after_tool = True
            continue
        after_tool = False
        if m.tool_calls:
            parts = [m.content] if m.content.strip() else []
            parts += [format_tool_call(c.name, c.args) for c in m.tool_calls]
            out.append({"role": "assistant", "content": "\n".join(parts)})
        else:
            out.append({"role": m.role, "content": m.content})
    if tools:
        prompt = tools_system_prompt(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{prompt}"}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out
