"""LoRA through PEFT.

    x ──► W (frozen) ──────────────┐
    │                              + ──► h        h = W x + (alpha / r) · B A x
    └──► dropout ─► A (r×in) ─► B (out×r)         A random, B zero: training starts at the base model

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models" (2021), arXiv:2106.09685.
We use PEFT rather than our own layers: its adapter files load in PEFT, transformers and vLLM. One thing of
PEFT's forward is replaced (``fuse_lora_sums``): the adapter's term is added into the frozen layer's output by
the second matmul itself.
"""

from __future__ import annotations

import contextlib
import types
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from tunesmith.config import LoraSettings


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    # PEFT calls a transformers property that transformers itself has deprecated; not ours to act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def continue_lora(model: Any) -> Any:
    """A loaded PeftModel (a LoRA run's adapter on its base) made to train its adapter further, the adapter
    weights in fp32 as a fresh adapter's are."""
    for name, p in model.named_parameters():
        trains = "lora_" in name
        if trains:
            p.data = p.data.float()
        p.requires_grad_(trains)
    return fuse_lora_sums(model)


def add_lora(model: Any, settings: LoraSettings) -> Any:
    from peft import LoraConfig, get_peft_model

    from tunesmith.models.coverage import check_targets

    check_targets(model, settings.target_modules)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        task_type="CAUSAL_LM",
        bias="none",
    )
    with quiet_peft():
        return fuse_lora_sums(get_peft_model(model, config))


def fuse_lora_sums(model: Any) -> Any:
    """PEFT computes ``W x + B(A x) * scale`` as three tensors the size of the layer's output (B's product, its
    scaled copy, the sum), and the backward pass scales the output-sized gradient once more. Here B's product
    is accumulated into ``W x`` in place (``addmm_``, with ``alpha`` = scale): the same sum without those
    tensors, and the backward pass scales only rank-sized products. On the short set in fp32 on a Zen 3 EPYC:
    15% less time a step, 18% less peak RSS (BENCHMARKS.md, "LoRA's sum accumulated in place"). Anything
    else (adapter disabled or merged, several adapters, variants such as DoRA, extra arguments) runs PEFT's
    own forward. Returns ``model``."""
    from peft.tuners.lora.layer import Linear

    for module in model.modules():
        if type(module) is Linear and isinstance(module.base_layer, nn.Linear):
            module.forward = types.MethodType(_fused_forward, module)
    return model


def _fused_forward(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
    active = self.active_adapters
    name = active[0] if len(active) == 1 else None
    if args or kwargs or self.disable_adapters or self.merged or name not in self.lora_A or name in self.lora_variant:
        return type(self).forward(self, x, *args, **kwargs)
    lora_a, lora_b = self.lora_A[name], self.lora_B[name]
    # Rows flattened first, so that the in-place sum is on the product itself: on a view of it, autograd would
    # copy the whole gradient back in the backward pass (CopySlices), one output-sized pass for another.
    flat = x.reshape(-1, x.shape[-1])
    if _written_out(self, x, name):
        base = self.base_layer
        out = _LoraLinear.apply(flat, base.weight, base.bias, lora_a.weight, lora_b.weight, self.scaling[name])
        return out.view(*x.shape[:-1], out.shape[-1])
    result = self.base_layer(flat)
    low = lora_a(self.lora_dropout[name](self._cast_input_dtype(flat, lora_a.weight.dtype)))  # (rows, r)
    # (under autocast an in-place op is not cast for us: both go to the output's dtype, as F.linear would)
    result.addmm_(low.to(result.dtype), lora_b.weight.t().to(result.dtype), alpha=self.scaling[name])
    return result.view(*x.shape[:-1], result.shape[-1])


def _written_out(layer: Any, x: Any, name: str) -> bool:
    """Whether ``_LoraLinear`` computes this call: plain fp32-style maths (one dtype throughout, no autocast),
    no dropout, a frozen base and a bias-free B, in eager mode. Elsewhere autograd runs the ops above: under
    autocast they must be cast, and compiled layers were measured with those ops, not with this Function."""
    base = layer.base_layer
    weights = (base.weight, layer.lora_A[name].weight, layer.lora_B[name].weight)
    return (
        isinstance(layer.lora_dropout[name], nn.Identity)
        and layer.lora_B[name].bias is None
        and not base.weight.requires_grad
        and (base.bias is None or not base.bias.requires_grad)
        and all(w.dtype == x.dtype for w in weights)
        and not torch.is_autocast_enabled(x.device.type)
        and not torch.compiler.is_compiling()
    )


class _LoraLinear(torch.autograd.Function):
    """``W x + b + scale · B (A x)`` with its backward pass written out. Autograd, for the same ops, makes the
    input's gradient as two output-sized tensors and adds them (W's product, then A's), over several graph
    nodes a layer; here A's product is accumulated into W's in place (``addmm_``), in one node. The same values,
    bit for bit in fp32 (tests/test_lora_sums.py). Fed only fp32-style calls (``_written_out``). One micro-batch's
    forward and backward took 0.5-3.4% less time on a Zen 3 EPYC (BENCHMARKS.md, "Zen 3, 2026-12-08")."""

    @staticmethod
    def forward(ctx: Any, x: Any, weight: Any, bias: Any, lora_a: Any, lora_b: Any, scale: float) -> Any:
        out = torch.addmm(bias, x, weight.t()) if bias is not None else x @ weight.t()
        low = x @ lora_a.t()  # (rows, r)
        out.addmm_(low, lora_b.t(), alpha=scale)
        ctx.save_for_backward(x, weight, lora_a, lora_b, low)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, ...]:
        x, weight, lora_a, lora_b, low = ctx.saved_tensors
        need_x, _, _, need_a, need_b, _ = ctx.needs_input_grad
        grad_low = (grad @ lora_b).mul_(ctx.scale)  # d / d (A x)
        grad_x = None
        if need_x:
            grad_x = grad @ weight
            grad_x.addmm_(grad_low, lora_a)
        grad_a = grad_low.t() @ x if need_a else None
        grad_b = (grad.t() @ low).mul_(ctx.scale) if need_b else None
        return grad_x, None, None, grad_a, grad_b, None


def randomize_b(model: Any, std: float) -> Any:
    """Draw the adapter's B matrices from N(0, ``std``) (torch's global generator), in place; returns ``model``.
    A fresh adapter's B is zero, so it changes nothing: this makes a random change of the weights of a known
    size (the behavioural probe's fragility filter, and tests that need a moved adapter or nonzero gradients)."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, std)
    return model
