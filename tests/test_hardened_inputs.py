"""Nobody let in: weights load from safetensors only, model code runs only with --trust-remote-code, and
nasty data files get a one-line error and exit code 2 from `check`, `train` and `eval`, never a traceback."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunesmith.cli.main import main
from tunesmith.data.formats import FORMATS, Message, _RowError, parse_file, read_examples, row_to_messages
from tunesmith.errors import DataError, ModelError
from tunesmith.models.load import load_model

from .conftest import chat_rows, write_jsonl

SRC = Path(__file__).resolve().parents[1] / "src" / "tunesmith"


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """`tunesmith ARGS` in this process, through main(): its error handling and exit codes, as a user gets them."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
        raise SystemExit(0)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def real_cli(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tunesmith", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "400", **(env or {})},
        timeout=300,
    )


# -- loading --------------------------------------------------------------------------------------------


def test_every_torch_load_is_weights_only_and_nothing_unpickles() -> None:
    """A source audit: pickles can run code, so the package never unpickles anything it did not write as
    plain tensors (checkpoint optimizer and RNG state load with weights_only=True)."""
    calls = 0
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"torch\.load\(([^)]*)\)", text):
            calls += 1
            assert "weights_only=True" in match.group(1), f"{path}: {match.group(0)}"
        assert not re.search(r"\bpickle\.loads?\(|\bdill\b|\bjoblib\.load", text), path
        assert "use_safetensors=False" not in text and "trust_remote_code=True" not in text, path
    assert calls >= 2  # the checkpoint's optimizer.pt and rng.pt


class Payload:
    """Unpickling this runs code: exactly what a hostile pytorch_model.bin does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "the pickle ran"))


def pickle_only_model(tmp_path: Path, tiny_model_dir: Path) -> tuple[Path, Path]:
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({"weights": Payload(marker)}, folder / "pytorch_model.bin")
    return folder, marker


def test_a_pickle_only_model_is_refused_before_it_is_read(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    folder, marker = pickle_only_model(tmp_path, tiny_model_dir)
    with pytest.raises(ModelError, match=r"only as pytorch_model\.bin, a pickle .* safetensors only"):
        load_model(folder)
    code, _, err = cli(["generate", folder, "-p", "hi", "--max-tokens", "2"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "pytorch_model.bin" in err
    assert not marker.exists(), "the pickle was unpickled"


def test_a_pickle_only_adapter_is_refused(tmp_path: Path, tiny_run: Path) -> None:
    from safetensors.torch import load_file

    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    tensors = load_file(run / "adapter" / "adapter_model.safetensors")
    (run / "adapter" / "adapter_model.safetensors").unlink()
    torch.save(tensors, run / "adapter" / "adapter_model.bin")
    with pytest.raises(ModelError, match=r"adapter only as adapter_model\.bin"):
        load_model(run)


def remote_code_model(tmp_path: Path, tiny_model_dir: Path) -> tuple[Path, Path]:
    """A model folder whose config asks to run its own Python; the code leaves a marker if it ever runs."""
    folder, marker = tmp_path / "remote", tmp_path / "remote-code-ran"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "remote_llama"
    config["auto_map"] = {
        "AutoConfig": "configuration_remote.RemoteConfig",
        "AutoModelForCausalLM": "modeling_remote.RemoteForCausalLM",
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_remote.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaConfig\n\n\nclass RemoteConfig(LlamaConfig):\n    model_type = 'remote_llama'\n"
    )
    (folder / "modeling_remote.py").write_text(
        "from transformers import LlamaForCausalLM\n\nfrom .configuration_remote import RemoteConfig\n\n\n"
        "class RemoteForCausalLM(LlamaForCausalLM):\n    config_class = RemoteConfig\n"
    )
    return folder, marker


def test_model_code_runs_only_with_the_flag(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    from tunesmith.config import load_config
    from tunesmith.flags import flag_overrides

    assert load_config().model.trust_remote_code is False
    assert flag_overrides(trust_remote_code=True) == {"model": {"trust_remote_code": True}}
    folder, marker = remote_code_model(tmp_path, tiny_model_dir)
    with pytest.raises(ModelError, match=r"needs to run its own Python code.*--trust-remote-code"):
        load_model(folder)
    code, _, err = cli(["generate", folder, "-p", "hi", "--max-tokens", "2"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert not marker.exists(), "the model's code ran without --trust-remote-code"
    # With the flag, the code runs: the flag reaches the loader. (A subprocess: transformers copies the
    # code into its modules cache, which goes in tmp_path here.)
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules")}
    proc = real_cli("generate", folder, "-p", "hi", "--max-tokens", "2", "--trust-remote-code", env=env)
    assert proc.returncode == 0, proc.stderr
    assert marker.exists()


def test_export_serve_and_bakeoff_take_the_flag_too(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:
    """The load error tells the user to pass --trust-remote-code, so every command that loads a model has the
    flag, and it reaches everything that loads: here a LoRA run on a remote-code model is exported as a merged
    folder (read back by plain transformers for the parity check, which needs the code too), then served."""
    from .serve_helpers import start_server, stop_server

    folder, marker = remote_code_model(tmp_path, tiny_model_dir)
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules")}
    monkeypatch.setenv("HF_MODULES_CACHE", env["HF_MODULES_CACHE"])  # for the server's subprocess
    data = write_jsonl(tmp_path / "train.jsonl", chat_rows(16))
    run = tmp_path / "run"
    train = ["train", "--model", folder, "--data", data, "--max-steps", "1", "--out", run, "--skip-check"]
    assert real_cli(*train, "--trust-remote-code", env=env).returncode == 0
    marker.unlink()
    for command in (["export", run, "--format", "merged"], ["serve", folder, "--port", "0"]):
        proc = real_cli(*command, env=env)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "--trust-remote-code" in proc.stderr and not marker.exists(), command
    proc = real_cli("bakeoff", "--train", data, "--test", data, "--methods", "prompt", "--model", folder, env=env)
    assert proc.returncode == 2 and "--trust-remote-code" in proc.stderr and not marker.exists()

    out = tmp_path / "merged"
    proc = real_cli("export", run, "--format", "merged", "--out", out, "--trust-remote-code", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "export.json").read_text())["status"] == "passed" and marker.exists()
    server, url = start_server([str(folder), "--trust-remote-code", "--no-jobs"], tmp_path / "home", tmp_path / "log")
    try:
        import httpx

        assert [m["id"] for m in httpx.get(f"{url}/v1/models", timeout=10).json()["data"]] == ["remote"]
    finally:
        stop_server(server)


# -- nasty files through check, train and eval -----------------------------------------------------------

ROW = json.dumps(chat_rows(1)[0])
NASTY_LINES = {
    "deep JSON nesting": b"[" * 100_000,
    "deep nesting in a row": b'{"messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    "invalid UTF-8": b'{"prompt": "caf\xe9", "completion": "ok"}',
    "a lone surrogate in a value": b'{"prompt": "\\ud800", "completion": "x"}',
    "a lone surrogate in a key": b'{"\\udfff": "x"}',
    "a lone surrogate in a message": b'{"messages": [{"role": "user", "content": "\\ud83d"}]}',
    "an escaped NUL in a key": b'{"\\u0000": "c"}',
    "a huge integer": b'{"prompt": ' + b"9" * 5000 + b', "completion": "x"}',
    "NaN": b'{"prompt": NaN, "completion": Infinity}',
    "a torn row": b'{"messages": [{"role": "user", "cont',
    "control characters": b'{"prompt": "\x1b[31mred\x07", "completion": "x"}',
}


def nasty_files(root: Path) -> dict[str, Path]:
    root.mkdir(exist_ok=True)
    files: dict[str, bytes] = {
        "random bytes": random.Random(0).randbytes(4096),
        "an empty file": b"",
        "only blank lines": b"\n\r\n  \n",
        "one JSON array": b"[" + ROW.encode() + b"]",
        "UTF-16": (ROW + "\n").encode("utf-16"),
        "NUL bytes": ROW.encode() + b'\n{"prompt": "a\x00b", "completion": "c"}\n',
        "a 50 MB single line": b'{"prompt": "' + b"a" * (50 << 20) + b'", "completion": "b"}\n',
        # A valid row first, then one nasty line: the file is JSONL, the line is the problem.
        **{what: ROW.encode() + b"\n" + line + b"\n" for what, line in NASTY_LINES.items()},
        "every nasty line at once": b"\n".join([ROW.encode(), *NASTY_LINES.values()]) + b"\n",
    }
    out = {}
    for i, (what, content) in enumerate(files.items()):
        out[what] = root / f"nasty-{i}.jsonl"
        out[what].write_bytes(content)
    out["a folder"] = root / "folder.jsonl"
    out["a folder"].mkdir(exist_ok=True)
    out["a missing file"] = root / "missing.jsonl"
    return out


TRAIN_TOO = {"random bytes", "UTF-16", "a 50 MB single line", "every nasty line at once", "a folder", "a missing file"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    from tunesmith.config import load_config
    from tunesmith.train.pipeline import run_training

    root = tmp_path_factory.mktemp("tiny-run")
    data = write_jsonl(root / "train.jsonl", chat_rows(8))
    cfg = load_config(
        None,
        {
            "model": {"name": str(tiny_model_dir)},
            "data": {"train": str(data), "val_split": 0.0, "max_len": 128},
            "lora": {"r": 2},
            "train": {"max_steps": 1, "batch_size": 4, "precision": "fp32"},
        },
    )
    return run_training(cfg, root / "run").run_dir


def test_nasty_files_get_exit_2_and_one_line_never_a_traceback(
    tmp_path: Path, tiny_model_dir: Path, tiny_run: Path, capsys
) -> None:
    for what, path in nasty_files(tmp_path).items():
        code, out, err = cli(["check", path, "--model", tiny_model_dir, "--no-estimate"], capsys)
        assert code == 2, f"check, {what}: {out}{err}"
        assert path.name in out + err, f"check, {what}: the report names the file"
        run = tmp_path / "never"
        # train runs the same checks as `check` (and eval the same parser) first; each file through train
        # costs a tokenizer load, so train gets one file of each kind of verdict: whole file, line, path.
        commands = [["eval", tiny_run, "--data", path]]
        if what in TRAIN_TOO:
            commands.append(["train", "--data", path, "--model", tiny_model_dir, "--out", run])
        for argv in commands:
            code, out, err = cli(argv, capsys)
            assert code == 2, f"{argv[0]}, {what}: {out}{err}"
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and path.name in lines[0], (argv[0], what, err)
        assert not run.exists(), "a refused training run leaves no folder behind"


@pytest.mark.slow
def test_nasty_files_through_real_processes(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The same, as real subprocesses: stdout and stderr are pipes with their own encodings. (eval reports
    through the same path as train, checked in-process above.)"""
    path = nasty_files(tmp_path)["every nasty line at once"]
    for argv in (
        ["check", path, "--model", tiny_model_dir, "--no-estimate"],
        ["train", "--data", path, "--model", tiny_model_dir, "--out", tmp_path / "never"],
    ):
        proc = real_cli(*argv)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
        if argv[0] == "check":
            assert proc.stdout.count(path.name) >= len(NASTY_LINES), "every bad line is reported"
        else:
            assert len(proc.stderr.strip().splitlines()) == 1 and re.search(r"and \d+ more problems", proc.stderr)


def test_a_bom_and_crlf_line_endings_are_accepted(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    """Valid but odd: Windows editors write a BOM and CRLF. Both are accepted, as if they were not there."""
    data = tmp_path / "windows.jsonl"
    data.write_bytes(b"\xef\xbb\xbf" + b"".join(json.dumps(r).encode() + b"\r\n" for r in chat_rows(8)))
    code, out, err = cli(["check", data, "--model", tiny_model_dir, "--no-estimate"], capsys)
    assert code == 0, out + err
    assert [m.content for m in read_examples(data).examples[0].messages] == [
        m["content"] for m in chat_rows(8)[0]["messages"]
    ]
    run = tmp_path / "run"
    code, out, err = cli(
        ["train", "--data", data, "--model", tiny_model_dir, "--out", run, "--max-steps", "1", "--lora-r", "2"], capsys
    )
    assert code == 0 and (run / "run.json").is_file(), out + err


# -- property tests of the parser -------------------------------------------------------------------------

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
texts = st.text(max_size=30) | st.sampled_from(["", " ", "\ud800", "\x00", "\ufeff", "\r\n"])
rows = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "messages": st.lists(
                st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": texts})
            )
        }
    ),
    st.fixed_dictionaries({"prompt": texts | json_values, "completion": texts | json_values}),
    st.fixed_dictionaries({"instruction": texts, "output": texts}, optional={"input": texts, "system": json_values}),
)
lines = st.one_of(
    rows.map(lambda r: json.dumps(r).encode()),
    rows.map(lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ")),
    st.sampled_from(list(NASTY_LINES.values())),
)


@FUZZ
@given(body=st.lists(lines, max_size=8), crlf=st.booleans(), bom=st.booleans())
def test_parse_file_reports_every_bad_line_and_never_raises(body: list[bytes], crlf: bool, bom: bool) -> None:
    content = (b"\xef\xbb\xbf" if bom else b"") + b"".join(line + (b"\r\n" if crlf else b"\n") for line in body)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.jsonl"
        path.write_bytes(content)
        parsed = parse_file(path)
        try:
            read = read_examples(path)
            assert not parsed.problems and len(read.examples) == len(parsed.examples)
        except DataError as e:
            assert parsed.problems and str(parsed.problems[0]) in str(e)
    n_lines = content.count(b"\n") + 1
    problem_lines = {p.line for p in parsed.problems}
    assert all(0 <= line <= n_lines for line in problem_lines)
    if 0 not in problem_lines:  # no whole-file verdict: each non-blank line parsed or is reported, once
        non_blank = sum(1 for line in body if line.strip())
        assert len(parsed.examples) + len(problem_lines) == non_blank
    for example in parsed.examples:
        for m in example.messages:
            m.content.encode("utf-8")  # text a tokenizer can take: no lone surrogates got through


@FUZZ
@given(row=json_values | rows, fmt=st.sampled_from(FORMATS), require_reply=st.booleans())
def test_row_to_messages_accepts_or_explains(row: object, fmt: str, require_reply: bool) -> None:
    try:
        messages = row_to_messages(row, fmt, require_reply=require_reply)
    except _RowError as e:
        assert str(e) and e.code
        return
    assert messages and all(isinstance(m, Message) and m.role in ("system", "user", "assistant") for m in messages)
