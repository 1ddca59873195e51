import json
import re
from pathlib import Path

import pytest

from tunesmith.data.formats import parse_file, read_examples, split_examples
from tunesmith.errors import DataError

from .conftest import chat_rows, write_jsonl


def test_three_formats_become_the_same_conversation(tmp_path: Path) -> None:
    chat = write_jsonl(
        tmp_path / "c.jsonl",
        [{"messages": [{"role": "user", "content": "Summarise: hi"}, {"role": "assistant", "content": "hi"}]}],
    )
    pc = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Summarise: hi", "completion": "hi"}])
    alpaca = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Summarise:", "input": "hi", "output": "hi"}])
    got = {f.name: read_examples(f) for f in (chat, pc, alpaca)}
    assert [got[k].format for k in ("c.jsonl", "p.jsonl", "a.jsonl")] == ["chat", "prompt_completion", "alpaca"]
    assert got["c.jsonl"].examples[0].as_dicts() == got["p.jsonl"].examples[0].as_dicts()
    assert got["a.jsonl"].examples[0].as_dicts() == [
        {"role": "user", "content": "Summarise:\n\nhi"},
        {"role": "assistant", "content": "hi"},
    ]


def test_weights_are_kept(tmp_path: Path) -> None:
    f = write_jsonl(
        tmp_path / "w.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b", "weight": 0},
                    {"role": "user", "content": "c"},
                    {"role": "assistant", "content": "d", "weight": 1},
                ]
            }
        ],
    )
    msgs = read_examples(f).examples[0].messages
    assert [m.weight for m in msgs if m.role == "assistant"] == [0, 1]


BAD_ROWS = [
    ([1, 2], "not an object"),
    ({"messages": []}, "'messages' is empty"),
    ({"messages": "hi"}, "must be a list"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "unknown role 'bot'"),
    ({"messages": [{"role": {}, "content": ""}]}, "unknown role {}"),  # found by the fuzzer: a dict is unhashable
    ({"messages": [{"role": "user", "content": "x"}]}, "no assistant reply"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}]}, "empty content"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None}]}, "no text content"),
    (
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 2}]},
        "weight must be 0 or 1",
    ),
    (
        {"messages": [{"role": "user", "content": "x", "mood": 1}, {"role": "assistant", "content": "y"}]},
        "unknown key(s) ['mood']",
    ),
    ({"messages": [{"role": "assistant", "content": "y"}]}, "must start with a user message"),
    (
        {
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "user", "content": "y"},
                {"role": "assistant", "content": "z"},
            ]
        },
        "two user messages in a row",
    ),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 0}]}, "weight 0"),
    ({"hello": 1}, "none of the keys of a known format"),
    ({"prompt": "a", "completion": "b"}, "prompt_completion format but the file is in chat format"),
]


@pytest.mark.parametrize(("row", "expected"), BAD_ROWS)
def test_bad_rows_name_file_line_and_reason(tmp_path: Path, row: object, expected: str) -> None:
    good = chat_rows(2)
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps(good[0]) + "\n\n" + json.dumps(good[1]) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    parsed = parse_file(f)
    assert len(parsed.examples) == 2
    assert len(parsed.problems) == 1
    problem = parsed.problems[0]
    assert problem.line == 4, "blank lines still count, so line numbers match the editor's"
    assert expected in problem.message
    with pytest.raises(DataError, match=rf"bad\.jsonl:4: .*{re.escape(expected[:12])}"):
        read_examples(f)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "the file is empty"),
        (b"  \n\n", "the file is empty"),
        ('{"prompt": "a", "completion": "b"}\n'.encode("utf-16"), "UTF-16"),
        (b'[{"prompt": "a", "completion": "b"}]', "one JSON array"),
        (b'{"prompt": "a", "completion": "\xff\xfe"}\n', "not valid UTF-8"),
        (b"prompt,completion\na,b\n", "not valid JSON"),
    ],
)
def test_bad_files(tmp_path: Path, content: bytes, expected: str) -> None:
    f = tmp_path / "x.jsonl"
    f.write_bytes(content)
    with pytest.raises(DataError, match=expected):
        read_examples(f)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_examples(tmp_path / "nope.jsonl")


def test_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    f = tmp_path / "bom.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + b'{"prompt": "a", "completion": "b"}\r\n{"prompt": "c", "completion": "d"}\r\n')
    assert len(read_examples(f).examples) == 2


def test_split_is_seeded_and_disjoint(chat_file: Path) -> None:
    examples = read_examples(chat_file).examples
    a_train, a_val = split_examples(examples, 0.25, seed=7)
    _b_train, b_val = split_examples(examples, 0.25, seed=7)
    _c_train, c_val = split_examples(examples, 0.25, seed=8)
    assert [e.source for e in a_val] == [e.source for e in b_val]
    assert [e.source for e in a_val] != [e.source for e in c_val]
    assert len(a_val) == 6 and len(a_train) == 18
    assert not {e.source for e in a_val} & {e.source for e in a_train}
