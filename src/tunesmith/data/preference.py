"""Preference pairs, for DPO: OpenAI's format and TRL's, detected per file like every other format.

    OpenAI  {"input": {"messages": [...], "tools"?: [...], "parallel_tool_calls"?: bool},
             "preferred_output": [one assistant message], "non_preferred_output": [one assistant message]}
    TRL     {"prompt": "text" | [messages], "chosen": "text" | [one assistant message], "rejected": ...}

A pair is parsed as two chat rows, the prompt plus each reply, so every rule of the chat format (roles, tool
calls against ``tools``, JSON-schema arguments) holds for both replies. It becomes one ``Conversation``: the
prompt's messages plus the preferred reply, with the other reply in ``rejected``. Assistant turns inside the
prompt get weight 0: a pair compares its two final replies, nothing else.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tunesmith.data.openai_chat import chat_row
from tunesmith.data.rows import Conversation, Message, RowError

OPENAI_KEYS = {"input", "preferred_output", "non_preferred_output"}
TRL_KEYS = {"prompt", "chosen", "rejected"}
INPUT_KEYS = {"messages", "tools", "functions", "parallel_tool_calls"}


def is_preference(row: dict[str, Any]) -> bool:
    return bool(row.keys() & {"preferred_output", "non_preferred_output", "chosen", "rejected"})


def _reply_list(value: Any, key: str) -> list[Any]:
    """A reply as a list of one message (TRL's plain-text replies are wrapped)."""
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
        raise RowError(f"'{key}' must be a list holding exactly one assistant message", "pair-output")
    if value[0].get("role") != "assistant":
        raise RowError(f"'{key}' must hold an assistant message, not {value[0].get('role')!r}", "pair-output")
    return value


def _prompt(row: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """(the prompt's raw messages, the row-level chat fields: tools, parallel_tool_calls)."""
    if "input" in row or "preferred_output" in row or "non_preferred_output" in row:
        inp = row.get("input")
        if not isinstance(inp, dict) or not isinstance(inp.get("messages"), list):
            raise RowError("'input' must be an object with a 'messages' list", "missing-messages")
        unknown = set(inp) - INPUT_KEYS
        if unknown:
            raise RowError(f"'input' has unknown key(s) {sorted(unknown)}", "unknown-key")
        return inp["messages"], {k: v for k, v in inp.items() if k != "messages"}
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}], {}
    if not isinstance(prompt, list):
        raise RowError("'prompt' must be a string or a list of messages", "missing-messages")
    return prompt, {}


def preference_row(row: dict[str, Any]) -> Conversation:
    """One pair -> a Conversation (prompt + preferred reply, ``rejected`` the other), or a RowError."""
    openai = bool(row.keys() & OPENAI_KEYS)
    if openai and row.keys() & TRL_KEYS:
        raise RowError("a pair uses either OpenAI's keys or TRL's, not both", "unknown-key")
    keys = ("preferred_output", "non_preferred_output") if openai else ("chosen", "rejected")
    for key in keys:
        if key not in row:
            raise RowError(f"'{key}' is missing", "pair-output")
    prompt, fields = _prompt(row)
    if prompt and isinstance(prompt[-1], dict) and prompt[-1].get("role") == "assistant":
        raise RowError("the prompt ends with an assistant message: the pair's replies come after it", "role-order")
    parsed = []
    for key in keys:
        reply = _reply_list(row[key], key)
        try:
            messages, tools, parallel = chat_row({"messages": [*prompt, *reply], **fields})
        except RowError as e:
            raise RowError(f"{key}: {e}", e.code) from None
        parsed.append(messages)
    (*context, chosen), (*_, rejected) = parsed
    if chosen.text.strip() == rejected.text.strip():
        raise RowError(f"'{keys[0]}' and '{keys[1]}' are the same reply: the pair teaches nothing", "pair-identical")
    context = [dataclasses.replace(m, weight=0) if m.role == "assistant" else m for m in context]
    return Conversation([*context, chosen], tools=tools, parallel_tool_calls=parallel, rejected=[rejected])


def rejected_conversation(conv: Conversation) -> Conversation:
    """The pair's other side: the same prompt with the non-preferred reply."""
    return dataclasses.replace(conv, messages=[*conv.messages[:-1], *(conv.rejected or [])])


__all__ = ["Message", "is_preference", "preference_row", "rejected_conversation"]
