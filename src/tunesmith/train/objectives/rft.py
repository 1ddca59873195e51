"""Reinforcement fine-tuning with GRPO (Shao et al. 2024): learn to score well on a grader, from prompts.

Each step (``rollout``, called by the loop before the step's forwards): sample K completions of each of
the step's prompts from the policy as it is, grade them, and give each completion its group-normalised
advantage A (``train/rollout.py``). Then, per completion token t, with r_t = pi(t) / pi_old(t),

    loss_t = -min(r_t * A, clip(r_t, 1 - eps, 1 + eps_high) * A) + beta * KL_t
    KL_t   = exp(ref_t - logp_t) - (ref_t - logp_t) - 1            (Schulman's k3 estimator)

summed over the step's completion tokens and divided by their number: TRL's GRPOTrainer loss with
``loss_type="dapo"`` (TRL's default; token-normalised over the whole step, so a long completion is not
weighed down), and the loop's exact accumulation gives that normaliser for free. One update per batch of
samples (TRL's ``num_iterations=1``), so pi_old is the policy itself, detached: r_t = 1 in value and the
clip only matters for its gradient, exactly as in TRL. ``ref`` is the model with its LoRA adapter disabled.
Log-probs are taken at the sampling temperature (logits / T), as TRL does.

Completions whose advantage is 0 (groups whose K grades are all equal) add nothing to the loss or the
gradient when beta is 0: they are not run forward, but their tokens still count in the normaliser, so the
update is TRL's to the bit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from tunesmith import console
from tunesmith.data.rft import RftPrompt
from tunesmith.errors import UserError
from tunesmith.train import rollout as ro
from tunesmith.train.loss import token_logps
from tunesmith.train.objectives.base import Sums

EPSILON = 0.2  # TRL's clip range
PROBE_PROMPTS = 8  # prompts the start is sampled on before training
MAX_ERROR_EVENTS = 5  # grader failures reported one by one; the rest are counted


class GRPO:
    name = "rft"
    width_multiple = 1
    # The start (usually an SFT run) already does the task: loop.py validates it before the first step, and
    # its weights are kept when every later validation grades clearly worse (validation.py, note_validation).
    validates_start = True

    def __init__(self, k: int = 4, temperature: float = 1.0, max_new_tokens: int = 128, beta: float = 0.0) -> None:
        self.k, self.temperature, self.max_new_tokens, self.beta = k, temperature, max_new_tokens, beta
        self.epsilon_low = self.epsilon_high = EPSILON
        self.grader: Any = None
        self.tokenizer: Any = None
        self.stops: list[int] = []
        self.pad_id, self.micro, self.bf16 = 0, 1, False
        self.errors_reported = 0

    def bind(self, grader: Any, tokenizer: Any, stops: list[int], micro: int, bf16: bool) -> None:
        """What sampling and grading need beyond the settings: the grader, the tokenizer and the stop tokens."""
        self.grader, self.tokenizer, self.stops, self.micro, self.bf16 = grader, tokenizer, stops, micro, bf16
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]

    # -- the Objective protocol --------------------------------------------------------------------------

    def length(self, example: Any) -> int:
        return len(example.input_ids)

    def weight(self, examples: Sequence[Any]) -> int:
        return sum(e.n_trained for e in examples)  # completion tokens: TRL's num_items_in_batch

    def collate(self, rows: list[list[ro.Rollout]], pad_id: int) -> dict[str, torch.Tensor]:
        return ro.collate_rollouts([r for row in rows for r in row], pad_id)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Sums]:
        logps, owner, _ = token_logps(model, batch, self.temperature)
        logps = logps.float()
        adv = batch["advantages"].to(logps.device, logps.dtype)[owner]
        ratio = torch.exp(logps - logps.detach())  # pi / pi_old with pi_old the sampling policy (one update)
        clipped = torch.clamp(ratio, 1 - self.epsilon_low, 1 + self.epsilon_high)
        per_token = -torch.min(ratio * adv, clipped * adv)
        sums: Sums = {}
        if self.beta:
            delta = batch["ref_logps"].to(logps.device, logps.dtype) - logps
            kl = torch.exp(delta) - delta - 1
            per_token = per_token + self.beta * kl
            sums["kl"] = float(kl.detach().sum())
        return per_token.sum(), sums

    def metrics(self, sums: Sums, weight: float) -> dict[str, float]:
        return {"kl": sums["kl"] / max(1, weight)} if "kl" in sums else {}

    def start(self, model: Any, examples: Sequence[Any], micro: int, pad_id: int, bf16: bool) -> None:
        """The probe: sample the start on a few prompts; if no group's grades vary, training cannot move it."""
        prompts = [e for e in examples if isinstance(e, RftPrompt)][:PROBE_PROMPTS]
        _, grades, _ = self._sample_and_grade(model, prompts)
        scores = [[g.score for g in group] for group in grades]
        flat = [s for group in scores for s in group]
        mean = sum(flat) / max(1, len(flat))
        varied = sum(1 for group in scores if max(group) != min(group))
        console.note(
            f"probe: {len(prompts)} prompts x {self.k} samples at temperature {self.temperature:g}: "
            f"mean grade {mean:.3f}, {varied} of {len(scores)} groups vary"
        )
        if flat and not varied:
            how = "never" if max(flat) <= 0 else "always" if min(flat) >= max(flat) else "never visibly"
            raise UserError(
                f"the start {how} passes this grader (every probe group of {self.k} samples got one grade, "
                f"mean {mean:.3f}), so there is nothing to learn from; start from an SFT run or loosen the grader"
            )

    # -- what the loop asks of an on-policy objective -----------------------------------------------------

    def rollout(self, model: Any, prompts: Sequence[RftPrompt]) -> tuple[list[ro.Rollout], int, dict[str, Any]]:
        """(the completions to train on, the step's normaliser, the step's reward metrics)."""
        groups, grades, times = self._sample_and_grade(model, list(prompts))
        rewards = [[g.score for g in group] for group in grades]
        rollouts = ro.build_rollouts(prompts, groups, ro.group_advantages(rewards))
        weight = self.weight(rollouts)
        if self.beta:
            t0 = time.perf_counter()
            ro.fill_reference_logps(model, rollouts, self.micro, self.pad_id, self.temperature, self.bf16)
            times["reference_s"] = time.perf_counter() - t0
        else:
            rollouts = [r for r in rollouts if r.advantage != 0.0]
        return rollouts, weight, _reward_metrics(rewards, groups, grades) | {k: round(v, 3) for k, v in times.items()}

    @torch.no_grad()
    def evaluate(self, model: Any, prompts: Sequence[RftPrompt]) -> dict[str, float]:
        """Validation: the mean grade of greedy completions (up to max_new_tokens). "loss" is minus the grade,
        so that the loop's lower-is-better bookkeeping (best weights, early stopping) reads it; "rows" is
        each prompt's, which that bookkeeping compares pairwise to tell a real drop from noise."""
        outs = ro.sample(
            model, prompts, 1, stops=self.stops, pad=self.pad_id, max_new_tokens=self.max_new_tokens,
            temperature=0.0, batch_size=self._sample_batch(), bf16=self.bf16,
        )  # fmt: skip
        grades = self._grade(prompts, outs)
        scores = [g[0].score for g in grades]
        mean = sum(scores) / max(1, len(scores))
        return {"loss": -mean, "grade": mean, "rows": [-s for s in scores]}

    # -- helpers ------------------------------------------------------------------------------------------

    def _sample_batch(self) -> int:
        return max(self.k, 16 // self.k * self.k)  # whole groups per generation batch

    def _sample_and_grade(self, model: Any, prompts: list[RftPrompt]) -> tuple[list, list, dict[str, float]]:
        t0 = time.perf_counter()
        groups = ro.sample(
            model, prompts, self.k, stops=self.stops, pad=self.pad_id, max_new_tokens=self.max_new_tokens,
            temperature=self.temperature, batch_size=self._sample_batch(), bf16=self.bf16,
        )  # fmt: skip
        t1 = time.perf_counter()
        grades = self._grade(prompts, groups)
        return groups, grades, {"sample_s": t1 - t0, "grade_s": time.perf_counter() - t1}

    def _grade(self, prompts: Sequence[RftPrompt], groups: list) -> list[list[Any]]:
        grades = ro.grade_groups(self.grader, self.tokenizer, prompts, groups)
        for g in (g for group in grades for g in group if g.error):
            self.errors_reported += 1
            if self.errors_reported <= MAX_ERROR_EVENTS:
                console.warn(f"grader: {g.error} (scored 0)")
        return grades


def _reward_metrics(rewards: list[list[float]], groups: list, grades: list) -> dict[str, Any]:
    flat = [r for group in rewards for r in group]
    n = max(1, len(flat))
    mean = sum(flat) / n
    lengths = [len(g.tokens) + int(g.stopped) for group in groups for g in group]
    return {
        "reward_mean": round(mean, 6),
        "reward_std": round(math.sqrt(sum((r - mean) ** 2 for r in flat) / n), 6),
        "zero_variance_groups": round(sum(1 for g in rewards if max(g) == min(g)) / max(1, len(rewards)), 4),
        "completion_len": round(sum(lengths) / max(1, len(lengths)), 2),
        "completions_stopped": round(sum(g.stopped for group in groups for g in group) / max(1, len(lengths)), 4),
        "grader_errors": sum(1 for group in grades for g in group if g.error),
    }
