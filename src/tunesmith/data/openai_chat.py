"""OpenAI's supervised chat format, in full: one ``{"messages": [...], "tools"?: [...]}`` row -> messages.

Accepted as OpenAI's fine-tuning validator accepts them:
  * row: ``messages``, ``tools`` (function definitions with JSON-schema parameters), ``parallel_tool_calls``,
    and the legacy ``functions``;
  * messages: ``role`` system | developer (read as system) | user | assistant | tool | function (legacy),
    ``content`` as a string or a list of text parts, ``name``, ``weight`` (assistant), ``refusal``
    (assistant), ``tool_calls`` (assistant, with or without content), ``tool_call_id`` (tool), and the
    legacy ``function_call`` (assistant).

The legacy function-calling form is rewritten into the tool form (a ``function_call`` becomes a tool call
with a made-up id, the ``role: function`` message after it the tool result answering it), so everything
downstream sees one representation.

Tool rules, each a row error with a stable code (``tunesmith check`` lists them; training never sees
such a row):
  tool-call-unanswered      a call that a later turn leaves without its tool result
  tool-call-answered-twice  two tool results for one call
  tool-result-without-call  a tool message whose tool_call_id matches no call before it
  duplicate-tool-call-id    two calls with the same id in one row
  tool-unknown-function     a call to a function the row's ``tools`` do not define
  tool-arguments-json       arguments that are not a JSON object
  tool-arguments-schema     arguments that break the function's parameter schema
  bad-tools                 a malformed ``tools`` / ``functions`` list (or a parameter schema that is not one)
  parallel-tool-calls       several calls in one turn while ``parallel_tool_calls`` is false
  image-content             an image part: tunesmith trains text models
The calls of the row's final assistant turn may stay unanswered: that turn is the target to learn.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from tunesmith.data.rows import Message, RowError, ToolCall, check_unicode, did_you_mean

ROW_KEYS = {"messages", "tools", "functions", "parallel_tool_calls"}
_KEYS = {"role", "content", "name"}
MESSAGE_KEYS = {
    "system": _KEYS,
    "developer": _KEYS,
    "user": _KEYS,
    "assistant": _KEYS | {"weight", "tool_calls", "function_call", "refusal"},
    "tool": _KEYS | {"tool_call_id"},
    "function": _KEYS,
}
_ROLE_AS = {"developer": "system", "function": "tool"}
_IMAGE_PARTS = {"image_url", "input_image", "image"}


def _content(m: dict[str, Any], i: int, role: str) -> str:
    """A string or a list of text parts -> text. Image parts are refused with one clear line."""
    value = m.get("content")
    if value is None or isinstance(value, str):
        return value or ""
    if not isinstance(value, list):
        raise RowError(f"message {i} ({role}): 'content' must be a string or a list of text parts", "bad-type")
    texts = []
    for part in value:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _IMAGE_PARTS:
            raise RowError(
                f"message {i} ({role}) has an image part: tunesmith trains text models; remove image content",
                "image-content",
            )
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and role == "assistant" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        else:
            raise RowError(f"message {i} ({role}): content part {kind!r} is not a text part", "bad-content-part")
    return "".join(texts)


def _arguments(raw: Any, where: str) -> str:
    """The arguments as JSON text that parses to an object (OpenAI sends a string; a mapping is accepted)."""
    if isinstance(raw, dict):
        return json.dumps(raw, ensure_ascii=False)
    if not isinstance(raw, str):
        raise RowError(f"{where}: 'arguments' must be a JSON string", "tool-arguments-json")
    try:
        value = json.loads(raw)
    except ValueError as e:
        msg = f"{where}: arguments are not valid JSON ({str(e).splitlines()[0]})"
        raise RowError(msg, "tool-arguments-json") from None
    if not isinstance(value, dict):
        raise RowError(f"{where}: arguments must be a JSON object, got {type(value).__name__}", "tool-arguments-json")
    check_unicode(raw, where)
    return raw


def _tool_calls(m: dict[str, Any], i: int, legacy_ids: itertools.count) -> tuple[ToolCall, ...]:
    if m.get("function_call") is not None:
        if m.get("tool_calls"):
            raise RowError(f"message {i} has both 'tool_calls' and the legacy 'function_call'", "bad-tool-call")
        raw = [{"id": f"call_legacy_{next(legacy_ids)}", "type": "function", "function": m["function_call"]}]
    else:
        raw = m.get("tool_calls") or []
    if not isinstance(raw, list):
        raise RowError(f"message {i}: 'tool_calls' must be a list", "bad-tool-call")
    calls = []
    for k, c in enumerate(raw, start=1):
        where = f"message {i} tool call {k}"
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise RowError(f"{where}: needs 'function' with a 'name' and 'arguments'", "bad-tool-call")
        if c.get("type", "function") != "function":
            raise RowError(f"{where}: type {c.get('type')!r}; only 'function' tool calls exist", "bad-tool-call")
        if not isinstance(c.get("id"), str) or not c["id"]:
            raise RowError(f"{where}: 'id' must be a non-empty string", "bad-tool-call")
        calls.append(ToolCall(c["id"], fn["name"], _arguments(fn.get("arguments"), f"{where} ({fn['name']})")))
    return tuple(calls)


def _message(m: Any, i: int, legacy_ids: itertools.count) -> Message:
    if not isinstance(m, dict):
        raise RowError(f"message {i} is not an object", "bad-message")
    role = m.get("role")
    if role is None and (typo := next((k for k in m if did_you_mean(str(k), {"role"})), None)):
        raise RowError(f"message {i} has no 'role' (did you mean 'role' for '{typo}'?)", "unknown-key")
    if not isinstance(role, str) or role not in MESSAGE_KEYS:  # (a role may be any JSON value: a dict is unhashable)
        roles = ", ".join(MESSAGE_KEYS)
        raise RowError(f"message {i} has unknown role {role!r}; expected one of {roles}", "unknown-role")
    if "weight" in m and role != "assistant":
        raise RowError(f"message {i} ({role}) has a weight; only assistant messages take one", "bad-weight")
    unknown = set(m) - MESSAGE_KEYS[role]
    if unknown:
        allowed = ", ".join(sorted(MESSAGE_KEYS[role]))
        typos = [(k, c) for k in sorted(unknown) if (c := did_you_mean(str(k), MESSAGE_KEYS[role]))]
        hint = "".join(f" (did you mean '{c}' for '{k}'?)" for k, c in typos[:1])
        msg = f"message {i} ({role}) has unknown key(s) {sorted(unknown)}{hint}; allowed: {allowed}"
        raise RowError(msg, "unknown-key")
    if "content" in m and m["content"] is not None and not isinstance(m["content"], str | list):
        raise RowError(f"message {i} ({role}) has no text content", "missing-content")
    content = _content(m, i, role)
    calls = _tool_calls(m, i, legacy_ids) if role == "assistant" else ()
    if role == "assistant" and not content.strip() and isinstance(m.get("refusal"), str):
        content = m["refusal"]
    if not content.strip() and not calls and role != "tool":
        if m.get("content") is None:
            raise RowError(f"message {i} ({role}) has no text content", "missing-content")
        raise RowError(
            f"message {i} ({role}) has empty content", "empty-reply" if role == "assistant" else "empty-content"
        )
    check_unicode(content, f"message {i} ({role})")
    weight = m.get("weight", 1)
    if isinstance(weight, bool) or weight not in (0, 1):
        raise RowError(f"message {i} has weight {weight!r}; weight must be 0 or 1", "bad-weight")
    name = m.get("name")
    if name is not None and not isinstance(name, str):
        raise RowError(f"message {i} ({role}): 'name' must be a string", "bad-type")
    call_id = m.get("tool_call_id")
    if role == "tool" and (not isinstance(call_id, str) or not call_id):
        raise RowError(
            f"message {i} (tool) needs a 'tool_call_id' naming the call it answers", "tool-result-without-call"
        )
    if role == "function" and not name:
        raise RowError(
            f"message {i} (function) needs the 'name' of the function it answers", "tool-result-without-call"
        )
    return Message(_ROLE_AS.get(role, role), content, int(weight), calls, call_id, name)


def parse_tools(row: dict[str, Any]) -> list[dict[str, Any]] | None:
    """``tools`` (and the legacy ``functions``) -> OpenAI tool definitions, each checked."""
    tools = row.get("tools")
    functions = row.get("functions")
    if tools is None and functions is None:
        return None
    out = []
    for key, items in (("tools", tools), ("functions", functions)):
        if items is None:
            continue
        if not isinstance(items, list):
            raise RowError(f"'{key}' must be a list of function definitions", "bad-tools")
        for k, t in enumerate(items, start=1):
            fn = t if key == "functions" else (t.get("function") if isinstance(t, dict) else None)
            if key == "tools" and isinstance(t, dict) and t.get("type", "function") != "function":
                raise RowError(f"tools[{k}]: type {t.get('type')!r}; only function tools can be trained", "bad-tools")
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
                raise RowError(f"{key}[{k}]: a function definition needs a 'name'", "bad-tools")
            params = fn.get("parameters", {"type": "object", "properties": {}})
            _check_schema(params, f"{key}[{k}] ({fn['name']})")
            out.append({"type": "function", "function": fn})
    names = [t["function"]["name"] for t in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise RowError(f"function {dup!r} is defined twice in 'tools'", "bad-tools")
    return out


def _check_schema(params: Any, where: str) -> None:
    import jsonschema

    if not isinstance(params, dict):
        raise RowError(f"{where}: 'parameters' must be a JSON schema object", "bad-tools")
    try:
        jsonschema.validators.validator_for(params).check_schema(params)
    except jsonschema.SchemaError as e:
        raise RowError(f"{where}: 'parameters' is not a valid JSON schema ({e.message})", "bad-tools") from None


def _answer_legacy(messages: list[Message]) -> list[Message]:
    """Legacy ``role: function`` results name a function, not a call: link each to the call it answers."""
    out, open_calls = [], []
    for m in messages:
        if m.tool_calls:
            open_calls = [c for c in m.tool_calls if c.id.startswith("call_legacy_")]
        if m.role == "tool" and m.tool_call_id is None:
            call = next((c for c in open_calls if c.name == m.name), None)
            if call is None:
                raise RowError(
                    f"a 'function' message answers {m.name!r}, which no function_call before it calls",
                    "tool-result-without-call",
                )
            open_calls.remove(call)
            m = Message("tool", m.content, m.weight, (), call.id, m.name)
        out.append(m)
    return out


def check_role_order(messages: list[Message], *, require_reply: bool = True) -> None:
    """Optional system first, then user and assistant alternating from user, where an assistant turn that
    calls tools is followed by the tool results and then the assistant again: what chat templates accept.

    ``require_reply=False`` (evaluation data) also accepts a conversation that ends on a user turn (or on
    tool results): the model is scored on its reply with the measures that need no reference."""
    body = messages[1:] if messages[0].role == "system" else messages
    if any(m.role == "system" for m in body):
        raise RowError("a system message may only come first", "role-order")
    if not body or body[0].role != "user":
        raise RowError(
            "the conversation must start with a user message (after an optional system message)", "role-order"
        )
    for prev, cur in itertools.pairwise(body):
        if cur.role == "tool":
            if not (prev.role == "tool" or prev.tool_calls):
                raise RowError("a tool message must follow an assistant message with tool_calls", "role-order")
        elif prev.role == "tool" and cur.role != "assistant":
            raise RowError(
                f"a {cur.role} message right after tool results; the assistant answers them first", "role-order"
            )
        elif prev.role == cur.role and not prev.tool_calls:  # unanswered calls: check_tool_links says so
            raise RowError(f"two {cur.role} messages in a row; user and assistant must alternate", "role-order")
    if not require_reply:
        return
    if not any(m.role == "assistant" for m in body):
        raise RowError("no assistant reply to train on", "no-assistant")
    if not any(m.role == "assistant" and m.weight for m in body):
        raise RowError("every assistant reply has weight 0, so nothing would be trained", "all-weights-zero")


def check_tool_links(messages: list[Message]) -> None:
    """Every call answered once (the final turn's calls may all stay open), every result answering a call."""
    seen: set[str] = set()
    answered: set[str] = set()
    pending: dict[str, str] = {}  # call id -> function name, for the calls awaiting their result
    last_calls: tuple[ToolCall, ...] = ()
    for m in messages:
        if m.role == "tool":
            cid = m.tool_call_id or ""
            if cid in answered:
                raise RowError(f"tool_call_id {cid!r} is answered twice", "tool-call-answered-twice")
            if cid not in pending:
                msg = f"a tool message answers tool_call_id {cid!r}, which no call before it has"
                raise RowError(msg, "tool-result-without-call")
            del pending[cid]
            answered.add(cid)
            continue
        if pending:
            msg = f"tool call(s) {', '.join(sorted(pending))} get no tool result before the next {m.role} message"
            raise RowError(msg, "tool-call-unanswered")
        for c in m.tool_calls:
            if c.id in seen:
                raise RowError(f"two tool calls share the id {c.id!r}", "duplicate-tool-call-id")
            seen.add(c.id)
            pending[c.id] = c.name
        last_calls = m.tool_calls or last_calls
    if pending and len(pending) < len(last_calls):  # some of the final calls answered, not all
        raise RowError(f"tool call(s) {', '.join(sorted(pending))} get no tool result", "tool-call-unanswered")


def check_calls_against_tools(messages: list[Message], tools: list[dict[str, Any]] | None, parallel: Any) -> None:
    """Called names are defined; arguments match the function's parameter schema."""
    import jsonschema

    defined = {t["function"]["name"]: t["function"] for t in tools or []}
    for i, m in enumerate(messages, start=1):
        if len(m.tool_calls) > 1 and parallel is False:
            raise RowError(
                f"message {i} makes {len(m.tool_calls)} calls but parallel_tool_calls is false", "parallel-tool-calls"
            )
        for c in m.tool_calls:
            where = f"message {i} tool call {c.id!r}"
            if c.name not in defined:
                known = f"'tools' defines {sorted(defined)}" if defined else "the row defines no 'tools'"
                raise RowError(f"{where} calls {c.name!r}, but {known}", "tool-unknown-function")
            schema = defined[c.name].get("parameters") or {"type": "object"}
            error = jsonschema.exceptions.best_match(
                jsonschema.validators.validator_for(schema)(schema).iter_errors(c.args)
            )
            if error is not None:
                at = "/".join(str(p) for p in error.absolute_path) or "arguments"
                raise RowError(f"{where} ({c.name}): {at}: {error.message}", "tool-arguments-schema")


def chat_row(
    row: dict[str, Any], *, require_reply: bool = True
) -> tuple[list[Message], list[dict[str, Any]] | None, Any]:
    """A chat row -> (messages, tools, parallel_tool_calls), every rule above checked."""
    raw = row.get("messages")
    if not isinstance(raw, list):
        raise RowError("'messages' must be a list of {role, content} objects", "missing-messages")
    if not raw:
        raise RowError("'messages' is empty", "missing-messages")
    parallel = row.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise RowError("'parallel_tool_calls' must be true or false", "bad-type")
    tools = parse_tools(row)
    legacy_ids = itertools.count(1)
    messages = _answer_legacy([_message(m, i, legacy_ids) for i, m in enumerate(raw, start=1)])
    check_role_order(messages, require_reply=require_reply)
    if any(m.role == "tool" or m.tool_calls for m in messages):
        check_calls_against_tools(messages, tools, parallel)
        check_tool_links(messages)
    return messages, tools, parallel
