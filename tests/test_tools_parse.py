"""The one tool-call parser: every template's format, the fallback's, and what is not a call."""

from __future__ import annotations

import json

import pytest

from tunesmith.data.tools import ParsedCall, format_tool_call, parse_tool_calls, tools_system_prompt

ARGS = {"order_id": "A-17", "items": [1, 2], "note": 'café "quoted"', "rush": True}


def test_qwen_blocks_one_and_parallel_with_content() -> None:
    text = (
        "Let me check both.\n<tool_call>\n"
        + json.dumps({"name": "get_order", "arguments": ARGS})
        + "\n</tool_call>\n<tool_call>\n"
        + '{"name": "get_refund", "arguments": {"order_id": "B"}}\n</tool_call>'
    )
    reply = parse_tool_calls(text)
    assert reply.content == "Let me check both."
    assert reply.calls == [ParsedCall("get_order", ARGS), ParsedCall("get_refund", {"order_id": "B"})]


def test_qwen_unterminated_block_at_the_end_is_read() -> None:
    reply = parse_tool_calls('<tool_call>\n{"name": "f", "arguments": {"x": 1}}')
    assert reply.calls == [ParsedCall("f", {"x": 1})] and reply.content == ""


def test_arguments_as_a_json_string_are_read() -> None:
    reply = parse_tool_calls('<tool_call>{"name": "f", "arguments": "{\\"x\\": 1}"}</tool_call>')
    assert reply.calls == [ParsedCall("f", {"x": 1})]


def test_llama3_json_and_python_tag_and_several() -> None:
    assert parse_tool_calls('{"name": "f", "parameters": {"x": 1}}').calls == [ParsedCall("f", {"x": 1})]
    assert parse_tool_calls('<|python_tag|>{"name": "f", "parameters": {}}').calls == [ParsedCall("f", {})]
    two = parse_tool_calls('{"name": "f", "parameters": {"x": 1}}; {"name": "g", "parameters": {"y": 2}}')
    assert [c.name for c in two.calls] == ["f", "g"]


def test_mistral_v3_list_with_ids_and_v11_named_args() -> None:
    v3 = parse_tool_calls('[TOOL_CALLS] [{"name": "f", "arguments": {"x": 1}, "id": "abcDEF123"}]')
    assert v3.calls == [ParsedCall("f", {"x": 1}, "abcDEF123")]
    v11 = parse_tool_calls('[TOOL_CALLS]f[ARGS]{"x": 1}[TOOL_CALLS]g[ARGS]{"y": [2]}')
    assert v11.calls == [ParsedCall("f", {"x": 1}), ParsedCall("g", {"y": [2]})]


@pytest.mark.parametrize(
    "text",
    [
        "The order ships today.",
        '{"name": "Ada", "age": 3}',  # a JSON answer with a "name" key is an answer, not a call
        "<tool_call>not json</tool_call>",
        '<tool_call>{"arguments": {}}</tool_call>',  # no name
        '<tool_call>{"name": "f", "arguments": [1]}</tool_call>',  # arguments not an object
        "[TOOL_CALLS] nonsense",
        "",
    ],
)
def test_text_that_is_not_a_call_stays_content(text: str) -> None:
    reply = parse_tool_calls(text)
    assert reply.calls == [] and reply.content == text.strip()


@pytest.mark.parametrize(
    "calls",
    [
        [("get_order", ARGS)],
        [("a", {}), ("b", {"nested": {"deep": [None, 1.5, "x"]}})],
        [("unicode_fn", {"q": "日本語 \n newline </tool_call> inside"})],
    ],
)
def test_fallback_format_and_parser_are_inverse(calls: list[tuple[str, dict]]) -> None:
    text = "\n".join(format_tool_call(name, args) for name, args in calls)
    assert [(c.name, c.arguments) for c in parse_tool_calls(text).calls] == calls
    with_content = "Checking.\n" + text
    reply = parse_tool_calls(with_content)
    assert reply.content == "Checking." and len(reply.calls) == len(calls)


def test_tools_system_prompt_lists_every_definition() -> None:
    tools = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in ("f", "g")]
    prompt = tools_system_prompt(tools)
    assert all(json.dumps(t) in prompt for t in tools) and "<tool_call>" in prompt
