"""The CLI as a user meets it: a real subprocess, exit codes, one-line errors, no tracebacks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import chat_rows, write_jsonl


def tunesmith(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "tunesmith", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def assert_user_error(proc: subprocess.CompletedProcess, expected: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert expected in " ".join(proc.stderr.split()), proc.stderr


def test_help_is_fast_and_lists_commands() -> None:
    proc = tunesmith("--help")
    assert proc.returncode == 0
    for cmd in ("train", "generate", "chat", "demo"):
        assert cmd in proc.stdout


def bad_inputs(tmp: Path, tiny: Path) -> list[tuple[list[str], str]]:
    ok = write_jsonl(tmp / "ok.jsonl", chat_rows(4))
    empty = tmp / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    roles = write_jsonl(tmp / "roles.jsonl", [{"messages": [{"role": "robot", "content": "hi"}]}])
    no_reply = write_jsonl(tmp / "noreply.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    latin1 = tmp / "latin1.jsonl"
    latin1.write_bytes('{"prompt": "café", "completion": "ok"}\n'.encode("latin-1"))
    cfg = tmp / "bad.yaml"
    cfg.write_text("train:\n  epochs: many\n", encoding="utf-8")
    base = ["train", "--model", str(tiny), "--out", str(tmp / "run")]
    return [
        ([*base, "--data", str(tmp / "missing.jsonl")], "missing.jsonl: file not found"),
        ([*base, "--data", str(empty)], "empty.jsonl: the file is empty"),
        ([*base, "--data", str(roles)], "roles.jsonl:1: message 1 has unknown role 'robot'"),
        ([*base, "--data", str(no_reply)], "noreply.jsonl:1: no assistant reply to train on"),
        ([*base, "--data", str(latin1)], "latin1.jsonl:1: not valid UTF-8"),
        ([*base, "--data", str(ok), "--config", str(cfg)], "train.epochs: Input should be a valid integer"),
        (
            ["train", "--model", "no-such-model", "--data", str(ok), "--out", str(tmp / "r")],
            "unknown model 'no-such-model'",
        ),
        ([*base, "--data", str(ok), "--method", "qlora"], "train.method"),
        (["generate", str(tmp / "nowhere"), "--prompt", "hi"], "unknown model"),
        (["generate", str(tiny), "--prompt", "hi", "--precision", "fp16"], "precision 'fp16': use one of auto"),
    ]


def test_bad_input_exits_2_with_one_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    for args, expected in bad_inputs(tmp_path, tiny_model_dir):
        proc = tunesmith(*args)
        assert_user_error(proc, expected)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not (tmp_path / "run" / "run.json").exists()


def test_train_generate_round_trip(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", chat_rows(16))
    out = tmp_path / "run"
    proc = tunesmith(
        "train",
        "--data",
        str(data),
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
        "--max-steps",
        "3",
        "--lora-r",
        "4",
        "--val-split",
        "0.25",
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads((out / "run.json").read_text())
    assert info["steps"] == 3 and info["counts"]["val"]["kept"] == 4
    # A second train into the same folder refuses instead of clobbering it...
    again = tunesmith("train", "--data", str(data), "--model", str(tiny_model_dir), "--out", str(out))
    assert_user_error(again, "already holds a finished run")
    # ...and the run generates, batched.
    gen = tunesmith("generate", str(out), "-p", "Paint the car red", "-p", "Paint the boat blue", "--max-tokens", "5")
    assert gen.returncode == 0, gen.stderr
    assert "> Paint the boat blue" in gen.stdout


@pytest.mark.parametrize("flag", ["--resume"])
def test_resume_without_a_run_is_a_user_error(tmp_path: Path, tiny_model_dir: Path, flag: str) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", chat_rows(4))
    proc = tunesmith("train", "--data", str(data), "--model", str(tiny_model_dir), "--out", str(tmp_path / "x"), flag)
    assert_user_error(proc, "nothing to resume")
