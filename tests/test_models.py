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
