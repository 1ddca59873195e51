"""LoRA's sum accumulated in place (models/lora.py, fuse_lora_sums): the same loss and gradients as PEFT's own
forward, PEFT's forward wherever the adapter is off, merged or loaded to train further, and three fewer passes
over each adapted layer's output in a step."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from tunesmith.config import load_config
from tunesmith.models import lora
from tunesmith.models.load import load_model


def _pair(model_dir: Path, dropout: float = 0.0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The same adapter (seeded A, random B) as PEFT runs it and as tunesmith runs it."""
    base, _, _ = load_model(str(model_dir))
    settings = load_config(None, {"lora": {"dropout": dropout, "r": 4, "alpha": 8}}).lora
    made = []
    for fuse in (False, True):
        torch.manual_seed(5)
        model = lora.add_lora(copy.deepcopy(base), settings)
        if not fuse:  # PEFT's own forward back on every module
            for m in model.modules():
                m.__dict__.pop("forward", None)
        torch.manual_seed(6)
        made.append(lora.randomize_b(model, 0.5))
    return made[0], made[1]


def _loss_and_grads(model: torch.nn.Module, ids: torch.Tensor, seed: int = 0) -> tuple[float, dict]:
    torch.manual_seed(seed)  # (the same dropout masks on both sides)
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    return float(loss.detach()), grads


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_the_fused_sum_gives_peft_s_loss_and_gradients(tiny_model_dir: Path, dropout: float) -> None:
    plain, fused = _pair(tiny_model_dir, dropout)
    assert all(
        "forward" in m.__dict__ for m in fused.modules() if type(m).__name__ == "Linear" and hasattr(m, "lora_A")
    )
    ids = torch.randint(0, 1000, (2, 19), generator=torch.Generator().manual_seed(0))
    loss_p, grads_p = _loss_and_grads(plain, ids)
    loss_f, grads_f = _loss_and_grads(fused, ids)
    assert loss_f == pytest.approx(loss_p, rel=1e-6)
    assert grads_f.keys() == grads_p.keys() and len(grads_p) == 2 * 7 * 2  # A and B of 7 modules in 2 layers
    for name, g in grads_p.items():
        torch.testing.assert_close(grads_f[name], g, rtol=1e-5, atol=1e-7, msg=name)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # in bf16 the fused sum rounds once where PEFT rounds thrice
        assert _loss_and_grads(fused, ids)[0] == pytest.approx(_loss_and_grads(plain, ids)[0], rel=1e-2)


def test_peft_s_own_forward_runs_where_the_adapter_is_off_or_merged(tiny_model_dir: Path) -> None:
    """The KL term's and DPO's reference is the adapter disabled: exactly the base model. A merged adapter is
    in the weights: adding B A x again would count it twice."""
    base, _, _ = load_model(str(tiny_model_dir))
    _, fused = _pair(tiny_model_dir)
    ids = torch.randint(0, 1000, (1, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        with fused.disable_adapter():
            torch.testing.assert_close(fused(input_ids=ids).logits, base(input_ids=ids).logits, rtol=0, atol=0)
        tuned = fused(input_ids=ids).logits
        assert (tuned - base(input_ids=ids).logits).abs().max() > 1e-3  # the adapter moves the output
        fused.merge_adapter()
        torch.testing.assert_close(fused(input_ids=ids).logits, tuned, rtol=1e-4, atol=1e-5)
        fused.unmerge_adapter()
        torch.testing.assert_close(fused(input_ids=ids).logits, tuned, rtol=1e-5, atol=1e-6)


def test_an_adapter_loaded_to_train_further_is_fused_too(tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    plain, fused = _pair(tiny_model_dir)
    fused.save_pretrained(tmp_path / "adapter")  # the adapter files are PEFT's own: nothing of the fusion in them
    base, _, _ = load_model(str(tiny_model_dir))
    again = lora.continue_lora(PeftModel.from_pretrained(base, str(tmp_path / "adapter")))
    ids = torch.randint(0, 1000, (2, 13), generator=torch.Generator().manual_seed(2))
    loss_a, grads_a = _loss_and_grads(again, ids)
    loss_p, grads_p = _loss_and_grads(plain, ids)
    assert loss_a == pytest.approx(loss_p, rel=1e-6) and grads_a.keys() == grads_p.keys()
    assert sum("forward" in m.__dict__ for m in again.modules()) == 2 * 7


def test_a_step_makes_three_fewer_output_sized_passes_per_adapted_layer(tiny_model_dir: Path) -> None:
    """What the fusion is for: per adapted layer, PEFT's scaled copy and sum in the forward pass and its scaled
    gradient in the backward pass are gone (the backward pass scales rank-sized products instead), and no copy
    of the gradient takes their place (an in-place sum on a view would add one: autograd's CopySlices)."""
    plain, fused = _pair(tiny_model_dir)
    ids = torch.randint(0, 1000, (2, 19), generator=torch.Generator().manual_seed(0))

    def elements(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
        """(calls, elements of the first input) of each op in a forward and backward pass."""
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            _loss_and_grads(model, ids)
        out: dict[str, tuple[int, int]] = {}
        for e in prof.key_averages(group_by_input_shape=True):
            first = e.input_shapes[0] if e.input_shapes and e.input_shapes[0] else []
            calls, n = out.get(e.key, (0, 0))
            out[e.key] = (calls + e.count, n + e.count * math.prod(first))
        return out

    p, f = elements(plain), elements(fused)
    rows, outputs = 2 * 19, 2 * (32 + 16 + 16 + 32 + 64 + 64 + 32)  # 2 layers: q k v o gate up down
    # 14 forward sums, and 11 of the input's gradient (``_LoraLinear``): q, k and v of the first layer read the
    # embeddings, which need none
    assert f["aten::addmm_"][0] == 14 + 11 and "aten::addmm_" not in p
    assert p["aten::add"][0] - f["aten::add"][0] >= 14  # the forward sums
    assert p["aten::add"][1] - f["aten::add"][1] >= rows * outputs
    assert p["aten::mul"][1] - f["aten::mul"][1] >= 0.8 * 2 * rows * outputs  # the scaled copy and gradient
    for op in ("aten::clone", "aten::copy_"):  # nothing copied in their place
        assert f.get(op, (0, 0))[1] <= p.get(op, (0, 0))[1], op


def test_the_written_out_backward_is_autograd_s_bit_for_bit(tiny_model_dir: Path, monkeypatch) -> None:
    """fp32 calls take ``_LoraLinear``; the ops autograd would run for the same forward give the very same
    loss and gradients."""
    _, fused = _pair(tiny_model_dir)
    ids = torch.randint(0, 1000, (2, 19), generator=torch.Generator().manual_seed(3))
    calls = []
    apply = lora._LoraLinear.apply
    monkeypatch.setattr(lora._LoraLinear, "apply", lambda *a: calls.append(1) or apply(*a))
    loss_w, grads_w = _loss_and_grads(fused, ids)
    assert len(calls) == 14
    monkeypatch.setattr(lora, "_written_out", lambda *a: False)
    loss_a, grads_a = _loss_and_grads(fused, ids)
    assert len(calls) == 14 and loss_w == loss_a
    for name, g in grads_a.items():
        assert torch.equal(grads_w[name], g), name
