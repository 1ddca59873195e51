"""Export parity on the real default model (SmolLM2-135M-Instruct): merged and f16 GGUF, on a short LoRA run
over the demo data. Slow: a real merge, a 270 MB GGUF written and read back by transformers."""

from pathlib import Path

import pytest

from tunesmith.config import load_config
from tunesmith.demo import dataset_path
from tunesmith.export import export_run, parity
from tunesmith.train.pipeline import run_training

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def shorter_continuations(monkeypatch: pytest.MonkeyPatch) -> None:
    # 16 greedy tokens per probe: enough to diverge on, and the reference generation is the slow part on CPU.
    monkeypatch.setattr(parity, "MAX_NEW_TOKENS", 16)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = load_config(
        None,
        {
            "data": {"train": str(dataset_path() / "train.jsonl"), "val_split": 0.0},
            # A learning rate high enough that three steps move the model visibly.
            "train": {"max_steps": 3, "batch_size": 4, "micro_batch_size": 4, "learning_rate": 3e-3},
        },
    )
    out = tmp_path_factory.mktemp("real") / "run"
    run_training(cfg, out)
    return out


def test_merged_parity_on_the_default_model(real_run: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    result = export_run(real_run, "merged", out=tmp_path / "merged")
    checks = {c.name: c for c in result.checks}
    assert all(c.passed for c in result.checks), [c.summary() for c in result.checks]
    merge = checks["adapter_vs_merged"].detail
    assert merge["logits_max_abs_diff"] < 1e-4 and merge["greedy_identical"] == "8/8"
    assert checks["merged_readback"].detail["tensor_max_abs_diff"] == 0.0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert type(model).__name__ == "LlamaForCausalLM"


def test_f16_gguf_parity_on_the_default_model(real_run: Path, tmp_path: Path) -> None:
    result = export_run(real_run, "gguf", dtype="f16", out=tmp_path / "gguf")
    checks = {c.name: c for c in result.checks}
    assert all(c.passed for c in result.checks), [c.summary() for c in result.checks]
    readback = checks["gguf_readback"].detail
    assert readback["greedy_identical"] == "8/8" and readback["tensor_max_abs_diff"] == 0.0
    assert readback["tensor_types"] == {"F16": 211, "F32": 61}  # 30 layers x 7 matrices + embeddings; norms
    assert checks["template_gguf"].passed and checks["ollama_template"].passed
    assert 250e6 < (tmp_path / "gguf" / "model-f16.gguf").stat().st_size < 300e6
