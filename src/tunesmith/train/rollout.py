"""Reinforcement fine-tuning's rollouts: sample K completions of each prompt from the policy as it is, grade
them, and turn each group's grades into advantages.

Sampling goes through the one generation path (``generate.sample_groups``: batched, KV cache). Advantages
are TRL's GRPO ones with ``scale_rewards="group"``: (reward - the group's mean) / (the group's standard
deviation, Bessel-corrected, + 1e-4). A group whose K grades are all equal has advantage 0 everywhere:
it teaches nothing, and the share of such groups is the first thing to watch in metrics.jsonl.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.data.render import IGNORE
from tunesmith.data.rft import RftPrompt
from tunesmith.generate import GeneratedIds, sample_groups
from tunesmith.graders.types import Grade, sample_from_text
from tunesmith.train.precision import autocast

STD_EPS = 1e-4  # TRL's: keeps a group with a tiny spread from blowing its advantages up


@dataclass
class Rollout:
    prompt_ids: list[int]
    completion_ids: list[int]  # the sampled tokens, ending with the stop token when the completion stopped
    advantage: float
    ref_logps: list[float] | None = None  # per completion token, under the reference (adapter disabled)

    @property
    def input_ids(self) -> list[int]:
        return self.prompt_ids + self.completion_ids

    @property
    def n_trained(self) -> int:
        return len(self.completion_ids)


def group_advantages(rewards: Sequence[Sequence[float]]) -> list[list[float]]:
    """Per group of K rewards: (r - mean) / (std + 1e-4), the standard deviation Bessel-corrected (TRL's)."""
    t = torch.tensor(rewards, dtype=torch.float64)
    centred = t - t.mean(1, keepdim=True)
    std = t.std(1, keepdim=True) if t.shape[1] > 1 else torch.zeros_like(t[:, :1])
    return (centred / (std + STD_EPS)).tolist()


@contextlib.contextmanager
def sampling_mode(model: Any, bf16: bool) -> Iterator[None]:
    """Eval mode (no dropout) and the run's precision while sampling; the model's mode is restored after."""
    was_training = model.training
    try:
        with autocast(bf16):
            yield
    finally:
        model.train(was_training)


def sample(
    model: Any,
    prompts: Sequence[RftPrompt],
    k: int,
    *,
    stops: list[int],
    pad: int,
    max_new_tokens: int,
    temperature: float,
    batch_size: int,
    bf16: bool,
) -> list[list[GeneratedIds]]:
    with sampling_mode(model, bf16):
        return sample_groups(
            model,
            [p.prompt_ids for p in prompts],
            k,
            stops=stops,
            pad=pad,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            batch_size=batch_size,
        )


def grade_groups(
    grader: Any, tokenizer: Any, prompts: Sequence[RftPrompt], groups: Sequence[Sequence[GeneratedIds]]
) -> list[list[Grade]]:
    """Every completion's grade, in one batch (the python sandbox keeps its workers across it). A grader
    failure is a Grade of 0 with its error, never an exception."""
    samples, items = [], []
    for prompt, group in zip(prompts, groups, strict=True):
        for out in group:
            samples.append(sample_from_text(tokenizer.decode(out.tokens, skip_special_tokens=True)))
            items.append(prompt.item)
    flat = grader.grade(samples, items)
    k = len(groups[0]) if groups else 0
    return [flat[i * k : (i + 1) * k] for i in range(len(groups))]


def build_rollouts(
    prompts: Sequence[RftPrompt], groups: Sequence[Sequence[GeneratedIds]], advantages: Sequence[Sequence[float]]
) -> list[Rollout]:
    out = []
    for prompt, group, advs in zip(prompts, groups, advantages, strict=True):
        for gen, adv in zip(group, advs, strict=True):
            completion = gen.tokens + ([gen.stop_id] if gen.stopped and gen.stop_id is not None else [])
            out.append(Rollout(prompt.prompt_ids, completion, adv))
    return out


def collate_rollouts(rollouts: Sequence[Rollout], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded prompt + completion rows, labels on the completion only, each row's advantage, and the
    reference log-probs of every completion token in row-major order (the order ``token_logps`` returns)."""
    width = max(len(r.input_ids) for r in rollouts)
    ids = torch.full((len(rollouts), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rollouts), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rollouts), width), dtype=torch.long)
    for row, r in enumerate(rollouts):
        n, p = len(r.input_ids), len(r.prompt_ids)
        ids[row, :n] = torch.tensor(r.input_ids)
        labels[row, p:n] = torch.tensor(r.completion_ids)
        mask[row, :n] = 1
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    batch["advantages"] = torch.tensor([r.advantage for r in rollouts], dtype=torch.float32)
    if all(r.ref_logps is not None for r in rollouts):
        batch["ref_logps"] = torch.tensor([x for r in rollouts for x in r.ref_logps or []], dtype=torch.float32)
    return batch


@torch.no_grad()
def fill_reference_logps(
    model: Any, rollouts: Sequence[Rollout], micro: int, pad_id: int, temperature: float, bf16: bool
) -> None:
    """Each rollout's per-token log-probs under the reference: the same model with its LoRA adapter disabled
    (as DPO's reference), at the sampling temperature, in eval mode."""
    from tunesmith.train.loss import token_logps

    device = next(model.parameters()).device
    with sampling_mode(model, bf16), model.disable_adapter():
        model.eval()
        for start in range(0, len(rollouts), micro):
            chunk = list(rollouts[start : start + micro])
            batch = {k: v.to(device) for k, v in collate_rollouts(chunk, pad_id).items()}
            logps, owner, _ = token_logps(model, batch, temperature)
            logps, owner = logps.float().cpu(), owner.cpu()
            for i, r in enumerate(chunk):
                r.ref_logps = logps[owner == i].tolist()
