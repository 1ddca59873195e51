"""Packing must change only the layout, never the maths: no attention crosses between examples."""

from dataclasses import replace

import pytest
import torch

from tunesmith.config import LoraSettings
from tunesmith.data.formats import read_examples
from tunesmith.data.render import IGNORE, Renderer
from tunesmith.models.load import load_model
from tunesmith.models.lora import add_lora, randomize_b
from tunesmith.train.batches import collate, collate_packed, pack_best_fit, to_batch
from tunesmith.train.loss import linear_cross_entropy, token_loss_sum


@pytest.fixture
def lora_model(tiny_model_dir):
    torch.manual_seed(0)
    model, tok, _ = load_model(str(tiny_model_dir))
    model = randomize_b(add_lora(model, LoraSettings(r=4, dropout=0.0)), 0.05)
    return model, tok


def grads_of(model, loss) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_best_fit_decreasing_fills_rows() -> None:
    rows = pack_best_fit([5, 3, 7, 2, 4, 1], capacity=8)
    assert sorted(i for r in rows for i in r) == list(range(6))
    assert all(sum([5, 3, 7, 2, 4, 1][i] for i in r) <= 8 for r in rows)
    assert len(rows) == 3  # 22 tokens in rows of 8: the minimum
    assert pack_best_fit([10, 2], capacity=8) == [[0], [1]]  # an overlong example gets its own row


def test_packed_loss_and_grads_equal_each_example_alone(lora_model, chat_file) -> None:
    model, tok = lora_model
    rows, _ = Renderer(tok).render_all(read_examples(chat_file).examples[:6])
    packed_rows = [[rows[i] for i in r] for r in pack_best_fit([len(e.input_ids) for e in rows], capacity=120)]
    assert any(len(r) > 1 for r in packed_rows), "the test must actually pack several examples into a row"

    loss_packed, n_packed = token_loss_sum(model, collate_packed(packed_rows, tok.pad_token_id))
    g_packed = grads_of(model, loss_packed)
    alone = [token_loss_sum(model, collate([e], tok.pad_token_id)) for e in rows]
    loss_alone = sum(loss for loss, _ in alone)
    g_alone = grads_of(model, loss_alone)
    assert n_packed == sum(n for _, n in alone) == sum(e.n_trained for e in rows)
    torch.testing.assert_close(loss_packed, loss_alone, atol=1e-4, rtol=0)
    for name, g in g_alone.items():
        torch.testing.assert_close(g_packed[name], g, atol=1e-4, rtol=0, msg=name)

    # Per example: keep one example's labels in the packed batch; its loss equals running it alone.
    for target in range(len(rows)):
        only = [
            [e if rows.index(e) == target else replace(e, labels=[IGNORE] * len(e.labels)) for e in r]
            for r in packed_rows
        ]
        loss_one, _ = token_loss_sum(model, collate_packed(only, tok.pad_token_id))
        torch.testing.assert_close(loss_one, alone[target][0], atol=1e-4, rtol=0)


def test_packing_without_the_mask_would_leak(lora_model, chat_file) -> None:
    """Guard the guard: with a plain causal mask the packed loss differs, so the test above can fail."""
    model, tok = lora_model
    rows, _ = Renderer(tok).render_all(read_examples(chat_file).examples[:4])
    batch = collate_packed([rows], tok.pad_token_id)
    leaky = {**batch, "attention_mask": torch.ones(batch["input_ids"].shape, dtype=torch.long)}
    good, _ = token_loss_sum(model, batch)
    bad, _ = token_loss_sum(model, leaky)
    assert abs(float(good) - float(bad)) > 1e-3


@pytest.mark.parametrize("bias", [False, True], ids=["fused", "autograd-chunked"])
def test_chunked_cross_entropy_equals_plain(bias: bool) -> None:
    """Both paths: the fused one (plain linear head: gradients computed in the forward pass) and the
    autograd one kept for other heads. The loss is scaled before backward, as the loop does, so the fused
    backward must scale its stored gradients too."""
    torch.manual_seed(0)
    # float64, so that only the chunking (not summation order) could make a difference
    head = torch.nn.Linear(16, 300, bias=bias).double()
    hidden = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 300, (50,))
    plain = torch.nn.functional.cross_entropy(head(hidden), targets, reduction="sum")
    g_plain = torch.autograd.grad(0.37 * plain, [hidden, head.weight])
    chunked, correct = linear_cross_entropy(head, hidden, targets, chunk_rows=7)
    assert correct == int((head(hidden).argmax(-1) == targets).sum())
    g_chunked = torch.autograd.grad(0.37 * chunked, [hidden, head.weight])
    torch.testing.assert_close(chunked, plain, atol=1e-5, rtol=0)
    for a, b in zip(g_chunked, g_plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    with torch.no_grad():  # evaluation: the same loss, no gradients computed or kept
        quiet, _ = linear_cross_entropy(head, hidden, targets, chunk_rows=7)
    assert not quiet.requires_grad and float(quiet) == pytest.approx(float(plain), abs=1e-9)


def test_fused_cross_entropy_under_bf16_autocast_matches_autograd() -> None:
    """Training's case: bf16 hidden states, a frozen bf16 head (tied to the embeddings, as in SmolLM2),
    autocast on. The fused path runs the same bf16 matmuls as ``head(hidden)`` and the same fp32 softmax."""
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 1000, bias=False).to(torch.bfloat16).requires_grad_(False)
    hidden = torch.randn(40, 64, dtype=torch.bfloat16, requires_grad=True)
    targets = torch.randint(0, 1000, (40,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = torch.nn.functional.cross_entropy(head(hidden).float(), targets, reduction="sum")
        fused, _ = linear_cross_entropy(head, hidden, targets, chunk_rows=16)
    (g_plain,) = torch.autograd.grad(plain, [hidden])
    (g_fused,) = torch.autograd.grad(fused, [hidden])
    assert fused.dtype == torch.float32 and g_fused.dtype == torch.bfloat16
    torch.testing.assert_close(fused, plain, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(g_fused, g_plain, atol=1e-2, rtol=1e-2)


def test_packed_plan_trains_the_same_examples_per_step() -> None:
    from tunesmith.train.batches import plan_steps

    lengths = [30, 200, 45, 60, 120, 33, 90, 15, 70, 41, 52, 180]
    plain = plan_steps(lengths, batch_size=5, micro_batch_size=2, epochs=2, seed=3)
    packed = plan_steps(lengths, batch_size=5, micro_batch_size=2, epochs=2, seed=3, pack=True)
    assert [sorted(s.indices) for s in plain] == [sorted(s.indices) for s in packed]
    assert any(len(row) > 1 for s in packed for mb in s.micro_batches for row in mb), "something was packed"
    for s in packed:
        longest = max(lengths[i] for i in s.indices)
        assert all(sum(lengths[i] for i in row) <= longest for mb in s.micro_batches for row in mb)


def test_training_with_and_without_packing_gives_the_same_adapter(tmp_path, tiny_model_dir) -> None:
    from safetensors.torch import load_file

    from tunesmith.config import load_config
    from tunesmith.train.pipeline import run_training

    from .conftest import chat_rows, write_jsonl

    data = write_jsonl(tmp_path / "d.jsonl", chat_rows(12, seed=5))
    adapters = []
    for packing in (True, False):
        cfg = load_config(
            None,
            {
                "model": {"name": str(tiny_model_dir)},
                "data": {"train": str(data), "val_split": 0.0},
                "lora": {"r": 4, "dropout": 0.0},
                "train": {
                    "max_steps": 3,
                    "batch_size": 6,
                    "micro_batch_size": 3,
                    "learning_rate": 1e-2,
                    "packing": packing,
                    "pack_len": 200,
                    "precision": "fp32",
                    # The rows alone: with replay on, step 1's loss agrees to 1e-7 but the adapters drift past
                    # 1e-5 after 3 steps (not yet explained; see the frontier branch's report).
                    "replay": 0.0,
                },
            },
        )
        run_training(cfg, tmp_path / f"run-{packing}", skip_check=True)
        adapters.append(load_file(tmp_path / f"run-{packing}" / "adapter" / "adapter_model.safetensors"))
    for k in adapters[0]:
        torch.testing.assert_close(adapters[0][k], adapters[1][k], atol=1e-5, rtol=0, msg=k)


def test_bf16_and_checkpointing_keep_the_loss(tmp_path, tiny_model_dir) -> None:
    """bf16 autocast moves the loss only within bf16's precision; gradient checkpointing not at all."""
    from tunesmith.config import load_config
    from tunesmith.models.load import bf16_supported
    from tunesmith.train.pipeline import run_training

    from .conftest import chat_rows, write_jsonl

    data = write_jsonl(tmp_path / "d.jsonl", chat_rows(8, seed=9))
    losses = {}
    for name, extra in {
        "fp32": {"precision": "fp32"},
        "ckpt": {"precision": "fp32", "gradient_checkpointing": True},
        "bf16": {"precision": "bf16"},
    }.items():
        if name == "bf16" and not bf16_supported():
            continue
        cfg = load_config(
            None,
            {
                "model": {"name": str(tiny_model_dir)},
                "data": {"train": str(data), "val_split": 0.0},
                "train": {"max_steps": 2, "batch_size": 4, "micro_batch_size": 4, **extra},
            },
        )
        run_training(cfg, tmp_path / name, skip_check=True)
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        losses[name] = [__import__("json").loads(x)["loss"] for x in lines]
    assert losses["ckpt"] == pytest.approx(losses["fp32"], abs=1e-5)
    if "bf16" in losses:
        assert losses["bf16"] == pytest.approx(losses["fp32"], rel=2e-2)
        assert losses["bf16"] != losses["fp32"], "bf16 really ran (its rounding shows)"


def test_padding_to_a_width_multiple_changes_only_the_shape(lora_model, chat_file) -> None:
    """SFT pads each micro-batch's width up to a multiple of WIDTH_MULTIPLE (fewer distinct shapes for
    oneDNN to build kernels for); the extra positions are masked, so loss and gradients are unchanged, padded
    or packed."""
    from tunesmith.train.batches import WIDTH_MULTIPLE
    from tunesmith.train.objectives.sft import SFT

    model, tok = lora_model
    rows, _ = Renderer(tok).render_all(read_examples(chat_file).examples[:5])
    pad = tok.pad_token_id
    packed_rows = [[rows[i] for i in r] for r in pack_best_fit([len(e.input_ids) for e in rows], capacity=120)]
    for layout in ([[e] for e in rows], packed_rows):
        tight = to_batch(layout, pad)  # (to its longest row)
        wide = SFT().collate(layout, pad)
        assert wide["input_ids"].shape[1] % WIDTH_MULTIPLE == 0
        assert wide["input_ids"].shape[1] > tight["input_ids"].shape[1], "the test data must need padding"
        loss_tight, n_tight = token_loss_sum(model, tight)
        g_tight = grads_of(model, loss_tight)
        loss_wide, n_wide = token_loss_sum(model, wide)
        g_wide = grads_of(model, loss_wide)
        assert n_wide == n_tight
        torch.testing.assert_close(loss_wide, loss_tight, atol=1e-4, rtol=0)
        for name, g in g_tight.items():
            torch.testing.assert_close(g_wide[name], g, atol=1e-4, rtol=0, msg=name)
