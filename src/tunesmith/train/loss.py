"""The training loss: summed cross-entropy over trained tokens only.

Two choices matter here:
* The loss is a *sum*; the loop divides by the trained-token count of the whole optimizer step, so
  gradient accumulation (8x1 or 2x4) gives the same update as one big batch. The usual "mean per
  micro-batch, then average" weights short replies more heavily than long ones.
* Only positions whose next token is trained reach the output projection. Prompt positions (often most
  of a sequence) never touch the vocabulary-sized matmul, and the batch x length x vocab logits tensor
  is never materialised.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.data.render import IGNORE


def causal_lm_parts(model: Any) -> tuple[Any, Any]:
    """(decoder stack, output projection) of a causal LM, looking through a PEFT wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def token_loss_sum(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Sum of next-token cross-entropy over trained positions, and how many there were."""
    decoder, head = causal_lm_parts(model)
    hidden = decoder(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch.get("position_ids"),
        use_cache=False,
    ).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    logits = head(hidden[:, :-1][keep]).float()
    loss = F.cross_entropy(logits, targets[keep], reduction="sum")
    return loss, int(keep.sum())
