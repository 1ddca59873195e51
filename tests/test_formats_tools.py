"""OpenAI's supervised chat format in full: every field its validator accepts is read; every tool rule
broken is one row error naming file:line, the field and a stable code."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tunesmith.data.formats import parse_file, read_examples
from tunesmith.errors import DataError

from .conftest import chat_rows, write_jsonl

GET_ORDER = {
    "type": "function",
    "function": {
        "name": "get_order",
        "description": "Look up an order",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string", "pattern": "^A[0-9]+$"}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    },
}


def call(cid: str, args: Any, name: str = "get_order") -> dict[str, Any]:
    text = args if isinstance(args, str) else json.dumps(args)
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": text}}


def tool_row() -> dict[str, Any]:
    """User asks, the assistant calls, the tool answers, the assistant answers: OpenAI's documented shape."""
    return {
        "tools": [GET_ORDER],
        "parallel_tool_calls": True,
        "messages": [
            {"role": "developer", "content": "You are the order desk."},
            {"role": "user", "content": [{"type": "text", "text": "Where is "}, {"type": "text", "text": "A17?"}]},
            {"role": "assistant", "content": None, "tool_calls": [call("call_1", {"order_id": "A17"})]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "shipped"}'},
            {"role": "assistant", "content": "A17 has shipped.", "weight": 1, "name": "desk"},
        ],
    }


def one_row(tmp_path: Path, row: Any) -> Any:
    return parse_file(write_jsonl(tmp_path / "t.jsonl", [row]))


def test_full_tool_row_is_read(tmp_path: Path) -> None:
    parsed = one_row(tmp_path, tool_row())
    assert not parsed.problems, parsed.problems
    conv = parsed.examples[0]
    assert [m.role for m in conv.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert conv.messages[1].content == "Where is A17?"
    (c,) = conv.messages[2].tool_calls
    assert (c.id, c.name, c.args) == ("call_1", "get_order", {"order_id": "A17"}) and conv.messages[2].content == ""
    assert conv.messages[3].tool_call_id == "call_1" and conv.messages[4].name == "desk"
    assert conv.tools == [GET_ORDER] and conv.parallel_tool_calls is True and conv.uses_tools


def test_row_ending_on_the_call_is_the_target(tmp_path: Path) -> None:
    row = tool_row()
    row["messages"] = row["messages"][:3]
    assert not one_row(tmp_path, row).problems


def test_legacy_functions_and_function_call(tmp_path: Path) -> None:
    row = {
        "functions": [GET_ORDER["function"]],
        "messages": [
            {"role": "user", "content": "Where is A17?"},
            {"role": "assistant", "function_call": {"name": "get_order", "arguments": '{"order_id": "A17"}'}},
            {"role": "function", "name": "get_order", "content": "shipped"},
            {"role": "assistant", "content": "Shipped."},
        ],
    }
    parsed = one_row(tmp_path, row)
    assert not parsed.problems, parsed.problems
    msgs = parsed.examples[0].messages
    assert msgs[1].tool_calls[0].name == "get_order" and msgs[2].role == "tool"
    assert msgs[2].tool_call_id == msgs[1].tool_calls[0].id
    assert parsed.examples[0].tools == [GET_ORDER]


def test_refusal_and_refusal_parts(tmp_path: Path) -> None:
    row = {"messages": [{"role": "user", "content": "hack it"}, {"role": "assistant", "refusal": "I can't help."}]}
    assert one_row(tmp_path, row).examples[0].messages[1].content == "I can't help."
    row["messages"][1] = {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]}
    assert one_row(tmp_path, row).examples[0].messages[1].content == "No."


def test_plain_rows_are_unchanged(tmp_path: Path) -> None:
    parsed = parse_file(write_jsonl(tmp_path / "p.jsonl", chat_rows(3)))
    for conv in parsed.examples:
        assert conv.tools is None and not conv.uses_tools
        assert all(set(m.as_dict()) == {"role", "content"} for m in conv.messages)


def broken(edit: Any) -> dict[str, Any]:
    row = copy.deepcopy(tool_row())
    edit(row)
    return row


def _set(path: list[Any], value: Any) -> Any:
    def edit(row: dict[str, Any]) -> None:
        target = row
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


BAD = [
    (
        _set(["messages", 2, "tool_calls", 0, "function", "arguments"], "{order_id: A17"),
        "tool-arguments-json",
        "not valid JSON",
    ),
    (_set(["messages", 2, "tool_calls", 0, "function", "arguments"], "[1]"), "tool-arguments-json", "JSON object"),
    (
        _set(["messages", 2, "tool_calls", 0, "function", "arguments"], '{"order_id": 17}'),
        "tool-arguments-schema",
        "order_id",
    ),
    (
        _set(["messages", 2, "tool_calls", 0, "function", "arguments"], '{"order_id": "B1"}'),
        "tool-arguments-schema",
        "does not match",
    ),
    (
        _set(["messages", 2, "tool_calls", 0, "function", "arguments"], '{"order": "A1"}'),
        "tool-arguments-schema",
        "required",
    ),
    (
        _set(["messages", 2, "tool_calls", 0, "function", "name"], "cancel_order"),
        "tool-unknown-function",
        "'cancel_order'",
    ),
    (lambda r: r.pop("tools"), "tool-unknown-function", "defines no 'tools'"),
    (_set(["messages", 3, "tool_call_id"], "call_9"), "tool-result-without-call", "'call_9'"),
    (lambda r: r["messages"].insert(4, dict(r["messages"][3])), "tool-call-answered-twice", "answered twice"),
    (lambda r: r["messages"].pop(3), "tool-call-unanswered", "call_1"),
    (
        lambda r: r["messages"][2]["tool_calls"].append(call("call_1", {"order_id": "A2"})),
        "duplicate-tool-call-id",
        "'call_1'",
    ),
    (
        lambda r: (
            r.update(parallel_tool_calls=False),
            r["messages"][2]["tool_calls"].append(call("c2", {"order_id": "A2"})),
        ),
        "parallel-tool-calls",
        "parallel_tool_calls is false",
    ),
    (
        lambda r: r["messages"][2]["tool_calls"].append(call("c2", {"order_id": "A2"})),
        "tool-call-unanswered",
        "c2",
    ),
    (_set(["tools", 0, "function", "parameters"], {"type": "objekt"}), "bad-tools", "not a valid JSON schema"),
    (_set(["tools"], [GET_ORDER, GET_ORDER]), "bad-tools", "defined twice"),
    (_set(["messages", 3, "role"], "user"), "unknown-key", "tool_call_id"),
    (lambda r: r["messages"][3].pop("tool_call_id"), "tool-result-without-call", "tool_call_id"),
    (
        _set(["messages", 1, "content"], [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]),
        "image-content",
        "tunesmith trains text models",
    ),
    (_set(["messages", 1, "content"], [{"type": "input_audio", "input_audio": {}}]), "bad-content-part", "input_audio"),
    (
        lambda r: r["messages"].insert(2, {"role": "tool", "tool_call_id": "x", "content": "?"}),
        "role-order",
        "tool message must follow",
    ),
    (_set(["messages", 2, "tool_calls", 0, "type"], "custom"), "bad-tool-call", "only 'function'"),
    (_set(["messages", 4, "weight"], 2), "bad-weight", "weight must be 0 or 1"),
    (_set(["messages", 1, "weight"], 0), "bad-weight", "only assistant messages take one"),
]


@pytest.mark.parametrize(("edit", "code", "text"), BAD)
def test_broken_tool_rows_name_line_field_and_code(tmp_path: Path, edit: Any, code: str, text: str) -> None:
    rows = [*chat_rows(2), broken(edit)]
    f = write_jsonl(tmp_path / "bad.jsonl", rows)
    parsed = parse_file(f)
    assert len(parsed.examples) == 2 and len(parsed.problems) == 1, parsed.problems
    problem = parsed.problems[0]
    assert (problem.line, problem.code) == (3, code), problem
    assert text in problem.message
    with pytest.raises(DataError, match=r"bad\.jsonl:3: "):
        read_examples(f)


def test_image_row_is_one_clear_line(tmp_path: Path) -> None:
    row = broken(_set(["messages", 1, "content"], [{"type": "image_url", "image_url": {"url": "u"}}]))
    with pytest.raises(DataError) as e:
        read_examples(write_jsonl(tmp_path / "img.jsonl", [row]))
    assert "\n" not in str(e.value) and "img.jsonl:1: message 2 (user) has an image part" in str(e.value)
