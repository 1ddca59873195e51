"""What LoRA wrapped, by kind and with parameter counts, in the run summary and run.json; expert weights that
stay frozen are named; a target list that matches nothing is one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.config import LoraSettings, load_config
from tunesmith.models.coverage import describe, lora_coverage
from tunesmith.models.lora import add_lora
from tunesmith.train.pipeline import run_training

from .conftest import chat_rows, write_jsonl
from .test_cli import assert_user_error, tunesmith


def test_run_json_and_summary_say_what_lora_wrapped(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", chat_rows(8))
    cfg = load_config(
        None,
        {
            "model": {"name": str(tiny_model_dir)},
            "data": {"train": str(data), "val_split": 0.0},
            "lora": {"r": 4, "alpha": 8},
            "train": {"batch_size": 4, "micro_batch_size": 4, "max_steps": 1, "compile": False},
        },
    )
    result = run_training(cfg, tmp_path / "run")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    wrapped = info["lora_coverage"]["wrapped"]
    assert set(wrapped) == {"attention", "mlp"}  # tied embeddings and the head are not linear layers PEFT wraps
    assert wrapped["attention"]["modules"] == 2 * 4 and wrapped["mlp"]["modules"] == 2 * 3
    assert wrapped["attention"]["names"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert wrapped["mlp"]["names"] == ["gate_proj", "up_proj", "down_proj"]
    # r * (in + out) per module, summed: every trainable parameter is accounted for.
    assert wrapped["attention"]["params"] + wrapped["mlp"]["params"] == info["trainable_params"]
    assert wrapped["attention"]["params"] == 2 * 4 * (32 + 32 + 32 + 16 + 32 + 16 + 32 + 32)
    assert any(r.startswith("LoRA wraps attention 8 (q_proj, k_proj, v_proj, o_proj;") for r in result.reasons)


def test_3d_expert_weights_are_adapted_or_said_to_stay_frozen(tmp_path: Path) -> None:
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    config = Qwen3MoeConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        moe_intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        num_experts=4,
        num_experts_per_tok=2,
    )
    # all-linear: PEFT adapts the 3-D expert parameters too, each once (r * (in + out) per expert stack).
    coverage = lora_coverage(add_lora(Qwen3MoeForCausalLM(config), LoraSettings(r=2, alpha=4)))
    experts = coverage["wrapped"]["experts"]
    assert experts["modules"] == 2 * 2 and sorted(experts["names"]) == ["down_proj", "gate_up_proj"]
    assert "frozen_experts" not in coverage
    # Attention only: the experts stay frozen, and the summary says so with their size.
    narrow = LoraSettings(r=2, alpha=4, target_modules=["q_proj", "v_proj"])
    coverage = lora_coverage(add_lora(Qwen3MoeForCausalLM(config), narrow))
    assert set(coverage["wrapped"]) == {"attention"}
    assert coverage["frozen_experts"] == {"tensors": 4, "params": 2 * (4 * 32 * 32 + 4 * 32 * 16)}
    assert "4 expert weight tensors (12.3K params, 3-D parameters, not linear layers) stay frozen" in describe(coverage)


def test_a_target_list_that_matches_nothing_is_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", chat_rows(4))
    config = tmp_path / "c.yaml"
    config.write_text("lora:\n  target_modules: [q_proj, query_key_value]\n", encoding="utf-8")
    proc = tunesmith(
        "train", "--model", str(tiny_model_dir), "--data", str(data), "--config", str(config),
        "--out", str(tmp_path / "run"), "--max-steps", "1",
    )  # fmt: skip
    assert_user_error(proc, "LoRA target module(s) query_key_value match no module of this model")
    assert "its linear layers are down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj" in (
        " ".join(proc.stderr.split())
    )
    assert len(proc.stderr.strip().splitlines()) == 1
