"""The data people bring, read without a conversion step: real files of every kind (written here with pyarrow
and datasets), each through `check` and a short `train` on the tiny model; the row shapes; text-only rows
trained on every token and packed to max_len; and one line for a file of a kind tunesmith does not read."""

from __future__ import annotations

import gzip
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import write_jsonl
from tunesmith.data.formats import parse_file, read_examples
from tunesmith.errors import DataError

QA = [("Where is my parcel?", "It ships today."), ("Can I pay by card?", "Yes, every major card."), ("Hi", "Hello!")]
PC = [{"prompt": q, "completion": a} for q, a in QA]
CHAT = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QA]
TOOL = {"name": "track", "description": "Track a parcel", "parameters": {"type": "object", "properties": {}}}
SHAREGPT = [
    {
        "conversations": [
            {"from": "human", "value": "Where is parcel 7?"},
            {"from": "function_call", "value": json.dumps({"name": "track", "arguments": {}})},
            {"from": "observation", "value": '{"status": "in transit"}'},
            {"from": "gpt", "value": "It is in transit."},
        ],
        "system": "You are a support agent.",
        "tools": json.dumps([TOOL]),
    },
    *({"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]} for q, a in QA),
]


def _write(text: str) -> Callable[[Path], Path]:
    return lambda p: (p.write_text(text, encoding="utf-8"), p)[1]


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _gz(p: Path) -> Path:
    p.write_bytes(gzip.compress(_jsonl(CHAT).encode()))
    return p


def _parquet(p: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(CHAT), p)
    return p


def _arrow(stream: bool) -> Callable[[Path], Path]:
    def write(p: Path) -> Path:
        import pyarrow as pa

        table = pa.Table.from_pylist(PC)
        with (pa.ipc.new_stream if stream else pa.ipc.new_file)(str(p), table.schema) as w:
            w.write_table(table)
        return p

    return write


def _dataset(split_dict: bool) -> Callable[[Path], Path]:
    def write(p: Path) -> Path:
        import datasets

        ds = datasets.Dataset.from_list(CHAT)
        (datasets.DatasetDict({"train": ds, "test": ds}) if split_dict else ds).save_to_disk(str(p))
        return p

    return write


# name -> (file name, writer, --columns, the format `check` reports)
KINDS: dict[str, tuple[str, Callable[[Path], Path], str | None, str]] = {
    "jsonl.gz": ("d.jsonl.gz", _gz, None, "chat"),
    "json array": ("d.json", _write(json.dumps(PC, indent=2)), None, "prompt_completion"),
    "csv --columns": (
        "d.csv",
        _write('question,answer\n"Where is my parcel?","It ships today."\n"Can I pay by card?",Yes\nHi,Hello!\n'),
        "prompt=question,completion=answer",
        "prompt_completion",
    ),
    "tsv": ("d.tsv", _write("prompt\tcompletion\n" + "".join(f"{q}\t{a}\n" for q, a in QA)), None, "prompt_completion"),
    "parquet": ("d.parquet", _parquet, None, "chat"),
    "arrow file": ("d.arrow", _arrow(stream=False), None, "prompt_completion"),
    "arrow stream": ("d.arrow", _arrow(stream=True), None, "prompt_completion"),
    "datasets folder": ("ds", _dataset(split_dict=False), None, "chat"),
    "DatasetDict folder": ("dd", _dataset(split_dict=True), None, "chat"),
    "sharegpt": ("d.jsonl", _write(_jsonl(SHAREGPT)), None, "sharegpt"),
    "human/gpt messages": (
        "d.jsonl",
        _write(_jsonl([{"messages": [{"role": "human", "content": q}, {"role": "gpt", "content": a}]} for q, a in QA])),
        None,
        "sharegpt",
    ),
    "alpaca history": (
        "d.jsonl",
        _write(_jsonl([{"instruction": q, "output": a, "history": [["Hello", "Hi, how can I help?"]]} for q, a in QA])),
        None,
        "alpaca",
    ),
    "trl conversational": (
        "d.jsonl",
        _write(
            _jsonl(
                [
                    {"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": a}]}
                    for q, a in QA
                ]
            )
        ),
        None,
        "prompt_completion",
    ),
    "text": ("d.jsonl", _write(_jsonl([{"text": f"{q} {a} " * 30} for q, a in QA])), None, "text"),
}


def cli(capsys, *argv: object) -> tuple[int, str, str]:
    from tunesmith.cli.main import main

    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_checks_and_trains(kind: str, tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    name, write, columns, fmt = KINDS[kind]
    data = write(tmp_path / name)
    cols = ["--columns", columns] if columns else []
    code, out, err = cli(capsys, "check", data, *cols, "--model", tiny_model_dir, "--format", "json", "--no-estimate")
    report = json.loads(out)
    assert code == 0, (kind, report["findings"], err)
    assert report["files"][0]["format"] == fmt and report["files"][0]["valid_rows"] == len(QA) + (kind == "sharegpt")
    run = tmp_path / "run"
    argv = ["train", "--data", data, *cols, "--model", tiny_model_dir, "--out", run, "--max-steps", "1"]
    code, out, err = cli(capsys, *argv, "--batch-size", "2", "--lora-r", "2", "--max-len", "128", "--no-compile")
    assert code == 0, (kind, out, err)
    info = json.loads((run / "run.json").read_text())
    assert info["steps"] == 1 and info["counts"]["train"]["kept"] >= len(QA)


def test_a_datasetdict_reads_train_and_says_so(tmp_path: Path, monkeypatch, capsys) -> None:
    from tunesmith import console

    monkeypatch.setattr(console, "quiet", lambda: False)
    parsed = parse_file(_dataset(split_dict=True)(tmp_path / "dd"))
    assert parsed.format == "chat" and len(parsed.examples) == len(QA)
    assert "DatasetDict (train, test): reading its 'train' split" in capsys.readouterr().out


def test_table_rows_are_numbered_and_nulls_are_absent(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "a", "completion": "b", "system": None}, {"prompt": "c", "completion": None, "system": "s"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    parsed = parse_file(tmp_path / "t.parquet")
    assert [str(p) for p in parsed.problems] == [
        f"{tmp_path / 't.parquet'}:2: unknown key(s) ['system'] for prompt_completion format"
    ]
    assert parsed.examples[0].source.endswith("t.parquet:1"), "a null cell is an absent key, rows count from 1"
    evaluation = parse_file(tmp_path / "t.parquet", require_reply=False)
    assert len(evaluation.examples) == 1  # (row 2's system column is still a key prompt/completion lacks)


def test_csv_lines_and_columns(tmp_path: Path) -> None:
    f = tmp_path / "d.csv"
    f.write_text('q;a\n"two\nlines";x\nbad row\n;\nlast;y\n', encoding="utf-8")
    parsed = parse_file(f, columns={"prompt": "q", "completion": "a"})
    assert [e.meta["line"] for e in parsed.examples] == [2, 6], "a quoted newline keeps the next row's line"
    assert [(p.line, p.code) for p in parsed.problems] == [(4, "bad-row")]
    with pytest.raises(
        DataError, match=r"--columns names the column 'question', which the file lacks \(columns: q, a\)"
    ):
        read_examples(f, columns={"prompt": "question"})
    with pytest.raises(DataError, match=r"no column is one a row format reads .*--columns prompt=q,completion=a"):
        read_examples(f)


def test_a_broken_json_array_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "d.json"
    f.write_text('[\n  {"prompt": "a", "completion": "b"},\n  {"prompt": "c", "completion": }\n]', encoding="utf-8")
    parsed = parse_file(f)
    assert len(parsed.examples) == 1 and [(p.line, p.code) for p in parsed.problems] == [(3, "invalid-json")]


def test_sharegpt_tools_and_roles_become_chat(tmp_path: Path) -> None:
    conv = read_examples(write_jsonl(tmp_path / "s.jsonl", SHAREGPT[:1])).examples[0]
    assert [m.role for m in conv.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert conv.messages[2].tool_calls[0].name == "track" and conv.messages[3].tool_call_id == "call_1"
    assert conv.tools == [{"type": "function", "function": TOOL}]
    bad = [
        {"conversations": [{"from": "human", "value": "a"}, {"from": "observation", "value": "b"}]},
        {"conversations": [{"from": "robot", "value": "a"}]},
        {"conversations": [{"from": "human", "value": "a"}, {"from": "function_call", "value": "not json"}]},
    ]
    problems = parse_file(write_jsonl(tmp_path / "bad.jsonl", bad)).problems
    assert [p.code for p in problems] == ["tool-result-without-call", "unknown-role", "bad-tool-call"]


def test_trl_conversational_trains_only_the_completion(tmp_path: Path) -> None:
    row = {
        "prompt": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ],
        "completion": [{"role": "assistant", "content": "d"}],
    }
    conv = read_examples(write_jsonl(tmp_path / "t.jsonl", [row])).examples[0]
    assert [m.weight for m in conv.messages if m.role == "assistant"] == [0, 1]


def test_text_rows_train_every_token_and_long_documents_are_cut(tokenizer) -> None:
    from tunesmith.data.render import IGNORE, Renderer
    from tunesmith.data.shapes import text_row

    renderer = Renderer(tokenizer, max_len=64)
    doc = text_row({"text": "The quick brown fox jumps over the lazy dog. " * 40})
    whole = renderer.render(doc)
    assert whole.labels == whole.input_ids and IGNORE not in whole.labels
    assert whole.input_ids[-1] == tokenizer.eos_token_id and "<|im_start|>" not in tokenizer.decode(whole.input_ids)
    rows, stats = renderer.render_all([doc])
    assert stats.dropped_overlong == 0 and len(rows) == stats.kept == -(-len(whole.input_ids) // 64)
    assert [t for r in rows for t in r.input_ids] == whole.input_ids and all(len(r.input_ids) <= 64 for r in rows)


def test_text_rows_are_packed_to_max_len(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tunesmith.config import load_config
    from tunesmith.train.pipeline import run_training

    data = write_jsonl(
        tmp_path / "docs.jsonl", [{"text": f"Document {i}. " + "words " * (5 + 3 * i)} for i in range(8)]
    )
    cfg = load_config(
        None,
        {
            "model": {"name": str(tiny_model_dir)},
            "data": {"train": str(data), "max_len": 64, "val_split": 0.0},
            "lora": {"r": 2},
            "train": {"max_steps": 1, "batch_size": 8, "precision": "fp32", "compile": False},
        },
    )
    result = run_training(cfg, tmp_path / "run")
    assert result.config.train.pack_len == 64
    assert any("packed into rows of 64 tokens" in r for r in result.summary.choices)
    assert result.summary.trained_tokens_seen > 0


def test_eval_and_bakeoff_take_columns(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    data = KINDS["csv --columns"][1](tmp_path / "d.csv")
    cols = ["--columns", "prompt=question,completion=answer"]
    run = tmp_path / "run"
    common = ["--model", tiny_model_dir, "--max-steps", "1", "--lora-r", "2", "--no-compile"]
    code, _, err = cli(capsys, "train", "--data", data, *cols, "--out", run, *common)
    assert code == 0, err
    code, _, err = cli(capsys, "eval", run, "--data", data, *cols, "--max-tokens", "4")
    assert code == 0, err
    report = json.loads((run / "eval" / "eval.json").read_text())
    assert report["rows"] == len(QA) and report["rows_detail"][0]["reference"] == QA[0][1]
    out_dir = tmp_path / "bake"
    argv = ["bakeoff", "--train", data, "--test", data, *cols, "--methods", "prompt", "--model", tiny_model_dir]
    code, _, err = cli(capsys, *argv, "--max-tokens", "4", "--latency-samples", "1", "--out", out_dir)
    assert code == 0, err
    code, _, err = cli(capsys, "eval", run, "--data", data, "--columns", "promt=question")
    assert code == 2 and "'promt' is not a key any row format reads" in err and len(err.strip().splitlines()) == 1


def test_text_rows_evaluate_as_continuations(tmp_path: Path) -> None:
    from tunesmith.eval.rows import load_rows

    words = " ".join(f"w{i}" for i in range(200))
    rows = load_rows(write_jsonl(tmp_path / "t.jsonl", [{"text": words}]))
    assert rows[0].prompt[0]["content"] == " ".join(f"w{i}" for i in range(100))
    assert rows[0].reference == " ".join(f"w{i}" for i in range(100, 164))


def _zip(member: str) -> Callable[[Path], Path]:
    def write(p: Path) -> Path:
        with zipfile.ZipFile(p, "w") as z:
            z.writestr(member, "<x/>")
        return p

    return write


def _bytes(data: bytes) -> Callable[[Path], Path]:
    return lambda p: (p.write_bytes(data), p)[1]


UNSUPPORTED = {
    "a.pdf": (_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj"), "a PDF document"),
    "sheet.xlsx": (_zip("xl/workbook.xml"), "an Excel workbook (.xlsx); save the sheet as CSV"),
    "bundle.zip": (_zip("train.jsonl"), "a zip archive of 1 file(s); extract it first"),
    "page.jsonl": (_bytes(b"<!DOCTYPE html><html><body>Not found</body></html>"), "an HTML page"),
    "stream.jsonl": (lambda p: _arrow(stream=True)(p), "Arrow stream data without an .arrow name"),
    "broken.arrow": (_bytes(b"\x00\x01\x02not arrow at all" * 10), "not a readable Arrow (IPC file or stream) file"),
    "broken.parquet": (_bytes(b"PAR1 truncated"), "not a readable Parquet file"),
    "folder": (lambda p: (p.mkdir(), (p / "x.txt").write_text("x"), p)[2], "is a folder, not a file nor"),
}


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_an_unsupported_file_is_one_line_naming_what_it_looks_like(
    name: str, tmp_path: Path, tiny_model_dir: Path, capsys
) -> None:
    write, expected = UNSUPPORTED[name]
    f = write(tmp_path / name)
    code, out, err = cli(capsys, "check", f, "--model", tiny_model_dir, "--no-estimate")
    assert code == 2 and expected in out + err and "UTF-16" not in out + err, out + err
    assert "Traceback" not in out + err


def test_an_arrow_file_with_any_name_is_read_not_called_utf16(tmp_path: Path) -> None:
    f = _arrow(stream=False)(tmp_path / "d.jsonl")  # ARROW1 magic: the bytes say what it is
    assert parse_file(f).format == "prompt_completion"


def test_a_bad_columns_flag_is_one_config_line(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", PC)
    code, _, err = cli(capsys, "check", data, "--columns", "prompt", "--model", tiny_model_dir)
    assert code == 2 and "KEY=COLUMN pairs" in err and len(err.strip().splitlines()) == 1
