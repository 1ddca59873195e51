"""`tunesmith eval` end to end on the tiny model: a tiny LoRA run, test data in another format, rows without
a reference, the CLI, `train --eval-data`, and a clear error when the adapter's base model is missing."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tunesmith import runs
from tunesmith.config import load_config
from tunesmith.data.formats import read_examples
from tunesmith.data.render import Renderer
from tunesmith.errors import DataError, UserError
from tunesmith.eval import behaviour, forgetting
from tunesmith.eval.rows import load_rows
from tunesmith.models.load import load_model
from tunesmith.train.pipeline import run_training

from .conftest import chat_rows, write_jsonl
from .test_cli import assert_user_error, tunesmith


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    tmp = tmp_path_factory.mktemp("eval-run")
    train = write_jsonl(tmp / "train.jsonl", chat_rows(24))
    cfg = load_config(
        None,
        {
            "model": {"name": str(tiny_model_dir)},
            "data": {"train": str(train), "val_split": 0.0, "max_len": 256},
            "lora": {"r": 4, "alpha": 8},
            "train": {"batch_size": 4, "micro_batch_size": 4, "learning_rate": 5e-3, "max_steps": 6},
        },
    )
    run_training(cfg, tmp / "run")
    return tmp / "run"


@pytest.fixture(scope="module")
def test_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prompt/completion rows (training was chat), and a last row with no reference."""
    rows = [{"prompt": r["messages"][0]["content"], "completion": r["messages"][1]["content"]} for r in chat_rows(6, 9)]
    rows.append({"prompt": "Paint the boat red"})
    return write_jsonl(tmp_path_factory.mktemp("eval-data") / "test.jsonl", rows)


def test_rows_without_a_reference_are_read_only_for_evaluation(tmp_path: Path) -> None:
    chat = write_jsonl(
        tmp_path / "c.jsonl", [{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]}]
    )
    alpaca = write_jsonl(
        tmp_path / "a.jsonl", [{"instruction": "Do it", "input": "now"}, {"instruction": "x", "output": "y"}]
    )
    prompt = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "completion": "  "}])
    assert [(r.prompt[-1]["content"], r.reference) for r in load_rows(alpaca)] == [("Do it\n\nnow", None), ("x", "y")]
    assert load_rows(chat)[0].prompt == [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
    assert load_rows(prompt)[0].reference is None
    for path in (chat, alpaca, prompt):  # training still refuses rows with nothing to learn
        with pytest.raises(DataError):
            read_examples(path)
    wrong_type = write_jsonl(tmp_path / "w.jsonl", [{"prompt": "q", "completion": 3}])
    with pytest.raises(DataError, match="'completion' must be a string"):
        load_rows(wrong_type)


def test_eval_cli_end_to_end(tiny_run: Path, test_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESMITH_QUIET", "0")  # the terminal table is part of what is tested
    instructions = tmp_path / "instructions.txt"
    instructions.write_text("Reply with one JSON object with the keys object and colour, nothing else.\n")
    out = tmp_path / "report"
    args = ["--instructions", str(instructions), "--few-shot", "2", "--price-per-1k-input-tokens", "0.5"]
    args += ["--behaviour-threshold", "0.5"]
    proc = tunesmith("eval", str(tiny_run), "--data", str(test_file), *args, "--max-tokens", "8", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p.name for p in out.iterdir()} >= {"report.html", "report.md", "eval.json"}
    result = json.loads((out / "eval.json").read_text())
    assert result["rows"] == 7 and result["rows_with_reference"] == 6 and result["task"] == "json"
    assert set(result["conditions"]) == {"base", "base_prompted", "tuned"}
    assert result["schema_source"] == "inferred from the training replies"
    assert set(result["schema"]["properties"]) == {"object", "colour"}
    last = result["rows_detail"][-1]
    assert last["reference"] is None and last["tuned"]["loss"] is None, "no reference: reference-free measures only"

    # Same template and decoding for every model: prompt token counts come from the shared Renderer.
    _, tok, _ = load_model(str(tiny_run))
    first = result["rows_detail"][0]
    assert (
        first["tuned"]["prompt_tokens"]
        == first["base"]["prompt_tokens"]
        == len(Renderer(tok).prompt_ids(first["prompt"]))
    )
    assert all(r[c]["completion_tokens"] <= 8 for r in result["rows_detail"] for c in ("base", "tuned"))
    s = result["savings"]
    assert s["prompt_tokens_prompted"] > s["prompt_tokens_tuned"] + 50, "instructions and two shots cost tokens"
    assert s["saved_per_1m_requests"] == pytest.approx(s["tokens_saved_per_request"] * 1000 * 0.5)
    assert "Token savings" in (out / "report.md").read_text()
    assert "tunesmith eval" in proc.stdout and "forgetting" in proc.stdout, "headline printed in the terminal"
    assert result["forgetting"]["behaviour"]["threshold"] == 0.5 and "general questions" in proc.stdout


def test_per_row_loss_is_the_mean_nll_of_the_reference(tiny_run: Path, test_file: Path, tmp_path: Path) -> None:
    from tunesmith.eval.runner import EvalOptions, evaluate_run

    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "required": ["object"]}))
    result = evaluate_run(tiny_run, test_file, EvalOptions(max_new_tokens=4, schema=schema))
    assert (
        result["schema_source"] == f"given ({schema})"
        and "schema_adherence" in result["conditions"]["tuned"]["metrics"]
    )
    row = result["rows_detail"][0]
    model, tok, _ = load_model(str(tiny_run))
    messages = [*row["prompt"], {"role": "assistant", "content": row["reference"]}]
    prompt = Renderer(tok).prompt_ids(row["prompt"])
    full = tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
    # The reference reply plus its end-of-turn token; the template's trailing newline is not part of it.
    end = full.index(tok.convert_tokens_to_ids("<|im_end|>"), len(prompt)) + 1
    labels = [-100] * len(prompt) + full[len(prompt) : end]
    with torch.no_grad():
        expected = model(torch.tensor([full[:end]]), labels=torch.tensor([labels])).loss.item()
    assert row["tuned"]["loss"] == pytest.approx(expected, rel=1e-4)
    tuned = result["conditions"]["tuned"]["metrics"]
    assert tuned["perplexity"] == pytest.approx(math.exp(tuned["loss"]))
    f = result["forgetting"]
    ids = tok(forgetting.general_text(), add_special_tokens=False)["input_ids"]
    assert f["tokens"] == len(ids) - math.ceil(len(ids) / forgetting.CHUNK_TOKENS) > 2000
    base, _, _ = load_model(str(runs.read_run(tiny_run).base_model))
    assert f["base_perplexity"] == pytest.approx(forgetting.text_perplexity(base, tok, forgetting.general_text())[0])
    # The behavioural probe: the shipped questions, scored on the run's base and on the tuned model.
    items = behaviour.load_items()
    base_right, tuned_right = behaviour.right(base, tok, items), behaviour.right(model, tok, items)
    b = f["behaviour"]
    assert b["items"] == len(items) and b["base_correct"] == sum(base_right)
    assert b["tuned_correct_of_those"] == sum(x and y for x, y in zip(base_right, tuned_right, strict=True))


def test_unreadable_schema_is_a_user_error(tiny_run: Path, test_file: Path, tmp_path: Path) -> None:
    from tunesmith.eval.runner import EvalOptions, evaluate_run

    bad = tmp_path / "schema.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="cannot read the JSON Schema"):
        evaluate_run(tiny_run, test_file, EvalOptions(schema=bad))


def test_forgetting_threshold() -> None:
    assert forgetting.Forgetting(10.0, 11.5, 100, 0.10).regressed
    assert not forgetting.Forgetting(10.0, 10.5, 100, 0.10).regressed
    assert not forgetting.Forgetting(10.0, 9.0, 100, 0.0).regressed


def test_missing_base_model_is_one_clear_line(tiny_run: Path, test_file: Path, tmp_path: Path) -> None:
    moved = tmp_path / "run"
    shutil.copytree(tiny_run, moved)
    info = runs.read_run(moved)
    info.base_model = str(tmp_path / "gone" / "base-model")
    runs.write_run(moved, info)
    proc = tunesmith("eval", str(moved), "--data", str(test_file))
    assert_user_error(proc, "was tuned from the base model")
    assert "which is not available here" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert_user_error(tunesmith("eval", str(tmp_path), "--data", str(test_file)), "is not a finished tunesmith run")


def test_train_with_eval_data(tiny_model_dir: Path, test_file: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(8))
    out = tmp_path / "run"
    proc = tunesmith(
        "train", "--model", str(tiny_model_dir), "--data", str(train), "--out", str(out),
        "--max-steps", "2", "--batch-size", "4", "--eval-data", str(test_file),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "eval" / "eval.json").read_text())
    assert result["run"] == str(out) and len(result["training"]["train_loss"]) == 2
    assert (out / "eval" / "report.html").is_file()


def test_help_does_not_import_the_heavy_eval_packages() -> None:
    code = "import sys; from tunesmith.cli import main; print(sorted({m.split('.')[0] for m in sys.modules}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(proc.stdout.replace("'", '"')))
    assert "typer" in loaded and not loaded & {"matplotlib", "sacrebleu", "rouge_score", "jsonschema", "torch"}
