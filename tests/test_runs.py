"""run.json as a typed record: RunInfo reproduces the file training has always written, key for key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith import runs
from tunesmith.errors import UserError
from tunesmith.runs import Counts, DistributedInfo, Hashes, PeakFlops, RunInfo

STATS = {
    "examples": 24,
    "kept": 22,
    "dropped_overlong": 2,
    "truncated": 0,
    "dropped_untrained": 0,
    "tokens": 900,
    "trained_tokens": 300,
}
CHOICES = ["learning rate 2e-4 (LoRA default)", "compile: off (short run)"]


def pipeline_dict() -> dict:
    """A run.json as train/pipeline.py's literal writes it (same keys, same order, same nesting)."""
    return {
        "status": "completed",
        "method": "lora",
        "base_model": "smollm2-135m",
        "weights_dir": "adapter",
        "created": "2025-01-02T03:04:05+0000",
        "wall_time_s": 12.3,
        "train_time_s": 8.1,
        "loop_wall_s": 9.0,
        "steps": 6,
        "total_steps": 6,
        "stopped_early": False,
        "best_val_loss": 1.25,
        "best_step": 6,
        "final_train_loss": 1.5,
        "skipped_steps": 0,
        "tokens_seen": 900,
        "trained_tokens_seen": 300,
        "tokens_per_s": 111.1,
        "mfu": 0.0123,
        "peak_flops": {"value": 1.5e11, "dtype": "fp32", "source": "GEMM probe at start-up"},
        "trainable_params": 4_000,
        "total_params": 135_000_000,
        "precision": "fp32",
        "choices": CHOICES,
        "counts": {"train": STATS, "val": {**STATS, "kept": 2}, "dropped_rows": ["train.jsonl:3", "train.jsonl:9"]},
        "hashes": {
            "train_data": "a" * 64,
            "val_data": None,
            "model": "b" * 16,
            "chat_template": "c" * 16,
            "masking": "d" * 16,
        },
        "versions": {"python": "3.11.7", "tunesmith": "0.1.0", "torch": "2.5.0"},
        "objective": "sft",
        "started_from": None,
        "beta": None,
        "startup": {"loading the model": 2.5, "rendering": 0.4},
    }


def built() -> RunInfo:
    """The same record through the constructor, as the training pipeline builds it."""
    return RunInfo(
        method="lora",
        base_model="smollm2-135m",
        weights_dir="adapter",
        created="2025-01-02T03:04:05+0000",
        wall_time_s=12.3,
        train_time_s=8.1,
        loop_wall_s=9.0,
        steps=6,
        total_steps=6,
        stopped_early=False,
        best_val_loss=1.25,
        best_step=6,
        final_train_loss=1.5,
        skipped_steps=0,
        tokens_seen=900,
        trained_tokens_seen=300,
        tokens_per_s=111.1,
        mfu=0.0123,
        peak_flops=PeakFlops(value=1.5e11, dtype="fp32", source="GEMM probe at start-up"),
        trainable_params=4_000,
        total_params=135_000_000,
        precision="fp32",
        choices=CHOICES,
        counts=Counts(train=STATS, val={**STATS, "kept": 2}, dropped_rows=["train.jsonl:3", "train.jsonl:9"]),
        hashes=Hashes(train_data="a" * 64, val_data=None, model="b" * 16, chat_template="c" * 16, masking="d" * 16),
        versions={"python": "3.11.7", "tunesmith": "0.1.0", "torch": "2.5.0"},
        startup={"loading the model": 2.5, "rendering": 0.4},
    )


def test_the_constructor_reproduces_the_pipeline_dict_byte_for_byte() -> None:
    want = json.dumps(pipeline_dict(), indent=2)
    assert json.dumps(built().to_dict(), indent=2) == want


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    (tmp_path / runs.RUN_JSON).write_text(json.dumps(pipeline_dict(), indent=2))
    info = runs.read_run(tmp_path)
    assert info == built() and info.distributed is None
    assert info.weights_path(tmp_path) == tmp_path / "adapter"
    (tmp_path / "again").mkdir()
    runs.write_run(tmp_path / "again", info)
    assert (tmp_path / "again" / runs.RUN_JSON).read_text() == json.dumps(pipeline_dict(), indent=2)


def test_an_old_run_json_without_the_newer_fields_still_reads(tmp_path: Path) -> None:
    old = pipeline_dict()
    newer = (
        "loop_wall_s",
        "mfu",
        "peak_flops",
        "objective",
        "started_from",
        "beta",
        "startup",
    )  # added after the first release
    for key in newer:
        del old[key]
    (tmp_path / runs.RUN_JSON).write_text(json.dumps(old))
    info = runs.read_run(tmp_path)
    assert info.loop_wall_s is None and info.mfu is None and info.peak_flops is None and info.startup == {}
    assert info.objective == "sft" and info.beta is None, "every run before DPO was supervised"
    assert info.steps == 6 and info.counts.train["kept"] == 22 and info.hashes.model == "b" * 16
    bare = {"method": "full", "base_model": "m", "weights_dir": "model"}
    assert RunInfo.from_dict(bare).created is None and RunInfo.from_dict(bare).counts.train == {}


def test_the_process_count_and_backend_are_fields(tmp_path: Path) -> None:
    """Runs written before the field say it only in `choices`; they read as the field, and write it."""
    old = pipeline_dict()
    old["choices"] = [*CHOICES, "distributed: 2 processes (gloo, 1 threads each)"]
    (tmp_path / runs.RUN_JSON).write_text(json.dumps(old))
    info = runs.read_run(tmp_path)
    assert info.distributed == DistributedInfo(processes=2, backend="gloo", threads_per_process=1)
    assert info.distributed.describe() == "distributed: 2 processes (gloo, 1 threads each)"
    gpu = DistributedInfo(processes=8, backend="nccl")
    assert runs.RunInfo.from_dict({**old, "choices": [gpu.describe()]}).distributed == gpu
    written = info.to_dict()
    assert written["distributed"] == {"processes": 2, "backend": "gloo", "threads_per_process": 1}
    assert {k: v for k, v in written.items() if k != "distributed"} == old, "every old key kept as it was"
    assert RunInfo.from_dict(written) == info


@pytest.mark.parametrize(
    "text, why",
    [("{not json", "invalid JSON"), ("[1, 2]", "not a tunesmith run record"), ("{}", "no method, base_model")],
)
def test_a_broken_run_json_is_one_clear_user_error(tmp_path: Path, text: str, why: str) -> None:
    (tmp_path / runs.RUN_JSON).write_text(text)
    with pytest.raises(UserError, match=why):
        runs.read_run(tmp_path)
