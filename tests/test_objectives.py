"""The loop takes an objective: a toy one registers in a few lines and trains through the same checkpoint,
resume and early-stopping code as SFT; and a run started before the loop took objectives resumes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
import yaml

from tunesmith import runs
from tunesmith.data.render import IGNORE
from tunesmith.errors import UserError
from tunesmith.train import objectives
from tunesmith.train.objectives.sft import SFT
from tunesmith.train.pipeline import run_training

from .conftest import chat_rows, write_jsonl
from .test_train import adapter_tensors, make_cfg

REPO = Path(__file__).resolve().parents[1]
PRE_RENOVATION = "61b71ef"  # the last commit whose loop knew only the SFT loss


class EveryToken(SFT):
    """Loss on every token, prompt included: SFT's loss with every non-padding position trained."""

    name = "every-token"

    def weight(self, examples):
        return sum(len(e.input_ids) - 1 for e in examples)

    def collate(self, rows, pad_id):
        batch = super().collate(rows, pad_id)
        labels = batch["input_ids"].clone()
        if "position_ids" in batch:  # packed: an example's first position (and padding) is at position 0
            labels[batch["position_ids"] == 0] = IGNORE
        else:  # padded rows: padding is not trained
            labels[batch["attention_mask"] == 0] = IGNORE
        return {**batch, "labels": labels}


@pytest.fixture
def every_token(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(objectives.OBJECTIVES, "every-token", lambda settings: EveryToken())
    return "every-token"


def metric_lines(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / runs.METRICS).read_text().splitlines()]


def test_a_toy_objective_trains_resumes_exactly_and_stops_early(tmp_path: Path, tiny_model_dir: Path, every_token):
    data = write_jsonl(tmp_path / "d.jsonl", chat_rows(24))
    cfg = make_cfg(tiny_model_dir, data, max_steps=8, save_every=4, epochs=3, packing=False)
    straight = run_training(cfg, tmp_path / "straight", objective=every_token)
    run_training(cfg, tmp_path / "sft")
    # The objective is what was trained: it normalises by every token, so its steps see more "trained" units
    # than SFT's replies, and it moves the weights differently.
    a, s = adapter_tensors(tmp_path / "straight"), adapter_tensors(tmp_path / "sft")
    assert any((a[k] - s[k]).abs().max() > 1e-4 for k in a)
    assert metric_lines(tmp_path / "straight")[0]["loss"] != metric_lines(tmp_path / "sft")[0]["loss"]

    # The same checkpoint and resume code: stopped at step 4, resumed, equals the straight run.
    run_training(cfg, tmp_path / "resumed", stop_after=4, objective=every_token)
    resumed = run_training(cfg, tmp_path / "resumed", resume=True, objective=every_token)
    assert resumed.loop.step == straight.loop.step == 8
    b = adapter_tensors(tmp_path / "resumed")
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=k)
    assert [x["step"] for x in metric_lines(tmp_path / "resumed")] == list(range(1, 9))

    # The same early stopping and best weights: a learning rate far too high stops at the first worse eval.
    data = write_jsonl(tmp_path / "e.jsonl", chat_rows(40, seed=4))
    cfg = make_cfg(tiny_model_dir, data, learning_rate=0.5, epochs=6, eval_every=1, early_stopping_patience=1)
    cfg.data.val_split = 0.2
    result = run_training(cfg, tmp_path / "early", objective=every_token)
    info = runs.read_run(tmp_path / "early")
    assert result.loop.stopped_early and info.best_step < info.steps
    val_lines = [x for x in metric_lines(tmp_path / "early") if "val_loss" in x]
    assert val_lines and {"val_loss", "val_token_accuracy"} <= val_lines[0].keys()


def test_an_unknown_objective_is_one_clear_error(tmp_path: Path, tiny_model_dir: Path, chat_file: Path) -> None:
    with pytest.raises(UserError, match="unknown objective 'nope'"):
        run_training(make_cfg(tiny_model_dir, chat_file, max_steps=2), tmp_path / "run", objective="nope")


def test_validation_metrics_come_from_the_objective(tmp_path: Path, tiny_model_dir: Path, chat_file: Path) -> None:
    """SFT's validation line keeps its names: val_loss and val_token_accuracy, per trained token."""
    cfg = make_cfg(tiny_model_dir, chat_file, max_steps=2, eval_every=1)
    cfg.data.val_split = 0.25
    run_training(cfg, tmp_path / "run")
    lines = metric_lines(tmp_path / "run")
    steps = [x for x in lines if "loss" in x]
    vals = [x for x in lines if "val_loss" in x]
    assert [x["step"] for x in steps] == [1, 2] and [x["step"] for x in vals] == [1, 2]
    assert list(steps[0])[:8] == [
        "step",
        "epoch",
        "loss",
        "lr",
        "grad_norm",
        "tokens",
        "trained_tokens",
        "padded_tokens",
    ]
    assert 0.0 <= steps[0]["token_accuracy"] <= 1.0 and 0.0 <= vals[0]["val_token_accuracy"] <= 1.0


def _old_source(dest: Path) -> Path:
    """The source tree of the commit before the renovation, from this clone's history."""
    proc = subprocess.run(["git", "-C", str(REPO), "archive", PRE_RENOVATION, "src"], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"commit {PRE_RENOVATION} is not in this clone's history")
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def test_a_run_checkpointed_before_the_renovation_resumes_exactly(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch
) -> None:
    """The old loop writes step 4 of 8 and stops (as a crash would); today's loop resumes it and ends with
    the same weights and metrics as today's loop running all 8 steps straight."""
    from tunesmith.train.batches import collate, collate_packed
    from tunesmith.train.objectives.sft import SFT

    # The old loop padded each micro-batch to its longest row, with a 2-D mask where every row held one example;
    # today's pads to a multiple of 32 and always hands the packed layout's 4-D mask, which rounds the weight
    # gradients' sums differently (~1e-7). Both runs here lay batches out as the old one did.
    def old_layout(self, rows, pad_id):  # type: ignore[no-untyped-def]
        if all(len(r) == 1 for r in rows):
            return collate([r[0] for r in rows], pad_id)
        return collate_packed(rows, pad_id)

    monkeypatch.setattr(SFT, "collate", old_layout)
    old_src = _old_source(tmp_path / "old")
    data = write_jsonl(tmp_path / "d.jsonl", chat_rows(24))
    # replay 0: the old loop had none, and its steps must be today's steps
    # kl_to_base 0: the old code had no KL term, so only with it off can the two runs match
    # precision fp32: where the CPU has bf16 (AMX, avx512_bf16) auto picks it, and the two loops' bf16 roundings
    # differ by design (today's LoRA sums run in place, models/lora.py): a 2% difference in the weights after 8
    # steps on an AMX Xeon, none in fp32. What is checked here is the checkpoint and loop state, not rounding.
    cfg = make_cfg(tiny_model_dir, data, max_steps=8, save_every=4, epochs=3, replay=0.0, kl_to_base=0.0,
                   precision="fp32")  # fmt: skip
    # No dropout: the old loop's GEMM probe drew from the global RNG between the LoRA init and step 1, so its
    # dropout masks differ from today's by design (today's probe has its own generator: a run's weights must not
    # depend on whether the machine's peak is cached). What is checked here is the checkpoint and loop state.
    cfg = cfg.model_copy(update={"lora": cfg.lora.model_copy(update={"dropout": 0.0})})
    # The old code's config lacks today's newer settings: write it as that version wrote configs.
    env = {"PYTHONPATH": str(old_src), "TUNESMITH_QUIET": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    known = subprocess.run(
        [sys.executable, "-c", "import json; from tunesmith.config import RunConfig; "
         "print(json.dumps({k: list(f.annotation.model_fields) for k, f in RunConfig.model_fields.items()}))"],
        env=env, text=True, capture_output=True, check=True,
    ).stdout  # fmt: skip
    fields = json.loads(known)
    old_cfg = {section: {k: v for k, v in values.items() if k in fields[section]}
               for section, values in cfg.model_dump(mode="json").items()}  # fmt: skip
    assert "objective" not in old_cfg["train"] and "dpo_nll" not in old_cfg["train"]
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(old_cfg, sort_keys=False))
    run = tmp_path / "resumed"
    script = (
        "import sys; from tunesmith.config import load_config; from tunesmith.train.pipeline import run_training; "
        "run_training(load_config(sys.argv[1]), sys.argv[2], stop_after=4)"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "cfg.yaml"), str(run)], env=env, text=True,
                          capture_output=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "checkpoints" / "step-000004").is_dir() and not runs.is_run(run)

    resumed = run_training(cfg, run, resume=True)  # its saved config lacks today's settings: not a difference
    straight = run_training(cfg, tmp_path / "straight")
    assert resumed.loop.step == straight.loop.step == 8
    a, b = adapter_tensors(tmp_path / "straight"), adapter_tensors(run)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=lambda m, k=k: f"{k}: {m}")
    old, new = metric_lines(run), metric_lines(tmp_path / "straight")
    assert [x["step"] for x in old] == list(range(1, 9))
    assert [round(x["loss"], 5) for x in old] == [round(x["loss"], 5) for x in new]


def test_a_run_parses_and_renders_each_row_once(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:
    """The dataset doctor's parsed and rendered rows are what training uses: no row is parsed or rendered
    twice (they were, once by the check and once by the pipeline)."""
    from collections import Counter

    from tunesmith.data import render

    data = write_jsonl(tmp_path / "d.jsonl", chat_rows(24))
    reads, rendered = Counter(), Counter()
    read_bytes, render_row = Path.read_bytes, render.Renderer._render

    def counting_read(self):
        reads[self.name] += 1
        return read_bytes(self)

    def counting_render(self, conv):
        rendered[conv.source] += 1
        return render_row(self, conv)

    monkeypatch.setattr(Path, "read_bytes", counting_read)
    monkeypatch.setattr(render.Renderer, "_render", counting_render)
    cfg = make_cfg(tiny_model_dir, data, max_steps=2)
    cfg.data.val_split = 0.25
    run_training(cfg, tmp_path / "run")
    assert reads["d.jsonl"] == 1, "the data file is read and parsed once"
    assert len(rendered) == 24 and set(rendered.values()) == {1}
    # With --skip-check the pipeline parses and renders by itself, still once.
    reads.clear(), rendered.clear()
    run_training(cfg, tmp_path / "skip", skip_check=True)
    assert reads["d.jsonl"] == 1 and len(rendered) == 24 and set(rendered.values()) == {1}


def test_the_run_summary_says_once_how_tool_calls_were_rendered(tmp_path: Path, tiny_model_dir: Path) -> None:
    tools = [{"type": "function", "function": {"name": "track", "parameters": {"type": "object"}}}]
    call = {"id": "call_1", "type": "function", "function": {"name": "track", "arguments": '{"order": "A1"}'}}
    asks = [{"role": "user", "content": f"Where is order A{k}?"} for k in range(8)]
    rows = [{"messages": [ask, {"role": "assistant", "tool_calls": [call]}], "tools": tools} for ask in asks]
    rows += chat_rows(8)
    data = write_jsonl(tmp_path / "tools.jsonl", rows)
    result = run_training(make_cfg(tiny_model_dir, data, max_steps=1), tmp_path / "run")
    lines = [c for c in result.reasons if c.startswith("tool calls:")]
    assert lines == ["tool calls: 8 rows use tools, rendered by tunesmith's fallback (tools in the system turn, "
                     "calls as <tool_call>{...}</tool_call>)"]  # fmt: skip
