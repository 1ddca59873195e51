"""The training loss: summed cross-entropy over trained tokens only, without full logits.

Two choices matter here:
* The loss is a *sum*; the loop divides by the trained-token count of the whole optimizer step, so
  gradient accumulation (8x1 or 2x4) gives the same update as one big batch. The usual "mean per
  micro-batch, then average" weights short replies more heavily than long ones.
* Only positions whose next token is trained reach the output projection, so prompt positions (77% of
  the demo's tokens) never touch the vocabulary-sized matmul, and the batch x length x vocab logits tensor
  is never materialised. For a plain linear head (every model we train), projection and cross-entropy
  are fused: chunk by chunk, the forward pass computes the loss *and* its gradient with respect to the
  hidden states (softmax minus one-hot, times the weight), keeps that small (rows x hidden) gradient and
  drops the logits. Nothing vocabulary-sized is saved for backward or recomputed there. Each chunk's
  logits (``CHUNK_BYTES``) and the softmax made of them live in per-thread scratch that stays allocated, so
  no chunk faults in fresh pages. The KL to the base (``linear_kl_to_base``) is fused the same way.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tunesmith.data.render import IGNORE
from tunesmith.train import segments

CHUNK_ROWS = 1024  # x vocab 49k x 4 bytes = ~200 MB of fp32 logits per chunk for SmolLM2 (unfused heads)
# fp32 logits per fused chunk, held in reused scratch (``_vocab_scratch``): a few of these stay allocated per
# thread that trains or evaluates (85 rows of SmolLM2's 49k vocabulary).
CHUNK_BYTES = 16 * 2**20


def causal_lm_parts(model: Any) -> tuple[Any, Any]:
    """(decoder stack, output projection) of a causal LM, looking through a PEFT wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def decoder_hidden(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
    """(last hidden states, output projection): the one decoder call every pass makes, so that compiled layers
    see the same arguments from training, validation, the probe and the KL term (setup.compile_layers).
    use_cache=False: with a KV cache the compiled layers guard on its per-layer state and recompile.

    A packed batch runs padding-free where the model allows it (segments.py); its hidden states come back in
    the batch's rows x width layout all the same (zeros at padding), so every caller indexes them as before."""
    decoder, head = causal_lm_parts(model)
    if segments.usable(model, batch):
        args, real, take = segments.flat_inputs(batch)
        flat = decoder(**args, use_cache=False).last_hidden_state[0].index_select(0, take)
        rows, width = batch["input_ids"].shape
        hidden = flat.new_zeros(rows * width, flat.shape[-1]).index_copy(0, real, flat).view(rows, width, -1)
        return hidden, head
    hidden = decoder(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch.get("position_ids"),
        use_cache=False,
    ).last_hidden_state
    return hidden, head


def _ce_sum(head: Any, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = head(hidden)
    if logits.dtype in (torch.bfloat16, torch.float16):
        logits = logits.float()  # softmax over 49k classes wants fp32 even when the matmul ran in bf16
    correct = (logits.detach().argmax(-1) == targets).sum()
    return F.cross_entropy(logits, targets, reduction="sum"), correct


def _matmul_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype ``head(hidden)`` would have run in: autocast's where it is on."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _fused_chunks(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_rows: int,
    dtype: torch.dtype,
    want: tuple[bool, bool],
    row_losses: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(loss sum, correct count, d loss / d hidden, d loss / d weight), chunk by chunk. The matmuls run in
    ``dtype`` (bf16 under autocast, as ``head(hidden)`` would); softmax and the loss in fp32 (fp64 for fp64).
    ``row_losses``, when given, receives each row's own cross-entropy.

    Every vocabulary-sized step runs in place in this thread's scratch (``_vocab_scratch``): a fresh 16 MB
    tensor per op faults its pages in anew (under the profiler a subtraction took 27 ms where an in-place
    ``exp_`` of the same size took 0.6 ms). The head alone went from 326 to 186 ms for 933 rows of SmolLM2,
    ~2-3% of a training step (BENCHMARKS.md). The values are the allocating version's, bit for bit."""
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    w, h_all = weight.to(dtype), hidden.to(dtype)
    loss = torch.zeros((), dtype=acc, device=hidden.device)
    correct = torch.zeros((), dtype=torch.long, device=hidden.device)
    grad_h = torch.empty_like(hidden) if want[0] else None
    grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if want[1] else None
    for start in range(0, hidden.shape[0], chunk_rows):
        h, t = h_all[start : start + chunk_rows], targets[start : start + chunk_rows]
        logits, low = _chunk_logits(h, w, acc)
        target_logit = logits.gather(1, t[:, None]).squeeze(1)
        top = logits.amax(-1, keepdim=True)
        correct += _argmax_hits(logits, t, target_logit, top.squeeze(1))
        # logsumexp as torch.logsumexp computes it, and the softmax as exp(logits - logsumexp): the values of
        # the allocating code this replaced, bit for bit (a resumed run's steps must match a straight run's)
        shifted = _vocab_scratch("shifted", *logits.shape, logits.dtype, logits.device)
        lse = shifted.copy_(logits).sub_(top).exp_().sum(-1).log_().add_(top.squeeze(1))
        rows = lse - target_logit
        loss += rows.sum()
        if row_losses is not None:
            row_losses[start : start + chunk_rows] = rows
        if grad_h is None and grad_w is None:
            continue
        d_logits = logits.sub_(lse[:, None]).exp_()  # softmax, in place: the logits are not needed again
        d_logits[torch.arange(len(t), device=t.device), t] -= 1.0  # d CE / d logits = softmax - one-hot
        g = d_logits if low is None else low.copy_(d_logits)
        if grad_h is not None and grad_h.dtype == g.dtype:
            torch.mm(g, w, out=grad_h[start : start + chunk_rows])
        elif grad_h is not None:
            grad_h[start : start + chunk_rows] = g @ w
        if grad_w is not None:
            grad_w += g.t() @ h
    return loss, correct, grad_h, grad_w


def _chunk_logits(h: torch.Tensor, w: torch.Tensor, acc: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(``h @ w.T`` in ``acc``, the matmul's own ``w.dtype`` buffer where that is narrower), both views of this
    thread's scratch: valid until the next chunk."""
    rows, vocab = h.shape[0], w.shape[0]
    logits = _vocab_scratch("acc", rows, vocab, acc, h.device)
    if w.dtype == acc:
        return torch.mm(h, w.t(), out=logits), None
    low = torch.mm(h, w.t(), out=_vocab_scratch("low", rows, vocab, w.dtype, h.device))
    return logits.copy_(low), low


def _argmax_hits(logits: torch.Tensor, t: torch.Tensor, target_logit: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """How many rows' argmax is their target. A target can only be the argmax where its logit is the row's
    maximum, so only those rows (ties included: argmax takes the first) run argmax, which on a CPU is slower
    than the rest of the chunk's softmax together (57 of 208 ms for 933 rows of SmolLM2's 49k vocabulary)."""
    maybe = (target_logit == top).nonzero().squeeze(1)
    if maybe.numel() == 0:
        return torch.zeros((), dtype=torch.long, device=t.device)
    return (logits.index_select(0, maybe).argmax(-1) == t.index_select(0, maybe)).sum()


_SCRATCH = threading.local()


def _vocab_scratch(slot: str, rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A rows x cols tensor of this thread's, kept between calls (grown when too small), so that the head's
    chunks reuse memory whose pages are already in. One per slot, dtype and device; its contents are
    whatever the last user left."""
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    key = (slot, dtype, device)
    buf = buffers.get(key)
    if buf is None or buf.numel() < rows * cols:
        buf = buffers[key] = torch.empty(rows * cols, dtype=dtype, device=device)
    return buf[: rows * cols].view(rows, cols)


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T``; the gradients are computed in the forward pass (see the
    module docstring), so backward only scales them by the incoming gradient."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_rows, dtype):  # type: ignore[no-untyped-def]
        want = (bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]))
        with torch.autocast(hidden.device.type, enabled=False):
            loss, correct, grad_h, grad_w = _fused_chunks(hidden, weight, targets, chunk_rows, dtype, want)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_correct):  # type: ignore[no-untyped-def]
        grad_h, grad_w = ctx.saved_tensors
        scale = grad_loss.to(torch.float32 if grad_loss.dtype != torch.float64 else torch.float64)
        d_hidden = (grad_h * scale).to(grad_h.dtype) if grad_h is not None else None
        d_weight = (grad_w * scale).to(ctx.weight_dtype) if grad_w is not None else None
        return d_hidden, d_weight, None, None, None


def linear_cross_entropy(
    head: Any, hidden: torch.Tensor, targets: torch.Tensor, chunk_rows: int | None = None
) -> tuple[torch.Tensor, int]:
    """(sum_i CE(head(hidden_i), target_i), how many argmax predictions were right), never holding more than
    one chunk of logits (``chunk_rows``, or by default as many rows as fit ``CHUNK_BYTES`` of fp32 logits)."""
    if isinstance(head, torch.nn.Linear) and head.bias is None:
        weight = head.weight
        rows = chunk_rows or _chunk_rows(weight)
        dtype = _matmul_dtype(hidden, weight)
        loss, correct = _FusedLinearCrossEntropy.apply(hidden, weight, targets, rows, dtype)
        return loss, int(correct)
    # Any other head (a bias, an adapter on the head itself): projection + cross-entropy by autograd,
    # chunked under activation checkpointing past CHUNK_ROWS rows.
    chunk_rows = chunk_rows or CHUNK_ROWS
    if hidden.shape[0] <= chunk_rows:
        loss, correct = _ce_sum(head, hidden, targets)
        return loss, int(correct)
    total = hidden.new_zeros((), dtype=torch.float64 if hidden.dtype == torch.float64 else torch.float32)
    right = 0
    for start in range(0, hidden.shape[0], chunk_rows):
        h, t = hidden[start : start + chunk_rows], targets[start : start + chunk_rows]
        loss, correct = checkpoint(_ce_sum, head, h, t, use_reentrant=False)
        total, right = total + loss, right + int(correct)
    return total, right


def token_loss_and_accuracy(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, int]:
    """(sum of next-token cross-entropy over trained positions, how many there were, how many the model's
    argmax got right). The last is OpenAI's "mean token accuracy" numerator.

    ``batch`` may be padded (2-D attention mask) or packed (4-D block-diagonal mask + position ids that
    restart at 0 for each example); labels never cross an example boundary in either layout, because the
    first label of every packed example is -100."""
    return trained_token_loss(*decoder_hidden(model, batch), batch)


def trained_token_loss(
    hidden: torch.Tensor, head: Any, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, int, int]:
    """``token_loss_and_accuracy`` from the decoder's hidden states of ``batch``."""
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    loss, correct = linear_cross_entropy(head, hidden[:, :-1][keep], targets[keep])
    return loss, int(keep.sum()), correct


def token_loss_sum(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Sum of next-token cross-entropy over trained positions, and how many there were."""
    loss, n, _ = token_loss_and_accuracy(model, batch)
    return loss, n


class _FusedLinearLogps(torch.autograd.Function):
    """Per-row log-probability of ``targets`` under ``hidden @ weight.T`` for a frozen ``weight`` (a LoRA run's
    head), with d logp / d hidden computed in the forward pass as the cross-entropy's is: nothing
    vocabulary-sized is kept for backward or computed twice."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_rows, dtype):  # type: ignore[no-untyped-def]
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        row_losses = torch.empty(hidden.shape[0], dtype=acc, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):
            want = (bool(ctx.needs_input_grad[0]), False)  # no_grad (the reference pass): no gradient work
            _, _, grad_h, _ = _fused_chunks(hidden, weight, targets, chunk_rows, dtype, want, row_losses)
        ctx.save_for_backward(grad_h)
        return -row_losses

    @staticmethod
    def backward(ctx, grad_logps):  # type: ignore[no-untyped-def]
        (grad_h,) = ctx.saved_tensors  # d CE / d hidden = -(d logp / d hidden)
        return (grad_h * -grad_logps[:, None].to(grad_h.dtype)), None, None, None, None


def _plain_frozen(head: Any) -> bool:
    return isinstance(head, torch.nn.Linear) and head.bias is None and not head.weight.requires_grad


def linear_log_softmax(head: Any, hidden: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``log_softmax(head(hidden).float())`` without grad, written into ``out`` (rows x vocab, fp32) when
    given: the KL term's base log-probabilities, computed in place chunk by chunk."""
    with torch.no_grad():
        if not _plain_frozen(head):
            return F.log_softmax(head(hidden).float(), -1)
        weight = head.weight
        dtype = _matmul_dtype(hidden, weight)
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        out = out if out is not None else torch.empty(hidden.shape[0], weight.shape[0], dtype=acc, device=hidden.device)
        w, rows = weight.to(dtype), _chunk_rows(weight)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], rows):
                logits, _ = _chunk_logits(hidden[start : start + rows].to(dtype), w, acc)
                part = out[start : start + rows].copy_(logits)
                top = logits.amax(-1, keepdim=True)
                sums = logits.sub_(top).exp_().sum(-1, keepdim=True)
                part.sub_(top + sums.log())  # log softmax = logits - logsumexp
        return out


def linear_kl_to_base(head: Any, hidden: torch.Tensor, base_logps: torch.Tensor) -> torch.Tensor:
    """sum over rows of KL(base || softmax(head(hidden))), from the base's log-probabilities (rows x vocab):
    ``F.kl_div(log_softmax(head(hidden)), base_logps, log_target=True, reduction="sum")``. For a frozen plain
    head it is fused as the cross-entropy is: chunk by chunk in place, d KL / d hidden computed in the
    forward pass, nothing vocabulary-sized kept for backward."""
    if not _plain_frozen(head):
        tuned = F.log_softmax(head(hidden).float(), -1)
        return F.kl_div(tuned, base_logps, log_target=True, reduction="sum")
    dtype = _matmul_dtype(hidden, head.weight)
    return _FusedLinearKL.apply(hidden, head.weight, base_logps, _chunk_rows(head.weight), dtype)


class _FusedLinearKL(torch.autograd.Function):
    """KL(p || q) summed over rows, q = softmax(hidden @ weight.T), p given as log-probabilities;
    d KL / d logits = q sum p - p = q - p. Each row's KL is summed as sum p (log p - log q), term by term, as
    F.kl_div does: the shortcut sum p log p - sum p z + logsumexp(z) cancels terms of ~20 to leave ~0.04, and
    in fp32 it read SmolLM2's KL 14% high."""

    @staticmethod
    def forward(ctx, hidden, weight, base_logps, chunk_rows, dtype):  # type: ignore[no-untyped-def]
        acc = base_logps.dtype
        w = weight.to(dtype)
        total = torch.zeros((), dtype=acc, device=hidden.device)
        grad_h = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], chunk_rows):
                h, logp = hidden[start : start + chunk_rows].to(dtype), base_logps[start : start + chunk_rows]
                z, low = _chunk_logits(h, w, acc)
                z.sub_(z.amax(-1, keepdim=True))
                p = _vocab_scratch("base", *logp.shape, acc, logp.device)
                z.sub_(p.copy_(z).exp_().sum(-1, keepdim=True).log_())  # z = log q
                p.copy_(logp).exp_()
                gap = _vocab_scratch("gap", *logp.shape, acc, logp.device)
                total += gap.copy_(logp).sub_(z).mul_(p).sum()  # sum p (log p - log q)
                if grad_h is None:
                    continue
                d_z = z.exp_().sub_(p)
                g = d_z if low is None else low.copy_(d_z)
                grad_h[start : start + chunk_rows] = g @ w
        ctx.save_for_backward(grad_h)
        return total

    @staticmethod
    def backward(ctx, grad_total):  # type: ignore[no-untyped-def]
        (grad_h,) = ctx.saved_tensors
        return grad_h * grad_total.to(grad_h.dtype), None, None, None, None


def _chunk_rows(weight: torch.Tensor) -> int:
    """Rows per fused chunk: as many as fit ``CHUNK_BYTES`` of fp32 logits."""
    return max(8, CHUNK_BYTES // (4 * weight.shape[0]))


def _target_logps(head: Any, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden)
    return torch.log_softmax(logits.float(), -1).gather(1, targets[:, None]).squeeze(1)


def linear_target_logps(head: Any, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target_i | hidden_i) per row, never holding more than one chunk of logits. A frozen plain linear
    head takes the fused path; any other (a full fine-tune's trainable head, a bias) goes through autograd,
    chunk by chunk under activation checkpointing."""
    if _plain_frozen(head):
        rows = _chunk_rows(head.weight)
        return _FusedLinearLogps.apply(hidden, head.weight, targets, rows, _matmul_dtype(hidden, head.weight))
    parts = [
        checkpoint(_target_logps, head, hidden[s : s + CHUNK_ROWS], targets[s : s + CHUNK_ROWS], use_reentrant=False)
        for s in range(0, hidden.shape[0], CHUNK_ROWS)
    ]
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


def token_logps(
    model: Any, batch: dict[str, torch.Tensor], temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(log-probability of each trained token, the sequence each belongs to, how many sequences), tokens in
    row-major order. ``batch`` is either padded (one sequence a row, labels) or prefix-shared
    (``batches.collate_shared_prefix``: two sequences a row, the trained positions listed). Only trained
    positions reach the output projection, so no batch x length x vocab tensor exists. ``temperature``
    divides the logits (reinforcement fine-tuning scores completions at the temperature they were sampled
    at, as TRL does); for a linear head without bias that is the hidden state divided by it."""
    hidden, head = decoder_hidden(model, batch)
    if "target_index" in batch:
        h = hidden.reshape(-1, hidden.shape[-1])[batch["target_index"]]
        t, owner, n = batch["target_id"], batch["target_seq"], int(batch["n_seqs"])
    else:
        targets = batch["labels"][:, 1:]
        keep = targets != IGNORE
        owner = torch.arange(targets.shape[0], device=targets.device)[:, None].expand_as(targets)[keep]
        h, t, n = hidden[:, :-1][keep], targets[keep], targets.shape[0]
    if temperature != 1.0:
        if isinstance(head, torch.nn.Linear) and head.bias is None:
            h = h / temperature
        else:
            return _scaled_head_logps(head, h, t, temperature), owner, n
    return linear_target_logps(head, h, t), owner, n


def _scaled_head_logps(head: Any, hidden: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = head(hidden).float() / temperature
    return torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1)


def sequence_logps(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per sequence of ``batch``: the summed log-probability of its trained tokens, the quantity preference
    objectives compare (``token_logps`` says which batches it takes)."""
    logps, owner, n = token_logps(model, batch)
    return torch.zeros(n, dtype=logps.dtype, device=logps.device).index_add(0, owner, logps)
