"""The dataset doctor: every problem reported once, with its file, line and exit code; and the estimate."""

import copy
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunesmith.data.checks import check_dataset
from tunesmith.demo import dataset_path

from .conftest import chat_rows, run_cli, write_jsonl

EOS = 2  # <|im_end|>: the tiny model's generation EOS, as `train` would pass it


def chat(user: str, reply: str, system: str | None = None) -> dict:
    msgs = [{"role": "system", "content": system}] if system else []
    return {"messages": [*msgs, {"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


def check(tokenizer, train: Path, val: Path | None = None, **kw):
    return check_dataset(train, val, tokenizer=tokenizer, stop_token_ids=[EOS], **kw)


def codes(report) -> list[tuple[str, int]]:
    return [(f.code, f.line) for f in report.findings]


def tunesmith(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "tunesmith", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


# -- one bad row per problem -----------------------------------------------------------------------------
GOOD = {
    "chat": chat("Where is my parcel?", "It ships today."),
    "pc": {"prompt": "Where is my parcel?", "completion": "It ships today."},
    "alpaca": {"instruction": "Where is my parcel?", "output": "It ships today."},
}
U, A = {"role": "user", "content": "Is it raining?"}, {"role": "assistant", "content": "No."}
BAD_ROWS = [
    # OpenAI's fine-tuning data checks, for the chat format
    ("chat", [1, 2], "not-object", "not an object"),
    ("chat", "just a string", "not-object", "not an object"),
    ("chat", {"messages": []}, "missing-messages", "'messages' is empty"),
    ("chat", {"messages": "hi"}, "missing-messages", "must be a list"),
    ("chat", {"messages": [U, A], "mesages": 7}, "unknown-key", "did you mean 'messages' for 'mesages'?"),
    ("chat", {"messages": [{"rol": "user", "content": "x"}, A]}, "unknown-key", "did you mean 'role' for 'rol'?"),
    ("chat", {"messages": [U, A], "prompt": "x"}, "unknown-key", "unknown key(s) ['prompt'] for chat format"),
    ("chat", {"messages": [{**U, "mood": "bob"}, A]}, "unknown-key", "unknown key(s) ['mood']"),
    ("chat", {"messages": [{"role": "robot", "content": "x"}, A]}, "unknown-role", "unknown role 'robot'"),
    ("chat", {"messages": [{"content": "x"}, A]}, "unknown-role", "unknown role None"),
    ("chat", {"messages": [U, {"role": "assistant", "content": None}]}, "missing-content", "no text content"),
    ("chat", {"messages": [U, {"role": "assistant"}]}, "missing-content", "no text content"),
    ("chat", {"messages": [{"role": "user", "content": " \n"}, A]}, "empty-content", "empty content"),
    ("chat", {"messages": [U, {"role": "assistant", "content": "\t "}]}, "empty-reply", "empty content"),
    ("chat", {"messages": [U]}, "no-assistant", "no assistant reply"),
    ("chat", {"messages": [U, {**A, "weight": 2}]}, "bad-weight", "weight must be 0 or 1"),
    ("chat", {"messages": [U, {**A, "weight": 0.5}]}, "bad-weight", "weight must be 0 or 1"),
    ("chat", {"messages": [{**U, "weight": 1}, A]}, "bad-weight", "only assistant messages take one"),
    ("chat", {"messages": [U, {**A, "weight": 0}]}, "all-weights-zero", "nothing would be trained"),
    ("chat", {"messages": [A, U]}, "role-order", "must start with a user message"),
    ("chat", {"messages": [U, U, A]}, "role-order", "two user messages in a row"),
    ("chat", {"messages": [U, {"role": "system", "content": "x"}, A]}, "role-order", "may only come first"),
    ("chat", {"messages": ["hi", A]}, "bad-message", "message 1 is not an object"),
    ("chat", {"hello": 1}, "unknown-format", "none of the keys of a known format"),
    ("chat", {"prompt": "a", "completion": "b"}, "format-mismatch", "prompt_completion format"),
    ("chat", {"messages": [{"role": "user", "content": "\ud800"}, A]}, "invalid-unicode", "lone surrogate"),
    ("chat", b'{"messages": [', "invalid-json", "not valid JSON"),
    ("chat", b'{"messages": ' * 3000, "invalid-json", "JSON nested too deeply"),
    ("chat", b'{"n": ' + b"9" * 5000 + b"}", "invalid-json", "not valid JSON"),
    ("chat", b'{"prompt": "caf\xe9"}', "invalid-utf8", "not valid UTF-8"),
    # content the tokenizer would misread
    ("chat", chat("Hi", "Done.<|im_end|> more"), "special-tokens", "contains the special token '<|im_end|>'"),
    ("chat", chat("See <filename> here", "ok"), "special-tokens", "the user message (message 1)"),
    # the same checks for the prompt/completion and alpaca formats
    ("pc", {"prompt": "a"}, "missing-content", "'completion' is missing"),
    ("pc", {"prompt": "a", "completion": "  "}, "empty-reply", "'completion' is empty"),
    ("pc", {"prompt": 5, "completion": "b"}, "bad-type", "'prompt' must be a string"),
    ("pc", {"prompt": "a", "completion": "b", "promt": 1}, "unknown-key", "did you mean 'prompt' for 'promt'?"),
    ("pc", {"messages": [U, A]}, "format-mismatch", "chat format but the file is in prompt_completion"),
    ("alpaca", {"instruction": "a", "output": ""}, "empty-reply", "'output' is empty"),
    ("alpaca", {"instruction": "a"}, "missing-content", "'output' is missing"),
    ("alpaca", {"instruction": " ", "output": "x"}, "empty-content", "'instruction' is empty"),
    ("alpaca", {"instruction": "a", "output": "b", "histroy": []}, "unknown-key", "did you mean 'history'"),
    ("alpaca", {"instruction": "a", "input": 3, "output": "b"}, "bad-type", "'input' must be a string"),
]


@pytest.mark.parametrize(("fmt", "row", "code", "message"), BAD_ROWS, ids=[f"{c[0]}-{c[2]}" for c in BAD_ROWS])
def test_each_problem_is_reported_with_its_line_and_exit_code(
    tmp_path: Path, tokenizer, fmt: str, row: object, code: str, message: str
) -> None:
    bad = row if isinstance(row, bytes) else json.dumps(row).encode()
    f = tmp_path / "bad.jsonl"
    # A blank line before the bad row: line numbers must match the editor's.
    f.write_bytes(json.dumps(GOOD[fmt]).encode() + b"\n\n" + bad + b"\n")
    report = check(tokenizer, f)
    assert codes(report) == [(code, 3)], [str(x) for x in report.findings]
    found = report.findings[0]
    assert message in found.message and found.file == str(f) and found.severity == "error"
    assert report.exit_code() == 2 and report.exit_code(strict=True) == 2


def test_a_template_that_cannot_render_a_row_is_an_error(tmp_path: Path, tokenizer) -> None:
    strict_template = copy.deepcopy(tokenizer)
    strict_template.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    f = write_jsonl(tmp_path / "t.jsonl", [chat("a", "b"), chat("c", "d", system="Be brief.")])
    report = check(strict_template, f)
    assert codes(report) == [("template", 2)]
    assert "System role not supported" in report.findings[0].message


def test_a_tokenizer_without_a_stop_token_is_an_error(tmp_path: Path, tokenizer) -> None:
    no_eos = copy.deepcopy(tokenizer)
    no_eos.eos_token = None
    # (ChatML's <|im_end|> would still be a stop: the template's end-of-turn is one, see models/stops.py.)
    no_eos.chat_template = (
        "{% for m in messages %}{{ m['role'] + ':\n' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant:\n' }}{% endif %}"
    )
    f = write_jsonl(tmp_path / "t.jsonl", [chat("a", "b"), chat("c", "d")])
    report = check_dataset(f, tokenizer=no_eos)
    assert codes(report) == [("no-stop-token", 1)]
    assert "never learn to stop" in report.findings[0].message and "2 row(s)" in report.findings[0].message


# -- bad files: one line each, never a traceback ----------------------------------------------------------
BAD_FILES = [
    ("random.jsonl", os.urandom(4096), "binary", "binary data"),
    ("huge.jsonl", b'{"prompt": "' + b"a" * (50 << 20) + b'", "completion": "b"}\n', "line-too-long", "50.0 MB"),
    ("utf16.jsonl", (json.dumps(GOOD["pc"]) + "\n").encode("utf-16"), "utf16", "UTF-16"),
    ("utf16le.jsonl", (json.dumps(GOOD["pc"]) + "\n").encode("utf-16-le"), "utf16", "UTF-16"),
    ("array.jsonl", json.dumps([GOOD["pc"], GOOD["pc"]], indent=2).encode(), "json-array", "one JSON array"),
    ("pretty.jsonl", json.dumps(GOOD["chat"], indent=2).encode(), "json-object", "one JSON object"),
    ("data.jsonl", b"prompt,completion\nWhere is it?,Here.\nWho?,Me.\n", "csv", "looks like CSV"),
    ("empty.jsonl", b"", "empty-file", "the file is empty"),
    ("blank.jsonl", b"\n  \n\r\n", "empty-file", "the file is empty"),
]


@pytest.mark.parametrize(("name", "content", "code", "message"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_files_are_one_line_and_exit_2(
    tmp_path: Path, capsys, tiny_model_dir: Path, name: str, content: bytes, code: str, message: str
) -> None:
    f = tmp_path / name
    f.write_bytes(content)
    rc, out, err = run_cli(capsys, "check", str(f), "--model", str(tiny_model_dir), "--format", "json")
    assert rc == 2 and "Traceback" not in out + err
    report = json.loads(out)
    assert [(x["code"], x["line"]) for x in report["findings"]] == [(code, 1 if code == "line-too-long" else 0)]
    assert message in report["findings"][0]["message"]
    rc, out, _ = run_cli(capsys, "check", str(f), "--model", str(tiny_model_dir), "--no-estimate")
    assert rc == 2
    assert sum(1 for line in out.splitlines() if line.startswith(f"  {f}")) == 1, out


def test_missing_file_is_a_one_line_user_error(tmp_path: Path, capsys, tiny_model_dir: Path) -> None:
    rc, _, err = run_cli(capsys, "check", str(tmp_path / "nope.jsonl"), "--model", str(tiny_model_dir))
    assert rc == 2 and err.strip().endswith("nope.jsonl: file not found") and len(err.strip().splitlines()) == 1


# -- duplicates, near-duplicates, conflicts, leakage -------------------------------------------------------
LONG = (
    "My order of the blue ceramic teapot arrived with a cracked lid and the box was soaked, so I would like "
    "a replacement sent to the same address as soon as possible, thank you for your help with this"
)


def test_duplicates_ignore_whitespace_and_are_reported_once(tmp_path: Path, tokenizer) -> None:
    rows = [chat("Hello  there", "Hi!"), chat("Hello there\n", "Hi!"), chat("Hello there", " Hi! "), chat("x", "y")]
    report = check(tokenizer, write_jsonl(tmp_path / "d.jsonl", rows))
    assert codes(report) == [("duplicate", 2), ("duplicate", 3)]
    assert report.findings[0].message == "duplicate of line 1" and report.findings[0].related.endswith(":1")
    assert report.exit_code() == 0 and report.exit_code(strict=True) == 1


def test_conflicting_replies(tmp_path: Path, tokenizer) -> None:
    rows = [chat("Classify: great product", "positive"), chat("Classify: great product", "negative")]
    report = check(tokenizer, write_jsonl(tmp_path / "c.jsonl", rows))
    assert codes(report) == [("conflict", 2)] and "same prompt as line 1" in report.findings[0].message


def test_near_duplicates_follow_the_threshold(tmp_path: Path, tokenizer) -> None:
    near = LONG.replace("blue", "green")  # one word of 40 changed: word-trigram similarity ~0.86
    rows = [chat(LONG, "Sorry, a new teapot is on its way."), chat("Where is my parcel?", "It ships today.")]
    rows.append(chat(near, "Sorry, a new teapot is on its way."))
    f = write_jsonl(tmp_path / "n.jsonl", rows)
    report = check(tokenizer, f, near_threshold=0.8)
    assert codes(report) == [("near-duplicate", 3)]
    assert report.findings[0].related.endswith(":1") and "similarity 0.8" in report.findings[0].message
    assert codes(check(tokenizer, f, near_threshold=0.95)) == []


def test_a_shared_system_prompt_does_not_make_rows_similar(tmp_path: Path, tokenizer) -> None:
    system = " ".join(f"rule {i}: answer politely and briefly." for i in range(60))
    rows = [chat(f"Question {q} about {t}?", f"Answer {q}.", system=system) for q, t in enumerate(["cats", "tax"])]
    assert codes(check(tokenizer, write_jsonl(tmp_path / "s.jsonl", rows))) == []


def test_leakage_exact_and_near(tmp_path: Path, tokenizer) -> None:
    train = write_jsonl(
        tmp_path / "train.jsonl",
        [chat("Where is my parcel?", "It ships today."), chat(LONG, "A new teapot is on its way."), chat("a", "b")],
    )
    val = write_jsonl(
        tmp_path / "val.jsonl",
        [
            chat("Where is my parcel?", "It ships today."),  # the same row
            chat("c", "d"),
            chat("Where is my parcel?", "Tomorrow."),  # the same prompt: the test input was trained on
            chat(LONG.replace("blue", "green"), "A new teapot is on its way."),  # near
        ],
    )
    report = check(tokenizer, train, val)
    assert codes(report) == [("leak", 1), ("conflict", 3), ("leak", 3), ("near-leak", 4)]
    by_line = {(f.code, f.line): f for f in report.findings}
    assert by_line[("leak", 1)].message == f"the same row is in the training data ({train}:1)"
    assert by_line[("leak", 3)].message.startswith("the same prompt is in the training data")
    assert by_line[("near-leak", 4)].related == f"{train}:2" and by_line[("leak", 1)].file == str(val)
    assert report.exit_code() == 2  # exact leakage spoils every number the evaluation reports


# -- tokens ---------------------------------------------------------------------------------------------------
def test_overlong_rows_follow_the_training_policy(tmp_path: Path, tokenizer) -> None:
    rows = [chat("hi", "ok"), chat("word " * 200, "ok"), chat("hello", "long " * 200)]
    f = write_jsonl(tmp_path / "o.jsonl", rows)
    drop = check(tokenizer, f, max_len=64)
    assert codes(drop) == [("overlong", 2), ("overlong", 3)] and "training drops this row" in drop.findings[0].message
    assert drop.files[0].stats.dropped_overlong == 2 and drop.files[0].stats.kept == 1
    assert drop.files[0].histogram()[-1] == {"lo": 65, "hi": None, "count": 2}
    cut = check(tokenizer, f, max_len=64, overlong="truncate")
    # Row 2's prompt alone is longer than max_len: cut there, no trained token is left.
    assert codes(cut) == [("untrained", 2), ("overlong", 3)]
    assert "stop token are not trained" in cut.findings[1].message
    assert cut.files[0].stats.truncated == 1 and cut.files[0].stats.dropped_untrained == 1
    error = check(tokenizer, f, max_len=64, overlong="error")
    assert [(x.code, x.line, x.severity) for x in error.findings][:1] == [("overlong", 2, "error")]


def test_token_statistics_match_the_renderer(tmp_path: Path, tokenizer) -> None:
    from tunesmith.data.formats import read_examples
    from tunesmith.data.render import Renderer

    f = write_jsonl(tmp_path / "t.jsonl", chat_rows(12))
    max_len = sorted(check(tokenizer, f).files[0].lengths)[6]  # about half the rows are longer
    report = check(tokenizer, f, max_len=max_len)
    _, stats = Renderer(tokenizer, max_len=max_len, stop_token_ids=[EOS]).render_all(read_examples(f).examples)
    assert report.files[0].stats.as_dict() == stats.as_dict() and 0 < stats.kept < 12
    assert len(report.kept_lengths) == stats.kept and all(n <= max_len for n in report.kept_lengths)
    assert sum(b["count"] for b in report.files[0].histogram()) == 12


# -- the masking view ---------------------------------------------------------------------------------------
def test_show_marks_the_trained_tokens_and_the_stop_token(tmp_path: Path, capsys, tiny_model_dir: Path) -> None:
    f = write_jsonl(tmp_path / "m.jsonl", [chat("Where is my parcel?", "It ships today.")])
    rc, out, _ = run_cli(capsys, "check", str(f), "--model", str(tiny_model_dir), "--show", "1", "--no-estimate")
    assert rc == 0
    assert "<|im_start|>assistant\n⟦It ships today.<|im_end|>⟧\n" in out  # plain output: markers, not colour
    assert "loss on tokens" in out and "stop token '<|im_end|>' is trained" in out


def test_show_warns_loudly_when_a_row_trains_nothing(tmp_path: Path, capsys, tiny_model_dir: Path) -> None:
    f = write_jsonl(tmp_path / "u.jsonl", [chat("word " * 100, "ok")])
    args = ["check", str(f), "--model", str(tiny_model_dir), "--show", "1", "--no-estimate"]
    rc, out, _ = run_cli(capsys, *args, "--max-len", "32", "--overlong", "truncate")
    assert "NO TOKEN OF THIS ROW IS TRAINED" in out and "⟦" not in out
    assert rc == 0 and "untrained (1)" in out
    rc, out, _ = run_cli(capsys, *args, "--max-len", "32", "--overlong", "truncate", "--strict")
    assert rc == 1


# -- the whole command --------------------------------------------------------------------------------------
def mixed_files(tmp: Path) -> tuple[Path, Path, list[tuple[str, str, int]]]:
    """One training file with every problem (and a validation file with the leaks); the expected findings."""
    lines: list[object] = [
        chat("Where is my parcel?", "It ships today."),  # 1
        [1, 2],  # 2 not-object
        {"messages": []},  # 3 missing-messages
        {"messages": [U, A], "mesages": 3},  # 4 unknown-key (a typo: metadata keys such as "id" are kept)
        {"messages": [{"role": "bot", "content": "x"}, A]},  # 5 unknown-role
        {"messages": [U, {"role": "assistant", "content": None}]},  # 6 missing-content
        {"messages": [{"role": "user", "content": ""}, A]},  # 7 empty-content
        {"messages": [U]},  # 8 no-assistant
        {"messages": [U, {**A, "weight": 2}]},  # 9 bad-weight
        {"messages": [A, U, A]},  # 10 role-order
        {"messages": [U, {"role": "assistant", "content": "  "}]},  # 11 empty-reply
        chat("Where is my parcel?", "It ships today."),  # 12 duplicate of 1
        chat(LONG, "Sorry, a new teapot is on its way."),  # 13
        chat(LONG.replace("blue", "green"), "Sorry, a new teapot is on its way."),  # 14 near-duplicate of 13
        chat("Classify: the lid was cracked", "complaint"),  # 15
        chat("Classify: the lid was cracked", "praise"),  # 16 conflict with 15
        chat("Say goodbye", "Bye!<|im_end|>"),  # 17 special-tokens
        chat("Summarise this log", "entry " * 150),  # 18 overlong (cut: the reply's end is lost)
        b'{"messages": [{"role": "user", ',  # 19 invalid-json
        chat("log line " * 60, "done"),  # 20 untrained: the prompt alone is longer than max_len
        {"prompt": "a", "completion": "b"},  # 21 format-mismatch
        {"messages": [U, {**A, "weight": 0}]},  # 22 all-weights-zero
        chat("Is the shop open on Sunday?", "Yes, 10 to 4."),  # 23
    ]
    train = tmp / "train.jsonl"
    train.write_bytes(b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines))
    val = write_jsonl(
        tmp / "val.jsonl",
        [
            chat("Is the shop open on Sunday?", "No."),  # 1 leak (same prompt as train 23)
            chat(LONG.replace("teapot", "kettle"), "Sorry, a new teapot is on its way."),  # 2 near-leak of train 13
            chat("Do you ship abroad?", "Yes."),  # 3
        ],
    )
    t, v = str(train), str(val)
    expected = [
        (t, "not-object", 2),
        (t, "missing-messages", 3),
        (t, "unknown-key", 4),
        (t, "unknown-role", 5),
        (t, "missing-content", 6),
        (t, "empty-content", 7),
        (t, "no-assistant", 8),
        (t, "bad-weight", 9),
        (t, "role-order", 10),
        (t, "empty-reply", 11),
        (t, "duplicate", 12),
        (t, "near-duplicate", 14),
        (t, "conflict", 16),
        (t, "special-tokens", 17),
        (t, "overlong", 18),
        (t, "invalid-json", 19),
        (t, "untrained", 20),
        (t, "format-mismatch", 21),
        (t, "all-weights-zero", 22),
        (v, "leak", 1),
        (v, "near-leak", 2),
    ]
    return train, val, expected


def test_a_file_with_every_problem_reports_each_once(tmp_path: Path, capsys, tiny_model_dir: Path) -> None:
    train, val, expected = mixed_files(tmp_path)
    args = ["check", str(train), "--val", str(val), "--model", str(tiny_model_dir), "--max-len", "128"]
    proc = tunesmith(*args, "--overlong", "truncate", "--format", "json", "--no-estimate")
    assert proc.returncode == 2, proc.stderr
    report = json.loads(proc.stdout)  # stdout is the JSON document and nothing else
    got = sorted((f["file"], f["code"], f["line"]) for f in report["findings"])
    assert got == sorted(expected)
    assert report["exit_code"] == 2 and report["errors"] == 15 and report["warnings"] == 6
    assert report["estimate"] is None
    # The text report lists the same findings, and the estimate runs on the rows training would keep.
    rc, out, err = run_cli(capsys, *args, "--overlong", "truncate", "--price-per-hour", "2.5")
    assert rc == 2 and "Traceback" not in out + err
    for file, code, line in expected:
        assert f"  {file}:{line}: " in out, (code, line)
    assert "✗ 15 error(s), 6 warning(s)" in out
    assert "Pre-flight estimate" in out and "the whole run at 2.5 per hour" in out and "│ lora " in out


def test_the_demo_data_is_clean() -> None:
    data = dataset_path()
    proc = tunesmith("check", str(data / "train.jsonl"), "--val", str(data / "test.jsonl"), "--no-estimate")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "✓ clean" in proc.stdout and "300 of 300" in proc.stdout


def test_train_refuses_on_errors_unless_skip_check(tmp_path: Path, capsys, tiny_model_dir: Path) -> None:
    from tunesmith.config import load_config
    from tunesmith.errors import DataError
    from tunesmith.train.pipeline import run_training

    rows = chat_rows(12)
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    val = write_jsonl(tmp_path / "val.jsonl", rows[:2])  # leaked
    out = tmp_path / "run"
    base = ["train", "--data", str(train), "--val", str(val), "--model", str(tiny_model_dir), "--out", str(out)]
    rc, _, err = run_cli(capsys, *base, "--max-steps", "1")
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "is in the training data" in err and "--skip-check" in err
    assert not out.exists(), "the check runs before the run folder is created"
    cfg = load_config(
        None,
        {
            "model": {"name": str(tiny_model_dir)},
            "data": {"train": str(train), "val": str(val)},
            "lora": {"r": 2},
            "train": {"max_steps": 1, "batch_size": 4},
        },
    )
    with pytest.raises(DataError, match=re.escape("val.jsonl:1: the same row is in the training data")):
        run_training(cfg, out)
    result = run_training(cfg, out, skip_check=True)
    assert result.summary.steps == 1


# -- the pre-flight estimate ---------------------------------------------------------------------------------
def test_estimate_probe_is_fast_and_measures_both_methods(tmp_path: Path, tokenizer, tiny_model_dir: Path) -> None:
    from tunesmith.config import load_config
    from tunesmith.train.estimate import estimate_training

    f = write_jsonl(tmp_path / "e.jsonl", chat_rows(40))
    report = check(tokenizer, f, max_len=256)
    cfg = load_config(None, {"model": {"name": str(tiny_model_dir)}, "data": {"train": str(f), "max_len": 256}})
    t0 = time.perf_counter()
    est = estimate_training(cfg, report.kept, report.kept_lengths, [], price_per_hour=3.0)
    assert time.perf_counter() - t0 < 60
    full, lora = est.methods
    assert (full.method, lora.method) == ("full", "lora")
    assert full.trainable_params == full.total_params > lora.trainable_params > 0
    for m in (full, lora):
        assert m.probe_steps >= 1 and m.probe_tokens_per_s > 0 and m.seconds_per_epoch > 0
        assert m.steps_per_epoch == -(-40 // m.batch_size)
        assert m.seconds_total == pytest.approx(m.seconds_per_epoch * m.epochs, abs=0.05)  # no validation data
        assert m.cost_total == pytest.approx(m.seconds_total / 3600 * 3.0, abs=1e-3)
        mem = m.memory
        assert mem["peak"] == mem["weights"] + mem["gradients"] + mem["optimizer"] + mem["activations"]
        assert mem["activations"] > 0
        # fp32 gradients, and AdamW keeps two fp32 moments per trainable weight.
        assert mem["gradients"] == 4 * m.trainable_params and mem["optimizer"] >= 8 * m.trainable_params
    assert full.memory["peak"] > lora.memory["peak"]
    assert json.loads(json.dumps(est.as_dict()))["methods"][1]["method"] == "lora"
