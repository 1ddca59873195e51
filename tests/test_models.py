"""Model sources: one function resolves aliases, folders, .gguf files, runs and hub ids."""

from pathlib import Path

import pytest

from tunesmith.errors import ModelError
from tunesmith.models.defaults import embedded_gguf_path
from tunesmith.models.load import load_model, resolve


def test_sources_are_told_apart(tmp_path: Path, tiny_model_dir: Path, default_model_dir: Path) -> None:
    assert resolve("smollm2-135m").kind == "alias"
    assert resolve(str(tiny_model_dir)).kind == "folder"
    assert resolve(str(embedded_gguf_path("smollm2-135m"))).kind == "gguf"
    assert resolve("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"
    (tmp_path / "run.json").write_text("{}")
    assert resolve(str(tmp_path)).kind == "run"


@pytest.mark.parametrize("name", ["nonsense", "./missing-folder", "/no/such/model.gguf", "a/b/c"])
def test_unknown_sources_are_user_errors(name: str) -> None:
    with pytest.raises(ModelError, match="unknown model"):
        resolve(name)


def test_folder_without_config_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="neither a model folder"):
        resolve(str(tmp_path))


def test_broken_gguf_is_a_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelError, match="cannot read"):
        load_model(str(bad))


def test_uncached_hub_id_fails_cleanly_offline() -> None:
    # HF_HUB_OFFLINE=1 in the test session: a hub id that is not in the cache must be a clear error.
    with pytest.raises(ModelError, match="cannot load model"):
        load_model("tunesmith-tests/definitely-not-cached")


def test_exported_default_is_a_plain_hf_folder(default_model_dir: Path) -> None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(default_model_dir)
    assert config.model_type == "llama" and getattr(config, "quantization_config", None) is None
    assert (default_model_dir / "model.safetensors").is_file() and (default_model_dir / "tokenizer.json").is_file()


def test_inference_precision_choice() -> None:
    import torch

    from tunesmith.errors import UserError
    from tunesmith.models.load import bf16_supported, inference_dtype

    assert inference_dtype("fp32") is torch.float32
    assert inference_dtype("auto") is (torch.bfloat16 if bf16_supported() else torch.float32)
    with pytest.raises(UserError, match="precision 'fp16'"):
        inference_dtype("fp16")


def test_a_run_merges_into_bf16_weights(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Generation in bf16 merges the adapter into bf16 weights: its logits follow the fp32 merged model, not
    the base (the adapter's change survives the rounding)."""
    import torch

    from tunesmith.config import load_config
    from tunesmith.train.pipeline import run_training

    from .conftest import chat_rows, write_jsonl

    data = write_jsonl(tmp_path / "d.jsonl", chat_rows(16))
    overrides = {
        "model": {"name": str(tiny_model_dir)},
        "data": {"train": str(data), "val_split": 0.0},
        "lora": {"r": 4, "alpha": 8},
        "train": {"batch_size": 4, "micro_batch_size": 4, "learning_rate": 5e-2, "max_steps": 4},
    }
    run = run_training(load_config(None, overrides), tmp_path / "run").run_dir
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
    with torch.inference_mode():
        base = load_model(str(tiny_model_dir))[0](ids).logits
        tuned = load_model(str(run))[0](ids).logits
        tuned_bf16_model = load_model(str(run), dtype=torch.bfloat16)[0]
        assert next(tuned_bf16_model.parameters()).dtype == torch.bfloat16
        tuned_bf16 = tuned_bf16_model(ids).logits.float()
    assert (tuned - tuned_bf16).abs().max() < 0.1 * (tuned - base).abs().max()
