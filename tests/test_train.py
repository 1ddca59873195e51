"""Training-loop guarantees, on the tiny model: exact accumulation, exact resume, loadable adapters."""

import json
from pathlib import Path

import pytest
import torch

from tunesmith import runs
from tunesmith.config import load_config
from tunesmith.data.formats import read_examples
from tunesmith.data.render import Renderer
from tunesmith.errors import UserError
from tunesmith.models.load import load_model
from tunesmith.models.lora import add_lora, randomize_b
from tunesmith.train.loop import accumulate_gradients
from tunesmith.train.pipeline import run_training

from .conftest import chat_rows, write_jsonl


def make_cfg(model_dir: Path, data: Path, **train):
    train = {"batch_size": 4, "micro_batch_size": 2, "learning_rate": 5e-3, "epochs": 2, **train}
    return load_config(
        None,
        {
            "model": {"name": str(model_dir)},
            "data": {"train": str(data), "val_split": 0.0, "max_len": 256},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
            "train": train,
        },
    )


def lora_grads(model_dir: Path, chat_file: Path, micro: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model, tok, _ = load_model(str(model_dir))
    # B starts at zero, which would make A's gradient zero too: give B values so every gradient is real.
    model = randomize_b(add_lora(model, load_config(None, {"lora": {"dropout": 0.0, "r": 4}}).lora), 0.02)
    rows, _ = Renderer(tok).render_all(read_examples(chat_file).examples[:8])
    micro_batches = [[[e] for e in rows[i : i + micro]] for i in range(0, 8, micro)]
    accumulate_gradients(model, micro_batches, tok.pad_token_id, bf16=False)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_accumulation_8x1_equals_2x4(tiny_model_dir: Path, chat_file: Path) -> None:
    one_batch = lora_grads(tiny_model_dir, chat_file, micro=8)
    accumulated = lora_grads(tiny_model_dir, chat_file, micro=2)
    assert one_batch.keys() == accumulated.keys() and one_batch
    for name, g in one_batch.items():
        assert g.abs().sum() > 0, name
        torch.testing.assert_close(accumulated[name], g, atol=1e-5, rtol=0, msg=name)


def adapter_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def test_resume_is_exact(tmp_path: Path, tiny_model_dir: Path, chat_file: Path) -> None:
    """20 steps straight == 10 steps, stop, --resume for 10 more (dropout on, so RNG state matters)."""
    cfg = make_cfg(tiny_model_dir, chat_file, max_steps=20, save_every=10, epochs=5)
    straight = run_training(cfg, tmp_path / "straight")
    stopped = run_training(cfg, tmp_path / "resumed", stop_after=10)
    assert stopped.loop.step == 10 and not runs.is_run(tmp_path / "resumed"), "a stopped run must not look finished"
    resumed = run_training(cfg, tmp_path / "resumed", resume=True)
    assert resumed.loop.step == straight.loop.step == 20
    a, b = adapter_tensors(tmp_path / "straight"), adapter_tensors(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=k)
    lines = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 21)), "metrics continue without gaps or repeats"


def test_saved_adapter_loads_in_plain_peft(tmp_path: Path, tiny_model_dir: Path, chat_file: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = run_training(make_cfg(tiny_model_dir, chat_file, max_steps=4), tmp_path / "run")
    ours, tok, _ = load_model(str(result.run_dir), merge_adapter=False)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    plain = PeftModel.from_pretrained(base, str(result.run_dir / "adapter")).eval()
    ids = torch.tensor([tok("Paint the kite teal")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, plain(ids).logits, atol=1e-6, rtol=0)
        merged, _, _ = load_model(str(result.run_dir))  # merged in memory for inference
        torch.testing.assert_close(merged(ids).logits, plain(ids).logits, atol=1e-4, rtol=0)
        # ...and the adapter actually changed the model (PEFT wraps `base` in place, so load a fresh one).
        untouched = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        assert (plain(ids).logits - untouched(ids).logits).abs().max() > 1e-4


def test_run_folder_contents(tmp_path: Path, tiny_model_dir: Path, chat_file: Path) -> None:
    cfg = make_cfg(tiny_model_dir, chat_file, max_steps=3)
    run_training(cfg, tmp_path / "run")
    run = tmp_path / "run"
    info = runs.read_run(run)
    assert info.status == "completed" and info.method == "lora" and info.steps == 3
    assert all([info.hashes.train_data, info.hashes.model, info.hashes.chat_template, info.hashes.masking])
    assert info.counts.train["kept"] == 24 and info.versions["torch"]
    assert json.loads((run / "run.json").read_text()) == info.to_dict(), "the typed record is the whole file"
    assert (run / "adapter" / "adapter_config.json").is_file() and (run / "adapter" / "tokenizer.json").is_file()
    assert load_config(run / "config.yaml").train.max_steps == 3
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "loss", "lr", "grad_norm", "tokens_per_s"} <= steps[0].keys()
    with pytest.raises(UserError, match="already holds a finished run"):
        run_training(cfg, run)


def test_full_finetune_learns_and_saves_a_plain_hf_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    data = write_jsonl(tmp_path / "d.jsonl", chat_rows(40, seed=3))
    cfg = make_cfg(tiny_model_dir, data, method="full", learning_rate=3e-3, epochs=3)
    cfg.data.val_split = 0.2
    result = run_training(cfg, tmp_path / "full")
    history = [h["val_loss"] for h in result.loop.history]
    assert history[-1] < history[0], "validation loss goes down"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "full" / "model")
    assert sum(p.numel() for p in model.parameters()) > 1e6


def test_early_stopping_keeps_best_weights(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", chat_rows(40, seed=4))
    # A learning rate far too high makes validation loss rise; patience 1 stops at the first worse eval.
    cfg = make_cfg(tiny_model_dir, data, learning_rate=0.5, epochs=6, eval_every=1, early_stopping_patience=1)
    cfg.data.val_split = 0.2
    result = run_training(cfg, tmp_path / "run")
    info = runs.read_run(tmp_path / "run")
    assert result.loop.stopped_early and info.stopped_early
    assert info.best_step < info.steps
    assert info.best_val_loss == min(h["val_loss"] for h in result.loop.history)


def test_a_continued_adapter_keeps_its_fp32_weights_in_bf16(tmp_path: Path, tiny_model_dir: Path) -> None:
    """An SFT run given as the model (RFT's and DPO's usual start): with bf16 the frozen base is stored in
    bf16, but the adapter it continues stays bit-for-bit its fp32 self, as a fresh adapter is fp32. Cast
    with the rest, it would start rounded to bf16 (measured: ~1e-4 off, and an RFT run that kept the start
    did not end on the start)."""
    from peft import PeftModel

    from tunesmith.train.setup import prepare_model

    torch.manual_seed(0)
    base, _, _ = load_model(str(tiny_model_dir))
    randomize_b(add_lora(base, load_config(None, {"lora": {"r": 4}}).lora), 0.02).save_pretrained(tmp_path / "ad")
    loaded = PeftModel.from_pretrained(load_model(str(tiny_model_dir))[0], str(tmp_path / "ad"))
    saved = {n: p.detach().clone() for n, p in loaded.named_parameters() if "lora_" in n}
    assert any(bool((t.bfloat16().float() != t).any()) for t in saved.values()), "the check needs fp32 values"
    model = prepare_model(loaded, "lora", load_config(None, {}).lora, bf16=True)
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], t) and params[n].requires_grad for n, t in saved.items())
    frozen = [p for n, p in params.items() if "lora_" not in n]
    assert frozen and all(p.dtype == torch.bfloat16 and not p.requires_grad for p in frozen)
