"""The other row shapes people bring, each turned into the OpenAI chat form so that every chat rule holds:

ShareGPT       {"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}],
                "system"?: ..., "tools"?: ...}   roles human, gpt, system, function_call, observation and
                ``tools`` (a JSON string or a list of function definitions) as LLaMA-Factory writes them;
                the same turns under ``messages``, or ``messages`` with human/gpt roles, are read alike
alpaca history {"instruction", "input"?, "output", "system"?, "history": [[user, assistant], ...]}
TRL conversational prompt/completion
               {"prompt": [{"role", "content"}, ...], "completion": [{"role": "assistant", ...}]}:
                only the completion is trained (assistant turns in the prompt get weight 0)
text           {"text": ...}: continued pretraining on plain documents; every token is trained and no chat
                template is applied (``data/text.py`` renders it)
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from tunesmith.data.openai_chat import chat_row
from tunesmith.data.rows import Conversation, Message, RowError, check_unicode

SHAREGPT_KEYS = {"conversations", "messages", "system", "tools"}
_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "function_call": "function_call",
    "observation": "observation",
    "tool": "observation",
}
_SHAREGPT_ONLY = {"human", "gpt", "function_call", "observation"}


def is_sharegpt(row: dict[str, Any]) -> bool:
    """A ``conversations`` row, or ``messages`` written with from/value or ShareGPT's role names."""
    if "conversations" in row:
        return True
    turns = row.get("messages")
    if not isinstance(turns, list):
        return False
    # (a role may be any JSON value: a dict is unhashable)
    return any(isinstance(t, dict) and ("from" in t or str(t.get("role")) in _SHAREGPT_ONLY) for t in turns)


def _tools(value: Any) -> list[dict[str, Any]] | None:
    """LLaMA-Factory's ``tools``: a JSON string (or a list) of function definitions, plain or OpenAI-wrapped."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            msg = "'tools' is a string that is not JSON (a list of function definitions)"
            raise RowError(msg, "bad-tools") from None
    if not isinstance(value, list):
        raise RowError("'tools' must be a list of function definitions", "bad-tools")
    return [t if isinstance(t, dict) and "function" in t else {"type": "function", "function": t} for t in value]


def _calls(value: str, first_id: int) -> list[dict[str, Any]]:
    """A function_call turn's value: one ``{"name", "arguments"}`` object, or a list of them, as JSON."""
    try:
        parsed = json.loads(value)
    except ValueError:
        msg = 'a function_call turn\'s value must be JSON: {"name": ..., "arguments": {...}}'
        raise RowError(msg, "bad-tool-call") from None
    calls = parsed if isinstance(parsed, list) else [parsed]
    out = []
    for k, call in enumerate(calls):
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise RowError("a function_call turn needs a 'name' and 'arguments'", "bad-tool-call")
        args = call.get("arguments", {})
        text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
        fn = {"name": call["name"], "arguments": text}
        out.append({"id": f"call_{first_id + k}", "type": "function", "function": fn})
    return out


def _turn(t: Any, i: int) -> tuple[str, str]:
    if not isinstance(t, dict):
        raise RowError(f"turn {i} is not an object", "bad-message")
    unknown = set(t) - {"from", "value", "role", "content", "name"}
    if unknown:
        msg = f"turn {i} has unknown key(s) {sorted(unknown)}; a ShareGPT turn has from and value"
        raise RowError(msg, "unknown-key")
    who = t.get("from", t.get("role"))
    if not isinstance(who, str) or who not in _ROLES:
        raise RowError(f"turn {i} is from {who!r}; expected one of {', '.join(_ROLES)}", "unknown-role")
    value = t.get("value", t.get("content"))
    if not isinstance(value, str):
        raise RowError(f"turn {i} ({who}) has no text 'value'", "missing-content")
    return _ROLES[who], value


def sharegpt_row(row: dict[str, Any], *, require_reply: bool = True) -> Conversation:
    """A ShareGPT row -> a chat row (calls get ids ``call_N``; each observation answers the oldest open call)."""
    turns = row.get("conversations", row.get("messages"))
    if not isinstance(turns, list) or not turns:
        raise RowError("'conversations' must be a non-empty list of {from, value} turns", "missing-messages")
    messages: list[dict[str, Any]] = []
    system = row.get("system")
    if system is not None and system != "":
        if not isinstance(system, str):
            raise RowError("'system' must be a string", "bad-type")
        messages.append({"role": "system", "content": system})
    open_calls: list[str] = []
    n_calls = 0
    for i, t in enumerate(turns, start=1):
        role, value = _turn(t, i)
        if role == "function_call":
            calls = _calls(value, n_calls + 1)
            n_calls += len(calls)
            open_calls += [c["id"] for c in calls]
            messages.append({"role": "assistant", "content": "", "tool_calls": calls})
        elif role == "observation":
            if not open_calls:
                raise RowError(f"turn {i} (observation) answers no function_call before it", "tool-result-without-call")
            messages.append({"role": "tool", "tool_call_id": open_calls.pop(0), "content": value})
        else:
            messages.append({"role": role, "content": value})
    chat = {"messages": messages}
    tools = _tools(row.get("tools"))
    if tools is not None:
        chat["tools"] = tools
    msgs, tools, parallel = chat_row(chat, require_reply=require_reply)
    return Conversation(msgs, tools=tools, parallel_tool_calls=parallel)


def alpaca_history(row: dict[str, Any]) -> list[Message]:
    """Alpaca's ``history``: earlier [instruction, response] pairs, as user and assistant turns."""
    history = row.get("history")
    if history is None:
        return []
    if not isinstance(history, list):
        raise RowError("'history' must be a list of [instruction, response] pairs", "bad-type")
    out = []
    for k, pair in enumerate(history, start=1):
        ok = isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(x, str) and x.strip() for x in pair)
        if not ok:
            raise RowError(f"history[{k}] must be a pair of two non-empty strings [instruction, response]", "bad-type")
        check_unicode(pair[0] + pair[1], f"history[{k}]")
        out += [Message("user", pair[0]), Message("assistant", pair[1])]
    return out


def is_conversational(row: dict[str, Any]) -> bool:
    return isinstance(row.get("prompt"), list) or isinstance(row.get("completion"), list)


def conversational_row(row: dict[str, Any], *, require_reply: bool = True) -> Conversation:
    """TRL's conversational prompt/completion: the prompt's turns, then the completion's (the trained part)."""
    parts = []
    for key, role in (("prompt", "user"), ("completion", "assistant")):
        value = row.get(key)
        if value is None and key == "completion" and not require_reply:
            value = []
        if isinstance(value, str):
            value = [{"role": role, "content": value}]
        if not isinstance(value, list):
            raise RowError(f"'{key}' must be a list of {{role, content}} messages (or a string)", "missing-messages")
        parts.append(value)
    prompt, completion = parts
    if require_reply and not completion:
        raise RowError("'completion' is empty", "empty-reply")
    if any(not isinstance(m, dict) or m.get("role") != "assistant" for m in completion):
        raise RowError("'completion' must hold assistant messages only", "role-order")
    messages, tools, parallel = chat_row({"messages": [*prompt, *completion]}, require_reply=require_reply)
    n_prompt = len(prompt)
    # Only the completion is trained, as TRL trains it: the prompt's assistant turns are context.
    messages = [
        dataclasses.replace(m, weight=0) if i < n_prompt and m.role == "assistant" else m
        for i, m in enumerate(messages)
    ]
    return Conversation(messages, tools=tools, parallel_tool_calls=parallel)


def text_row(row: dict[str, Any]) -> Conversation:
    value = row.get("text")
    if not isinstance(value, str):
        raise RowError(f"'text' must be a string, got {type(value).__name__}", "bad-type")
    if not value.strip():
        raise RowError("'text' is empty", "empty-content")
    check_unicode(value, "'text'")
    return Conversation([Message("assistant", value)], text_only=True)
