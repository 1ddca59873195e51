"""Padding-free decoder passes: a packed batch's real tokens run as one sequence, examples kept apart.

A packed batch (batches.collate_packed) is rows x width, each row holding whole examples and padding to the
longest row. Short-row data pays for that padding in every matmul: the demo's first 160 rows are 129-223
tokens, so a micro-batch of 8 runs ~1,790 positions for ~1,350 real tokens. Here the linear layers, norms and
rotary embeddings see only the real tokens (rounded up to ``WIDTH_MULTIPLE``, so that oneDNN's primitive cache
stays small, see batches.py), and attention alone regroups them, one example per row, to run causally with no
mask: the flash kernel by example, or, for short examples in eager bf16, two matmuls (``_MatmulCausalAttention``;
the CPU flash kernel runs those at a third of the matmul speed). In fp32 the results are the padded pass's to
rounding; in bf16 the matmul attention is as accurate as the flash kernel (tests/test_segments.py).

Examples that start alike (a chat template's system prompt heads every row: 24 of the demo's ~165 tokens)
run their common start once: the others attend to that one copy and take its hidden states, which are theirs
to rounding, as the tokens and positions are the same (batches.py, ``prefix_source``).

It plugs into transformers' attention interface: ``enable`` switches a model whose attention is ``sdpa`` to
``ATTENTION``, which is sdpa itself for every call that does not carry segments (generation, DPO's
shared-prefix pairs), so nothing else changes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.train.batches import WIDTH_MULTIPLE, padded_width

ATTENTION = "tunesmith_segments"
# Examples up to this long attend by two bf16 matmuls instead of the flash kernel (_MatmulCausalAttention).
MATMUL_LONGEST = 256


def enable(model: Any) -> bool:
    """Let ``model``'s packed passes run padding-free; False (and nothing changed) where its attention is not
    plain sdpa or has a logit soft-cap. A sliding window is checked per batch (``usable``)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    config = _config(model)
    if config is None or config._attn_implementation not in ("sdpa", ATTENTION):
        return False
    if getattr(config, "attn_logit_softcapping", None) is not None:
        return False
    AttentionInterface.register(ATTENTION, attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)
    config._attn_implementation = ATTENTION
    return True


def _config(model: Any) -> Any:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "config", None)


def usable(model: Any, batch: dict[str, torch.Tensor]) -> bool:
    """Whether this batch runs padding-free: it says where its examples are, the model is enabled, and no
    example is longer than a sliding window (inside one, a windowed and a full causal mask agree)."""
    config = _config(model)
    if "segments" not in batch or config is None or config._attn_implementation != ATTENTION:
        return False
    window = getattr(config, "sliding_window", None)
    return window is None or int(batch["input_ids"].shape[1]) <= window


def flat_inputs(batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """(the decoder's arguments for one sequence of the batch's real tokens, where each of them sits in the
    batch's rows x width layout, and for each of those the sequence position whose hidden state it has).

    A token that ``prefix_source`` (batches.py) says another example already has at the same place does not
    run again: its example attends to the other example's copy, and takes that copy's hidden state. The
    hidden states are the same, so only the work changes; the gradients of the copies add up in the one.

    ``segment_gather`` (examples x longest) lists each example's token positions in the sequence, its
    shared prefix first; ``segment_back`` maps each position back into that grid. A tail of padding up to
    the next multiple of ``WIDTH_MULTIPLE`` (one token at least) is an example of its own, so it attends to
    nothing real."""
    rows, width = batch["segments"].shape
    device = batch["input_ids"].device
    example = batch["segments"] + torch.arange(rows, device=device)[:, None] * width  # unique per row and example
    real = (batch["segments"] >= 0).reshape(-1).nonzero().squeeze(1)
    source = batch.get("prefix_source")
    source = source.reshape(-1)[real] if source is not None else torch.full_like(real, -1)
    own = real[source < 0]  # the tokens that run, in order; each example's are consecutive
    n = own.numel()
    # At least one token of tail, so that there are always two examples or more: dynamo specialises a dimension
    # of size 1, and one example alone (the KL term's row) would be a compiled variant of its own.
    total = padded_width(n + 1, WIDTH_MULTIPLE)
    tail = total - n  # pad tokens, positions from 0, one example of their own
    ids = torch.cat([batch["input_ids"].reshape(-1)[own], own.new_zeros(tail)])  # any token: nothing reads these
    positions = torch.cat([batch["position_ids"].reshape(-1)[own], torch.arange(tail, device=device)])
    keys = torch.cat([example.reshape(-1)[own], own.new_full((tail,), -1)])
    at = torch.full((rows * width,), -1, dtype=torch.long, device=device)
    at[own] = torch.arange(n, device=device)  # each running token's place in the sequence
    take = torch.where(source < 0, at[real], at[source.clamp(min=0)])
    starts = torch.ones(total, dtype=torch.bool, device=device)
    starts[1:] = keys[1:] != keys[:-1]
    which = starts.cumsum(0) - 1  # each position's example number
    first = starts.nonzero().squeeze(1)  # each example's first running position
    # Each example's shared tokens: how many, and where its source's copy starts (all come from one example).
    shared_keys = example.reshape(-1)[real][source >= 0]
    prefix = torch.zeros_like(first)
    if shared_keys.numel():
        prefix = (keys[first][:, None] == shared_keys[None]).sum(1)
    origin = at[source[source >= 0].min()] if shared_keys.numel() else 0
    length = torch.diff(torch.cat([first, first.new_tensor([total])])) + prefix
    longest = int(length.max())
    col = torch.arange(longest, device=device)[None, :]
    gather = torch.where(col < prefix[:, None], origin + col, first[:, None] + col - prefix[:, None])
    offset = torch.arange(total, device=device) - first[which] + prefix[which]
    args = {
        "input_ids": ids[None],
        "position_ids": positions[None],
        # A 4-D mask is passed through as it is, so transformers builds none; ``attention`` ignores it.
        "attention_mask": torch.ones((1, 1, 1, 1), dtype=torch.bool, device=device),
        "segment_gather": gather.clamp(max=total - 1),
        "segment_back": which * longest + offset,
    }
    return args, real, take


def attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    segment_gather: torch.Tensor | None = None,
    segment_back: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention function for ``ATTENTION``: sdpa, by example where the call carries segments.

    The sequence's heads x tokens are gathered into examples x heads x longest (the positions past an
    example's end read the tokens after it; being later, no real query sees them), attended causally, and
    the real positions gathered back, as (1, tokens, heads, dim) like every attention function returns."""
    if segment_gather is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        if attention_mask is not None and attention_mask.shape == (1, 1, 1, 1) and query.shape[2] > 1:
            # flat_inputs' placeholder without its segments: this model's layers drop extra arguments, and
            # sdpa would let every token see every example. Fail rather than train on that.
            raise RuntimeError(f"{type(module).__name__} does not pass attention arguments on; segments need it")

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    examples, longest = segment_gather.shape
    heads, kv_heads, dim = query.shape[1], key.shape[1], query.shape[3]
    index = segment_gather.reshape(-1)

    def by_example(x: torch.Tensor, n_heads: int) -> torch.Tensor:
        return x[0].index_select(1, index).view(n_heads, examples, longest, dim).transpose(0, 1)

    eager_bf16 = query.dtype == torch.bfloat16 and not torch.compiler.is_compiling()
    if longest <= MATMUL_LONGEST and eager_bf16 and not dropout:
        group = heads // kv_heads
        # Query heads sharing a key head become one matrix of group x longest rows (no repeated keys).
        grouped = by_example(query, heads).reshape(examples, kv_heads, group * longest, dim)
        out = _MatmulCausalAttention.apply(
            grouped, by_example(key, kv_heads), by_example(value, kv_heads), scaling or dim**-0.5
        )
        out = out.view(examples, heads, longest, dim).transpose(1, 2).reshape(examples * longest, heads, dim)
        return out.index_select(0, segment_back)[None], None
    out = F.scaled_dot_product_attention(
        by_example(query, heads),
        by_example(key, kv_heads),
        by_example(value, kv_heads),
        dropout_p=dropout,
        is_causal=True,
        scale=scaling,
        enable_gqa=heads != kv_heads,
    )
    out = out.transpose(1, 2).reshape(examples * longest, heads, dim).index_select(0, segment_back)
    return out[None], None


class _MatmulCausalAttention(torch.autograd.Function):
    """Causal attention as two batched matmuls, keeping only the probabilities (bf16) for backward.

    On a CPU the flash kernel runs short examples at a fraction of the matmul peak (~0.1 TFLOP/s on a Zen 4
    EPYC, forward and backward); in one same-run comparison this took 1.2x less time for 8 examples of 130-210
    tokens and 2.8x less for 16 of 100 (BENCHMARKS.md). For examples up to ``MATMUL_LONGEST`` tokens the
    probabilities it keeps are small (8 examples of 224 tokens, 9 heads: 7 MB a layer). Scores and softmax are
    fp32 (``_fp32_product``), the probabilities kept in bf16; softmax's backward reads bf16 and sums in fp32.
    Errors against fp64 are the flash kernel's in bf16 (tests/test_segments.py).

    ``query`` holds each key head's group of query heads as one matrix: examples x kv heads x (group x
    longest) x dim."""

    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
        examples, kv_heads, rows, _ = query.shape
        longest = key.shape[2]
        exact = math.frexp(scale)[0] == 0.5  # a power of two (head dim 64: 1/8) scales bf16 queries exactly
        scaled = query * scale if exact else query
        scores = _fp32_product(scaled, key.transpose(-1, -2)).view(examples, kv_heads, -1, longest, longest)
        if not exact:
            scores.mul_(scale)
        future = torch.ones(longest, longest, dtype=torch.bool, device=query.device).triu(1)
        probs = torch.softmax(scores.masked_fill_(future, float("-inf")), -1).to(query.dtype)
        probs = probs.view(examples, kv_heads, rows, longest)
        ctx.save_for_backward(query, key, value, probs)
        ctx.scale = scale
        return torch.matmul(probs, value)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        query, key, value, probs = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_value = torch.matmul(probs.transpose(-1, -2), grad_out)
        grad_probs = torch.matmul(grad_out, value.transpose(-1, -2))
        # softmax's backward, P * (dP - sum_j P_ij dP_ij), fused, summing in fp32; the scale goes on the small side
        grad_scores = torch.ops.aten._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
        grad_query = torch.matmul(grad_scores, key).mul_(ctx.scale)
        grad_key = torch.matmul(grad_scores.transpose(-1, -2), query).mul_(ctx.scale)
        return grad_query, grad_key, grad_value, None


def _fp32_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for bf16 ``a`` and ``b``, in fp32. The product of two bf16 numbers is exact in fp32 and oneDNN
    sums in fp32, so its bf16 mode for fp32 matmuls loses nothing here, at ~1.3x a bf16 matmul's time. A bf16
    matmul would round the result to bf16: with peaked attention, 1.5x the flash kernel's error."""
    saved = torch.backends.mkldnn.matmul.fp32_precision
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    try:
        return torch.matmul(a.float(), b.float())
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = saved
