"""Direct Preference Optimisation (Rafailov et al. 2023): learn to prefer one reply over another, from pairs.

For a prompt x with a preferred reply y+ and a non-preferred one y-, with log pi(y|x) summed over the reply's
tokens (masked exactly as SFT masks a reply: the assistant turn and its stop token),

    loss = -log sigmoid( beta * [ (log pi(y+|x) - log ref(y+|x)) - (log pi(y-|x) - log ref(y-|x)) ] )

summed over the step's pairs and divided by their number. With ``nll`` > 0 (RPO, Pang et al. 2024), each pair
adds ``nll`` x the preferred reply's negative log-likelihood per token: plain DPO can make both replies less
likely while it pulls them apart, and on the demo's pairs that cost the generated JSON its schema.

``ref`` is the starting policy. Its log-probs are
computed once, before the first step, with the starting weights (a fresh LoRA adapter is zero, so that is the
base model with the adapter disabled; a run folder given as --model starts from its own tuned weights), and
kept on each pair: no second copy of the model is ever held, and resume recomputes the same numbers.

Metrics, as TRL and OpenAI report them: the reward margin beta * [(log-ratio of y+) - (log-ratio of y-)],
averaged over pairs, and the preference accuracy, the share of pairs whose margin is positive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.data.preference import rejected_conversation
from tunesmith.data.render import Rendered, Renderer, RenderStats
from tunesmith.data.rows import Conversation
from tunesmith.errors import DataError
from tunesmith.train.batches import collate_shared_prefix, common_prefix
from tunesmith.train.loss import sequence_logps
from tunesmith.train.objectives.base import Sums
from tunesmith.train.precision import autocast

DEFAULT_BETA = 0.1


@dataclass
class PreferencePair:
    chosen: Rendered  # prompt + preferred reply, labels on the reply
    rejected: Rendered  # the same prompt + the other reply
    ref_chosen: float | None = None  # summed log-prob of each reply under the reference policy
    ref_rejected: float | None = None

    @property
    def source(self) -> str:
        return self.chosen.source

    @property
    def input_ids(self) -> list[int]:
        """Both sequences' tokens (their count is what a pair costs a batch)."""
        return self.chosen.input_ids + self.rejected.input_ids

    @property
    def n_trained(self) -> int:
        return self.chosen.n_trained + self.rejected.n_trained


def render_pairs(renderer: Renderer, convs: Sequence[Conversation]) -> tuple[list[PreferencePair], RenderStats]:
    """Each pair's two sides rendered as SFT renders a row (the final reply trained, its stop token too). A
    pair longer than ``max_len`` on either side is dropped whatever the overlong policy (a cut reply cannot be
    compared), or refused with ``overlong: error``."""
    stats, out = RenderStats(), []
    for conv in convs:
        stats.examples += 1
        pair = PreferencePair(renderer.render(conv), renderer.render(rejected_conversation(conv)))
        longest = max(len(pair.chosen.input_ids), len(pair.rejected.input_ids))
        if longest > renderer.max_len:
            if renderer.overlong == "error":
                raise DataError(f"{conv.source}: {longest} tokens, longer than max_len {renderer.max_len}")
            stats.dropped_overlong += 1
            stats.dropped_sources.append(conv.source)
            continue
        stats.kept += 1
        stats.tokens += len(pair.input_ids)
        stats.trained_tokens += pair.n_trained
        out.append(pair)
    return out, stats


class DPO:
    name = "dpo"
    width_multiple = 1
    default_beta = DEFAULT_BETA

    def __init__(self, beta: float = DEFAULT_BETA, nll: float = 0.0) -> None:
        self.beta = beta
        self.nll = nll  # weight of the preferred reply's per-token NLL (RPO); 0: plain DPO

    def length(self, pair: PreferencePair) -> int:
        """Tokens a pair costs a batch: its common prefix once, then both replies (see ``collate``)."""
        shared = common_prefix(pair.chosen.input_ids, pair.rejected.input_ids)
        return len(pair.chosen.input_ids) + len(pair.rejected.input_ids) - shared

    def weight(self, pairs: Sequence[PreferencePair]) -> int:
        return len(pairs)

    def collate(self, rows: list[list[PreferencePair]], pad_id: int) -> dict[str, torch.Tensor]:
        """One row per pair, the prompt (and any reply tokens both sides share) computed once for both
        replies (``batches.collate_shared_prefix``); sequences 0..n-1 are the preferred replies, n..2n-1
        the others. Pairs are never packed together: a pair is compared whole."""
        pairs = [p for row in rows for p in row]
        batch = collate_shared_prefix([(p.chosen, p.rejected) for p in pairs], pad_id)
        if all(p.ref_chosen is not None for p in pairs):
            refs = [p.ref_chosen for p in pairs] + [p.ref_rejected for p in pairs]
            batch["ref_logps"] = torch.tensor(refs, dtype=torch.float64)
        return batch

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Sums]:
        logps = sequence_logps(model, batch)
        policy_chosen, policy_rejected = logps.chunk(2)
        ref_chosen, ref_rejected = batch["ref_logps"].to(logps.dtype).chunk(2)
        margin = self.beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
        loss = -F.logsigmoid(margin).sum()
        if self.nll:
            counts = torch.bincount(batch["target_seq"], minlength=2 * len(policy_chosen))
            chosen_tokens = counts[: len(policy_chosen)].clamp(min=1)
            loss = loss + self.nll * (-policy_chosen / chosen_tokens).sum()
        margin = margin.detach()
        return loss, {"preferred": float((margin > 0).sum()), "margin": float(margin.sum())}

    def metrics(self, sums: Sums, weight: float) -> dict[str, float]:
        n = max(1, weight)
        return {"preference_accuracy": sums.get("preferred", 0) / n, "reward_margin": sums.get("margin", 0.0) / n}

    def start(self, model: Any, examples: Sequence[PreferencePair], micro: int, pad_id: int, bf16: bool) -> None:
        self.compute_references(model, examples, micro, pad_id, bf16)

    def compute_references(
        self, model: Any, pairs: Sequence[PreferencePair], micro: int, pad_id: int, bf16: bool = False
    ) -> None:
        """Fill in each pair's reference log-probs with ``model`` as it is now (eval mode: no dropout), in the
        precision training runs in, so that the log-ratios start at zero."""
        for p, (c, r) in zip(pairs, pair_logps(model, pairs, micro, pad_id, bf16), strict=True):
            p.ref_chosen, p.ref_rejected = c, r


@torch.no_grad()
def pair_logps(
    model: Any, pairs: Sequence[PreferencePair], micro: int, pad_id: int, bf16: bool = False
) -> list[tuple[float, float]]:
    """(log p(preferred reply), log p(other reply)) per pair under ``model`` in eval mode, ``micro`` pairs a
    forward pass, each pair's shared prefix computed once."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[tuple[float, float]] = []
    for start in range(0, len(pairs), micro):
        chunk = list(pairs[start : start + micro])
        batch = collate_shared_prefix([(p.chosen, p.rejected) for p in chunk], pad_id)
        with autocast(bf16):
            logps = sequence_logps(model, {k: v.to(device) for k, v in batch.items()}).double().cpu()
        out += zip(logps[: len(chunk)].tolist(), logps[len(chunk) :].tolist(), strict=True)
    model.train(was_training)
    return out
