"""The dataset doctor on OpenAI-format tool-calling data: the shipped order-support example passes with
no errors; broken tool rows are errors with their stable codes, and training refuses them."""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.data.checks import check_dataset
from tunesmith.data.formats import read_examples
from tunesmith.examples.make_order_tools import make_rows, write

from .conftest import write_jsonl


def test_order_tools_example_passes_check(tmp_path: Path, tokenizer) -> None:
    train, test = write(tmp_path, n=300, seed=0)
    report = check_dataset(train, test, tokenizer=tokenizer)  # the defaults, max_len 1024 included
    errors = [f for f in report.findings if f.severity == "error"]
    assert errors == [], errors[:3]
    assert report.files[0].valid == 255 and report.files[1].valid == 45
    assert report.files[0].stats.tool_rows == 255
    rows = make_rows(300)
    kinds = {
        (
            any("tool_calls" in m for m in r["messages"]),
            r["messages"][-1]["role"] == "assistant"
            and "content" in r["messages"][-1]
            and r["messages"][-1]["content"] is not None,
        )
        for r in rows
    }
    assert len(kinds) == 3, "no-call rows, rows ending on the call, rows with the result and the answer"


def test_example_is_seeded(tmp_path: Path) -> None:
    a, _ = write(tmp_path / "a")
    b, _ = write(tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()


def test_broken_tool_rows_are_errors_with_codes(tmp_path: Path, tokenizer) -> None:
    rows = make_rows(40, seed=1)
    calls = [i for i, r in enumerate(rows) if len(r["messages"]) == 5]
    bad_json, bad_schema, unknown = calls[:3]
    rows[bad_json]["messages"][2]["tool_calls"][0]["function"]["arguments"] = '{"order_id": '
    args = json.loads(rows[bad_schema]["messages"][2]["tool_calls"][0]["function"]["arguments"])
    args["order_id"] = "12345"
    rows[bad_schema]["messages"][2]["tool_calls"][0]["function"]["arguments"] = json.dumps(args)
    rows[unknown]["messages"][2]["tool_calls"][0]["function"]["name"] = "refund_everything"
    f = write_jsonl(tmp_path / "bad.jsonl", rows)
    report = check_dataset(f, tokenizer=tokenizer, max_len=2048)
    found = {(x.code, x.line) for x in report.findings if x.severity == "error"}
    assert found == {
        ("tool-arguments-json", bad_json + 1),
        ("tool-arguments-schema", bad_schema + 1),
        ("tool-unknown-function", unknown + 1),
    }
    assert report.exit_code() == 2
    assert len(report.kept) == 37, "the malformed rows never reach training"
    try:
        read_examples(f)
    except Exception as e:  # training reads through read_examples: one clear line naming the row
        assert f"bad.jsonl:{bad_json + 1}: message 3 tool call 1 (" in str(e)
    else:
        raise AssertionError("training accepted malformed tool calls")
