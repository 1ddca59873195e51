"""The training loss: summed cross-entropy over trained tokens only, without full logits.

Two choices matter here:
* The loss is a *sum*; the loop divides by the trained-token count of the whole optimizer step, so
  gradient accumulation (8x1 or 2x4) gives the same update as one big batch. The usual "mean per
  micro-batch, then average" weights short replies more heavily than long ones.
* Only positions whose next token is trained reach the output projection, so prompt positions (77% of
  the demo's tokens) never touch the vocabulary-sized matmul, and the batch x length x vocab logits tensor
  is never materialised. Past ``CHUNK_ROWS`` trained positions, the projection + cross-entropy run in
  chunks under activation checkpointing: only one chunk's logits exist at a time, in forward and backward.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tunesmith.data.render import IGNORE

CHUNK_ROWS = 1024  # x vocab 49k x 4 bytes = ~200 MB of fp32 logits per chunk for SmolLM2


def causal_lm_parts(model: Any) -> tuple[Any, Any]:
    """(decoder stack, output projection) of a causal LM, looking through a PEFT wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def _ce_sum(head: Any, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = head(hidden)
    if logits.dtype in (torch.bfloat16, torch.float16):
        logits = logits.float()  # softmax over 49k classes wants fp32 even when the matmul ran in bf16
    correct = (logits.detach().argmax(-1) == targets).sum()
    return F.cross_entropy(logits, targets, reduction="sum"), correct


def linear_cross_entropy(
    head: Any, hidden: torch.Tensor, targets: torch.Tensor, chunk_rows: int = CHUNK_ROWS
) -> tuple[torch.Tensor, int]:
    """(sum_i CE(head(hidden_i), target_i), how many argmax predictions were right), never holding more than
    ``chunk_rows`` rows of logits."""
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
    decoder, head = causal_lm_parts(model)
    hidden = decoder(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch.get("position_ids"),
        use_cache=False,
    ).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    loss, correct = linear_cross_entropy(head, hidden[:, :-1][keep], targets[keep])
    return loss, int(keep.sum()), correct


def token_loss_sum(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Sum of next-token cross-entropy over trained positions, and how many there were."""
    loss, n, _ = token_loss_and_accuracy(model, batch)
    return loss, n
