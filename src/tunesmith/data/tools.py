"""Tool calls as text: the one parser (generated text -> calls) and the fallback format's writer.

The parser reads every format a chat template may have taught a model:

    Qwen / Hermes / our fallback   <tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>  (one block per call)
    Llama 3.x (JSON)               {"name": "f", "parameters": {...}}   (the whole reply; <|python_tag|> optional)
    Mistral v3                     [TOOL_CALLS] [{"name": "f", "arguments": {...}, "id": "abc123xyz"}, ...]
    Mistral v11+                   [TOOL_CALLS]f[ARGS]{...}   (repeated for parallel calls)

Text outside the calls is returned as the reply's content. A block that does not parse is left in the
content rather than guessed at: eval counts it as "no valid call".

The fallback (for templates that render no tools, SmolLM2's among them) writes the tool definitions into
the system turn and each call in Qwen's form, so ``format_tool_call`` and ``parse_tool_calls`` are inverses.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
RESULT_OPEN, RESULT_CLOSE = "<tool_response>", "</tool_response>"

_MISTRAL_ARGS = re.compile(r"\[TOOL_CALLS\]\s*([A-Za-z0-9_.\-]+)\s*\[ARGS\]")
_MISTRAL = "[TOOL_CALLS]"
_PYTHON_TAG = "<|python_tag|>"
# Text that opens a call in one of the formats above (serve holds streamed text back from here on).
CALL_MARKERS = (CALL_OPEN, _MISTRAL, _PYTHON_TAG)


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: dict[str, Any]
    id: str | None = None  # only Mistral's format carries one

    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass
class ParsedReply:
    content: str  # the text outside the calls, stripped
    calls: list[ParsedCall]


def _call(obj: Any) -> ParsedCall | None:
    """{"name": ..., "arguments"|"parameters": {...}} -> a call; anything else -> None."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # some models write the arguments as a JSON string, as OpenAI's API does
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    ident = obj.get("id")
    return ParsedCall(obj["name"], args, ident if isinstance(ident, str) else None)


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _qwen(text: str) -> ParsedReply | None:
    """<tool_call> blocks. The JSON is read by a decoder, not a regex, so a "</tool_call>" inside an
    argument string cannot cut a call short; the closing tag may be missing at the very end."""
    if CALL_OPEN not in text:
        return None
    decoder = json.JSONDecoder()
    calls, kept, pos = [], [], 0
    while (at := text.find(CALL_OPEN, pos)) >= 0:
        start = at + len(CALL_OPEN)
        body = start + len(text[start:]) - len(text[start:].lstrip())
        try:
            obj, end = decoder.raw_decode(text, body)
        except ValueError:
            obj, end = None, start
        call = _call(obj)
        if call is None:  # not a call: stays in the content
            kept.append(text[pos:start])
            pos = start
            continue
        tail = text[end:].lstrip()
        if tail.startswith(CALL_CLOSE):
            end = len(text) - len(tail) + len(CALL_CLOSE)
        kept.append(text[pos:at])
        calls.append(call)
        pos = end
    if not calls:
        return None
    kept.append(text[pos:])
    return ParsedReply("".join(kept).strip(), calls)


def _mistral(text: str) -> ParsedReply | None:
    at = text.find(_MISTRAL)
    if at < 0:
        return None
    head, rest = text[:at], text[at:]
    named = list(_MISTRAL_ARGS.finditer(rest))
    if named:  # [TOOL_CALLS]name[ARGS]{...} repeated
        calls = []
        decoder = json.JSONDecoder()
        for m in named:
            try:
                args, _ = decoder.raw_decode(rest[m.end() :].lstrip())
            except ValueError:
                return None
            call = _call({"name": m.group(1), "arguments": args})
            if call is None:
                return None
            calls.append(call)
        return ParsedReply(head.strip(), calls)
    try:
        value, _ = json.JSONDecoder().raw_decode(rest[len(_MISTRAL) :].lstrip())
    except ValueError:
        return None
    items = value if isinstance(value, list) else [value]
    calls = [_call(v) for v in items]
    if not calls or any(c is None for c in calls):
        return None
    return ParsedReply(head.strip(), [c for c in calls if c is not None])


def _llama(text: str) -> ParsedReply | None:
    """Llama 3's JSON calls: the whole reply is one call object (or several, ';'-separated, or a list)."""
    body = text.strip().removeprefix(_PYTHON_TAG).strip()
    if not body.startswith(("{", "[")):
        return None
    value = _loads(body)
    if value is None and ";" in body:
        parts = [_loads(p) for p in body.split(";") if p.strip()]
        value = parts if all(p is not None for p in parts) else None
    items = value if isinstance(value, list) else [value]
    calls = [_call(v) for v in items]
    if not calls or any(c is None for c in calls):
        return None
    # A Llama call names its arguments "parameters"; a plain JSON answer that happens to have a "name"
    # key (and no arguments at all) is an answer, not a call.
    if not all(isinstance(v, dict) and ("parameters" in v or "arguments" in v) for v in items):
        return None
    return ParsedReply("", [c for c in calls if c is not None])


def parse_tool_calls(text: str) -> ParsedReply:
    """Generated text -> its tool calls (possibly none) and the remaining content."""
    for parse in (_qwen, _mistral, _llama):
        found = parse(text)
        if found is not None:
            return found
    return ParsedReply(text.strip(), [])


# -- the fallback format --------------------------------------------------------------------------------


def format_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """One call as the fallback writes it (Qwen's form): parse_tool_calls reads it back exactly."""
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{CALL_OPEN}\n{body}\n{CALL_CLOSE}"


def format_tool_result(content: str) -> str:
    return f"{RESULT_OPEN}\n{content}\n{RESULT_CLOSE}"


def tools_system_prompt(tools: list[dict[str, Any]]) -> str:
    """The tool definitions, as the fallback puts them in the system turn."""
    lines = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        f"You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{lines}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        f"{CALL_OPEN}{CALL_CLOSE} XML tags:\n{CALL_OPEN}\n"
        f'{{"name": <function-name>, "arguments": <args-json-object>}}\n{CALL_CLOSE}'
    )
