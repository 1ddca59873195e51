"""Speed levers that must not change results: generation timing, torch.compile."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.generate import GenerationStats, generate
from tunesmith.models.load import load_model

from .conftest import chat_rows, write_jsonl


def test_generation_stats_time_the_prefill_and_count_decoded_tokens(tiny_model_dir: Path) -> None:
    model, tok, _ = load_model(str(tiny_model_dir))
    convs = [[{"role": "user", "content": text}] for text in ("Hi", "Paint the car red", "What is two plus two?")]
    stats = GenerationStats()
    timed = generate(model, tok, convs, max_new_tokens=6, batch_size=2, stats=stats)
    plain = generate(model, tok, convs, max_new_tokens=6, batch_size=2)
    assert [c.text for c in timed] == [c.text for c in plain], "timing must not change the output"
    assert stats.batches == 2 and len(stats.ttft_s or []) == 2 and all(t > 0 for t in stats.ttft_s or [])
    # The first token of each row comes from the prefill; every later one, up to and including a stop
    # token, is a decoded token.
    assert stats.decode_tokens == sum(c.completion_tokens - 1 for c in timed) > 0
    assert stats.decode_s > 0 and stats.decode_tokens_per_s is not None
    assert "time to first token" in stats.summary() and "decode" in stats.summary()


def test_the_output_projection_gets_a_contiguous_last_position(tiny_model_dir: Path) -> None:
    """Generation projects ``hidden[:, -1:, :]``, a strided view, for which torch's CPU bf16 ``linear``
    copies the whole vocabulary matrix once per row (~100x slower at batch 8 on the default model). Every
    model tunesmith loads hands the projection a contiguous input, with the same result."""
    import torch

    model, tok, _ = load_model(str(tiny_model_dir), dtype=torch.bfloat16)
    seen: list[bool] = []
    head = model.get_output_embeddings()
    probe = head.register_forward_hook(lambda _m, args, _out: seen.append(args[0].is_contiguous()))
    convs = [[{"role": "user", "content": text}] for text in ("Hi", "Paint the car red, and the door blue")]
    replies = generate(model, tok, convs, max_new_tokens=3, batch_size=2)
    probe.remove()
    assert seen and all(seen), "the output projection was handed a strided view"
    hidden = torch.randn(2, 5, head.in_features, dtype=torch.bfloat16)
    assert torch.equal(head(hidden[:, -1:, :]), torch.nn.functional.linear(hidden[:, -1:, :].contiguous(), head.weight))
    assert len(replies) == 2


@pytest.mark.slow
def test_compiled_layers_give_the_eager_loss_and_gradients(tmp_path: Path, tiny_model_dir: Path) -> None:
    """torch.compile on each decoder layer (the --compile path) through PEFT's LoRA layers and the packed
    4-D mask. The aot_eager backend traces and runs the same graphs as inductor without its C++ code
    generation, which takes minutes on 2 cores; inductor itself is measured in BENCHMARKS.md."""
    import torch

    from tunesmith.config import LoraSettings
    from tunesmith.data.formats import read_examples
    from tunesmith.data.render import Renderer
    from tunesmith.models.lora import add_lora
    from tunesmith.train.batches import to_batch
    from tunesmith.train.loss import causal_lm_parts, token_loss_and_accuracy
    from tunesmith.train.setup import compile_layers

    def loss_and_grads(compiled: bool, batch: dict[str, torch.Tensor]) -> tuple[float, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model, _, _ = load_model(str(tiny_model_dir))
        model = add_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0))
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.02)
        if compiled:
            compile_layers(model, backend="aot_eager")
            layers = causal_lm_parts(model)[0].layers
            assert all(layer._compiled_call_impl is not None for layer in layers)
        loss, _, _ = token_loss_and_accuracy(model, batch)
        loss.backward()
        return float(loss), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    _, tok, _ = load_model(str(tiny_model_dir))
    rows, _ = Renderer(tok).render_all(
        read_examples(write_jsonl(Path(tiny_model_dir).parent / "c.jsonl", chat_rows(4))).examples
    )
    batch = to_batch([[rows[0], rows[1]], [rows[2], rows[3]]], tok.pad_token_id)  # two packed rows
    eager_loss, eager_grads = loss_and_grads(False, batch)
    compiled_loss, compiled_grads = loss_and_grads(True, batch)
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-5)
    for name, g in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], g, atol=1e-5, rtol=1e-4, msg=name)


def test_bf16_lora_keeps_no_copies_of_its_inputs(tmp_path: Path, tiny_model_dir: Path) -> None:
    """With bf16 autocast, LoRA layers use their bf16 input as it is: the same loss and gradients to the bit
    as PEFT's cast-up-and-back-down, and fewer bytes saved for the backward pass."""
    import torch

    from tunesmith.config import LoraSettings
    from tunesmith.data.formats import read_examples
    from tunesmith.data.render import Renderer
    from tunesmith.models.lora import add_lora
    from tunesmith.train.batches import to_batch
    from tunesmith.train.loop import autocast
    from tunesmith.train.loss import token_loss_sum
    from tunesmith.train.setup import keep_lora_inputs_in_bf16

    _, tok, _ = load_model(str(tiny_model_dir))
    rows, _ = Renderer(tok).render_all(read_examples(write_jsonl(tmp_path / "c.jsonl", chat_rows(4))).examples)
    batch = to_batch([[r] for r in rows], tok.pad_token_id)

    def run(keep: bool) -> tuple[float, int, int, int, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model = add_lora(load_model(str(tiny_model_dir), dtype=torch.bfloat16)[0], LoraSettings(r=4, alpha=8))
        if keep:
            keep_lora_inputs_in_bf16(model)
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(True):
            loss, _ = token_loss_sum(model, batch)
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        lora_inputs = sum(hasattr(m, "cast_input_dtype_enabled") for m in model.modules())
        return float(loss), sum(storages.values()), len(storages), lora_inputs, grads

    peft_loss, peft_bytes, peft_saved, lora_layers, peft_grads = run(False)
    loss, saved_bytes, saved, _, grads = run(True)
    assert loss == peft_loss
    for name, g in peft_grads.items():
        assert torch.equal(grads[name], g), name
    assert saved_bytes < peft_bytes and peft_saved - saved >= lora_layers // 2


def test_compile_auto_only_where_the_warm_up_pays_back() -> None:
    import shutil

    from tunesmith.config import load_config
    from tunesmith.errors import UserError
    from tunesmith.train.setup import choose_compile

    assert load_config(None, {}).train.compile == "auto"
    with pytest.raises(UserError, match=r"train\.compile"):
        load_config(None, {"train": {"compile": "sometimes"}})
    assert choose_compile(True, 1, 1)[0] and not choose_compile(False, 10**6, 10**9)[0]
    off, why = choose_compile("auto", 12, 135_000_000)
    assert not off and "12 steps" in why
    assert not choose_compile("auto", 500, 2_000_000)[0], "a tiny model never pays back the warm-up"
    on, why = choose_compile("auto", 102, 135_000_000)
    assert on == (shutil.which("g++") is not None or shutil.which("c++") is not None), why
