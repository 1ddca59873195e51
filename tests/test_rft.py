"""Reinforcement fine-tuning (GRPO): the loss and its gradients against TRL's GRPOTrainer, and the run."""

from __future__ import annotations

import pytest
import torch

from tunesmith.train.rollout import Rollout, collate_rollouts, fill_reference_logps, group_advantages

K = 4
REWARDS = [[1.0, 0.0, 0.5, 0.0], [0.0, 1.0, 1.0, 0.25], [1.0, 1.0, 1.0, 1.0]]  # the last group: zero variance
TEMPERATURE = 0.7


@pytest.fixture(scope="module")
def trl_trainer(tiny_model_dir, tmp_path_factory):
    """TRL's GRPOTrainer on the tiny model with a fresh LoRA adapter (so its reference is the adapter disabled,
    as ours is), the adapter's B matrices randomised so that policy and reference differ."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = GRPOConfig(
        output_dir=str(tmp_path_factory.mktemp("grpo")),
        per_device_train_batch_size=K,
        num_generations=K,
        max_completion_length=12,
        beta=0.04,
        temperature=TEMPERATURE,
        report_to=[],
        use_cpu=True,
        bf16=False,  # TRL's default autocasts to bf16; the comparison is fp32 against fp32
        gradient_checkpointing=False,
    )
    trainer = GRPOTrainer(
        model=str(tiny_model_dir),
        reward_funcs=lambda completions, **kw: [0.0] * len(completions),
        args=args,
        train_dataset=Dataset.from_list([{"prompt": "hi"}] * K),
        processing_class=tok,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0),
    )
    trainer.current_gradient_accumulation_steps = 1  # what TRL sets while it trains
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return trainer, tok


def _fixed_rollouts(tok) -> list[Rollout]:
    """Three prompts, K fixed completions each (some stopped on EOS, some cut at the length limit)."""
    gen = torch.Generator().manual_seed(1)
    prompts = [tok.encode(t) for t in ("Paint the car red", "Which colour is the kite?", "A door")]
    out = []
    for p, advs in zip(prompts, group_advantages(REWARDS), strict=True):
        for j, a in enumerate(advs):
            n = 3 + (j * 5 + len(p)) % 9
            body = torch.randint(10, 2000, (n,), generator=gen).tolist()
            out.append(Rollout(p, body + ([tok.eos_token_id] if j % 2 == 0 else []), a))
    return out


def _trl_inputs(rollouts: list[Rollout], trainer, pad: int) -> dict:
    """TRL's input layout: prompts left-padded, completions right-padded, one row per completion."""
    pw = max(len(r.prompt_ids) for r in rollouts)
    cw = max(len(r.completion_ids) for r in rollouts)
    n = len(rollouts)
    prompt_ids, prompt_mask = torch.full((n, pw), pad), torch.zeros((n, pw), dtype=torch.long)
    comp_ids, comp_mask = torch.full((n, cw), pad), torch.zeros((n, cw), dtype=torch.long)
    for i, r in enumerate(rollouts):
        prompt_ids[i, pw - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids)
        prompt_mask[i, pw - len(r.prompt_ids) :] = 1
        comp_ids[i, : len(r.completion_ids)] = torch.tensor(r.completion_ids)
        comp_mask[i, : len(r.completion_ids)] = 1
    # TRL's advantages (scale_rewards="group"), computed as _generate_and_score_completions does
    from trl.trainer.utils import nanstd

    rewards = torch.tensor(REWARDS).view(-1)
    mean = rewards.view(-1, K).mean(1).repeat_interleave(K)
    std = nanstd(rewards.view(-1, K), dim=1).repeat_interleave(K)
    inputs = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": comp_ids,
        "completion_mask": comp_mask,
        "advantages": (rewards - mean) / (std + 1e-4),
        "num_items_in_batch": comp_mask.sum(),
    }
    if trainer.beta:
        with torch.no_grad(), trainer.model.disable_adapter():
            ids = torch.cat([prompt_ids, comp_ids], 1)
            mask = torch.cat([prompt_mask, comp_mask], 1)
            inputs["ref_per_token_logps"] = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, cw)[0]
    return inputs


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_loss_and_gradients_equal_trl(trl_trainer, beta):
    """Fixed completions and rewards: our objective through the loop's accumulation (3 completions a forward)
    gives TRL's GRPO loss (loss_type "dapo", its default) and the same gradients, within 1e-4."""
    from tunesmith.train.loop import accumulate_gradients
    from tunesmith.train.objectives.rft import GRPO

    trainer, tok = trl_trainer
    model, pad = trainer.model, tok.pad_token_id
    trainer.beta = beta
    assert trainer.loss_type == "dapo"
    rollouts = _fixed_rollouts(tok)
    assert [r.advantage for r in rollouts[-K:]] == [0.0] * K
    inputs = _trl_inputs(rollouts, trainer, pad)
    ours = torch.tensor([r.advantage for r in rollouts], dtype=torch.float64)
    assert torch.allclose(ours, inputs["advantages"].double(), atol=1e-5)

    model.train()
    model.zero_grad(set_to_none=True)
    trl_loss = trainer._compute_loss(model, inputs)
    trl_loss.backward()
    trl_grads = _grads(model)

    objective = GRPO(k=K, temperature=TEMPERATURE, beta=beta)
    weight = objective.weight(rollouts)
    if beta:
        fill_reference_logps(model, rollouts, 5, pad, TEMPERATURE, bf16=False)
    train_rows = rollouts if beta else [r for r in rollouts if r.advantage != 0.0]  # as ``rollout`` trains
    model.train()
    model.zero_grad(set_to_none=True)
    micro = [[[r] for r in train_rows[s : s + 3]] for s in range(0, len(train_rows), 3)]
    from tunesmith.train.engine import Engine

    total, sums = accumulate_gradients(model, micro, pad, False, engine=Engine(model, objective), weight=weight)
    ours = _grads(model)
    assert total / weight == pytest.approx(float(trl_loss), abs=1e-4)
    assert abs(float(trl_loss)) > 1e-3 or beta == 0.0  # the comparison is not of two zeros
    assert set(ours) == set(trl_grads)
    worst = max(float((ours[n] - trl_grads[n]).abs().max()) for n in ours)
    scale = max(float(g.abs().max()) for g in trl_grads.values())
    assert scale > 1e-3 and worst < 1e-4, (worst, scale)
    if beta:
        assert sums["kl"] > 0


def test_collate_keeps_reference_order_and_labels(tokenizer):
    a = Rollout([5, 6, 7], [8, 9], 1.0, ref_logps=[-1.0, -2.0])
    b = Rollout([5], [10, 11, 12], -1.0, ref_logps=[-3.0, -4.0, -5.0])
    batch = collate_rollouts([a, b], pad_id=0)
    assert batch["labels"].tolist() == [[-100, -100, -100, 8, 9], [-100, 10, 11, 12, -100]]
    assert batch["ref_logps"].tolist() == [-1.0, -2.0, -3.0, -4.0, -5.0]
    assert batch["advantages"].tolist() == [1.0, -1.0]


def test_group_advantages_zero_for_equal_grades():
    advs = group_advantages([[1.0, 1.0, 1.0], [0.0, 1.0, 0.5]])
    assert advs[0] == [0.0, 0.0, 0.0]
    assert advs[1][1] > advs[1][2] > advs[1][0]
