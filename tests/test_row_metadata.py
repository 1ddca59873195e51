"""Rows that carry metadata (id, source, tags, fact, must_contain, references): kept with the row, shown by
eval and the bakeoff, warned about once in training files; typos of known keys stay errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import write_jsonl
from tunesmith.data.formats import parse_file
from tunesmith.eval.rows import load_rows

from .conftest import run_cli

U, A = {"role": "user", "content": "How big is the kettle?"}, {"role": "assistant", "content": "It holds 2 litres."}
META = {"id": "q7", "source": "faq.md", "tags": ["size"], "fact": "2 litres", "references": ["faq.md#size"]}


@pytest.mark.parametrize(
    "row",
    [
        {"messages": [U, A], **META},
        {"prompt": U["content"], "completion": A["content"], **META, "must_contain": ["2"], "must_not_contain": []},
        {"instruction": U["content"], "output": A["content"], **META},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}], "id": 3},
    ],
    ids=["chat", "prompt_completion", "alpaca", "sharegpt"],
)
def test_metadata_is_kept_with_the_row(tmp_path: Path, row: dict) -> None:
    parsed = parse_file(write_jsonl(tmp_path / "d.jsonl", [row, row]))
    assert parsed.problems == []
    extra = {k: v for k, v in row.items() if k in META or k.startswith("must")}
    assert parsed.examples[0].fields == extra and parsed.metadata_keys == sorted(extra)


@pytest.mark.parametrize(
    ("row", "hint"),
    [
        ({"mesages": [U, A]}, "did you mean 'messages' for 'mesages'?"),
        ({"messages": [U, A], "mesages": 1}, "did you mean 'messages' for 'mesages'?"),
        ({"messages": [{"rol": "user", "content": "x"}, A]}, "did you mean 'role' for 'rol'?"),
        ({"messages": [{**U, "contnet": "x"}, A]}, "did you mean 'content' for 'contnet'?"),
        ({"prompt": "a", "completion": "b", "completon": "c"}, "did you mean 'completion' for 'completon'?"),
    ],
)
def test_typos_of_known_keys_are_errors_that_say_what_was_meant(tmp_path: Path, row: dict, hint: str) -> None:
    parsed = parse_file(write_jsonl(tmp_path / "d.jsonl", [row]))
    assert len(parsed.problems) == 1 and hint in parsed.problems[0].message


def test_a_typo_stops_train_in_one_line_with_exit_2(tmp_path: Path, capsys, tiny_model_dir: Path) -> None:
    data = write_jsonl(tmp_path / "t.jsonl", [{"messages": [U, A]}, {"mesages": [U, A]}])
    args = ["train", "--data", str(data), "--model", str(tiny_model_dir), "--out", str(tmp_path / "run")]
    rc, _, err = run_cli(capsys, *args)
    assert rc == 2 and "Traceback" not in err
    assert "t.jsonl:2:" in err and "did you mean 'messages' for 'mesages'?" in err
    assert not (tmp_path / "run").exists()


def test_check_warns_once_naming_the_metadata_keys(tmp_path: Path, capsys, tiny_model_dir: Path) -> None:
    data = write_jsonl(
        tmp_path / "t.jsonl", [{"messages": [U, {**A, "content": f"reply {i}"}], **META} for i in range(6)]
    )
    rc, out, _ = run_cli(capsys, "check", str(data), "--model", str(tiny_model_dir), "--no-estimate")
    assert rc == 0, out
    lines = [x for x in out.splitlines() if "rows carry key(s)" in x]
    assert len(lines) == 1 and "['fact', 'id', 'references', 'source', 'tags']" in lines[0]
    rc, out, _ = run_cli(
        capsys, "check", str(data), "--model", str(tiny_model_dir), "--no-estimate", "--format", "json"
    )
    found = [f for f in json.loads(out)["findings"] if f["code"] == "metadata-keys"]
    assert [(f["severity"], f["line"]) for f in found] == [("warning", 0)]


def test_eval_rows_carry_their_fields(tmp_path: Path) -> None:
    rows = load_rows(write_jsonl(tmp_path / "test.jsonl", [{"messages": [U, A], **META}, {"messages": [U]}]))
    assert rows[0].fields == META and rows[0].reference == A["content"]
    assert rows[1].fields == {} and rows[1].reference is None


def test_the_eval_report_shows_a_rows_fields() -> None:
    from tunesmith.eval.report import fields_text

    assert (
        fields_text(META) == 'id: q7 · source: faq.md · tags: ["size"] · fact: 2 litres · references: ["faq.md#size"]'
    )
    assert fields_text(None) == ""
