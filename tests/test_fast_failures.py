"""Small things that used to cost a user time: an unreachable hub (50 s of retries), a GGUF export of an
architecture the writer does not support (refused only after the model loaded), and the GGUF reader's
progress bar in quiet mode."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import chat_rows, write_jsonl
from tunesmith.errors import ModelError, UserError


def test_an_unreachable_hub_fails_at_once_in_one_line(tmp_path: Path, monkeypatch, tiny_model_dir: Path, capsys):
    from tunesmith.cli.main import main
    from tunesmith.models import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused at once
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    hub.reachable.cache_clear()
    data = write_jsonl(tmp_path / "d.jsonl", chat_rows(2))
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        main(["check", str(data), "--model", "some-org/some-model", "--no-estimate"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and time.perf_counter() - t0 < 10
    assert len(err.strip().splitlines()) == 1 and "cannot be reached" in err and "Retrying" not in err, err
    with pytest.raises(ModelError, match="is not in the local cache"):
        hub.hub_path("some-org/some-model")


def test_an_unreachable_hub_uses_the_cached_copy(tmp_path: Path, monkeypatch) -> None:
    from tunesmith.models import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    hub.reachable.cache_clear()
    monkeypatch.setattr(hub, "cached_snapshot", lambda repo: str(tmp_path) if repo == "org/cached" else None)
    assert hub.hub_path("org/cached") == str(tmp_path)


def _tiny_gguf(tiny_model_dir: Path, path: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.export.gguf import write_gguf

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    write_gguf(model, AutoTokenizer.from_pretrained(tiny_model_dir), path, "f32", name="tiny")
    return path


def test_gguf_reading_is_quiet_and_its_header_names_the_architecture(tmp_path: Path, tiny_model_dir: Path, capfd):
    from tunesmith.export.gguf_precheck import source_architecture
    from tunesmith.models.gguf import load_gguf

    path = _tiny_gguf(tiny_model_dir, tmp_path / "tiny.gguf")
    assert source_architecture(str(path)) == ("llama", True)
    capfd.readouterr()
    load_gguf(path)
    captured = capfd.readouterr()
    assert "de-quantizing" not in captured.err + captured.out, "quiet mode (and no terminal) draws no bar"


def test_a_gguf_is_read_once_and_loads_as_transformers_reads_it(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch
) -> None:
    """transformers reads a GGUF three times (config, tokenizer, weights); Gemma 3's vocabulary made each read
    ~30 s. ``load_gguf`` reads it once, with the same model and tokenizer as transformers' own three reads."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers import modeling_gguf_pytorch_utils as hf_gguf

    from tunesmith.models.gguf import load_gguf

    path = _tiny_gguf(tiny_model_dir, tmp_path / "tiny.gguf")
    reads: list[str] = []
    original = gguf.GGUFReader

    def counted(*args, **kwargs):
        reads.append(str(args[0]))
        return original(*args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", counted)
    checkpoint = hf_gguf.load_gguf_checkpoint
    model, tok = load_gguf(path)
    assert reads == [str(path)]
    assert gguf.GGUFReader is counted and hf_gguf.load_gguf_checkpoint is checkpoint  # put back as found
    ref_tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    ref = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    assert len(reads) == 4  # transformers alone: three reads (the config's, the tokenizer's, the weights')
    text = 'Paint the kite teal, {"a": 1}'
    assert tok(text)["input_ids"] == ref_tok(text)["input_ids"] and tok.get_vocab() == ref_tok.get_vocab()
    unmarked = {"quantization_config": None}  # load_gguf drops transformers' "quantized" marker (dense weights)
    assert model.config.to_dict() | unmarked == ref.config.to_dict() | unmarked
    ours, theirs = model.state_dict(), ref.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    # Two loads in two threads at once give the same weights and leave transformers as they found it (whether
    # they raced is up to the scheduler: this does not prove the lock, only that nothing is left patched).
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        both = list(pool.map(lambda _: load_gguf(path)[0].state_dict(), range(2)))
    assert all(torch.equal(sd[k], theirs[k]) for sd in both for k in theirs)
    assert gguf.GGUFReader is counted and hf_gguf.load_gguf_checkpoint is checkpoint and len(reads) == 6


def test_gguf_export_refuses_an_unsupported_architecture_before_loading(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch
) -> None:
    from tunesmith.config import load_config
    from tunesmith.export import export_run
    from tunesmith.models import load
    from tunesmith.train.pipeline import run_training

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    data = write_jsonl(tmp_path / "d.jsonl", chat_rows(4))
    overrides = {
        "model": {"name": str(base)},
        "data": {"train": str(data), "val_split": 0.0, "max_len": 64},
        "lora": {"r": 2},
        "train": {"max_steps": 1, "batch_size": 2, "precision": "fp32", "compile": False},
    }
    run = run_training(load_config(None, overrides), tmp_path / "run").run_dir
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "model_type": "phi3"}))

    def no_loading(*args: object, **kw: object) -> None:
        raise AssertionError("the model was loaded before the architecture was checked")

    monkeypatch.setattr(load, "load_model", no_loading)
    with pytest.raises(UserError, match=r"GGUF export supports the .* this model is 'phi3'"):
        export_run(run, "gguf", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_train_lists_the_check_errors_then_fails_in_one_line(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch, capsys
) -> None:
    """What the README says `train` does on bad data: the errors listed on stdout (at most 20), then one
    error line on stderr naming the first, exit code 2."""
    from tunesmith.cli.main import main
    from tunesmith.train.preflight import MAX_LISTED

    monkeypatch.setenv("TUNESMITH_QUIET", "0")
    bad = [{"messages": [{"role": "robot", "content": "x"}]}] * (MAX_LISTED + 3)
    data = write_jsonl(tmp_path / "d.jsonl", chat_rows(1) + bad)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(data), "--model", str(tiny_model_dir), "--out", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2
    listed = [line for line in out.splitlines() if line.startswith(f"  {data}:")]
    assert f"tunesmith check found {MAX_LISTED + 3} errors:" in out and len(listed) == MAX_LISTED
    assert "  ... and 3 more" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {data}:2: ") and "and 22 more problems" in lines[0]
