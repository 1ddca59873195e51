"""DPO, the second objective: equal to TRL's DPOTrainer on the same pairs, and trained through the one loop."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tunesmith.data.formats import Conversation, Message
from tunesmith.data.render import IGNORE, Renderer
from tunesmith.models.load import load_model
from tunesmith.models.lora import add_lora, randomize_b
from tunesmith.train.objectives.dpo import DPO, PreferencePair

BETA = 0.1


def make_pairs(tok) -> list[PreferencePair]:
    renderer = Renderer(tok, train_on="last")
    prompts = ["Where is my parcel?", "Cancel order 1234, please.", "Do you ship to Norway?", "Reset my password."]
    good = ['{"intent": "track"}', '{"intent": "cancel", "order": 1234}', "Yes, in 3 days.", "Sent you a link."]
    bad = ['{"intent": "cancel"}', '{"intent": "cancel", "order": 1243}', "No.", "I cannot help with that at all."]
    pairs = []
    for k, (p, g, b) in enumerate(zip(prompts, good, bad, strict=True)):
        convs = [
            Conversation([Message("user", p), Message("assistant", reply)], source=f"pairs:{k + 1}") for reply in (g, b)
        ]
        pairs.append(PreferencePair(renderer.render(convs[0]), renderer.render(convs[1])))
    return pairs


def lora_model(model_dir: Path):
    torch.manual_seed(0)
    model, tok, _ = load_model(str(model_dir))
    from tunesmith.config import load_config

    # B starts at zero: give it values so the policy differs from the reference
    model = randomize_b(add_lora(model, load_config(None, {"lora": {"dropout": 0.0, "r": 4}}).lora), 0.05)
    return model, tok


def trl_example(pair: PreferencePair) -> dict[str, list[int]]:
    """The same tokens in TRL's pre-tokenized layout: the shared prompt, then each reply as masked by us."""

    def span(r):
        trained = [i for i, x in enumerate(r.labels) if x != IGNORE]
        return trained[0], trained[-1] + 1

    (c0, c1), (r0, r1) = span(pair.chosen), span(pair.rejected)
    assert c0 == r0 and pair.chosen.input_ids[:c0] == pair.rejected.input_ids[:r0]
    return {
        "prompt_ids": pair.chosen.input_ids[:c0],
        "chosen_ids": pair.chosen.input_ids[c0:c1],
        "rejected_ids": pair.rejected.input_ids[r0:r1],
    }


def test_dpo_loss_and_gradients_equal_trls_dpo_trainer(tmp_path: Path, tiny_model_dir: Path) -> None:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    ours, tok = lora_model(tiny_model_dir)
    theirs = copy.deepcopy(ours)
    pairs = make_pairs(tok)

    # Both references are the starting policy: ours computed now, TRL's a copy of the adapter ("ref") that it
    # takes when the trainer is made. Then both policies move by the same amount, so the log-ratios are not 0.
    objective = DPO(beta=BETA)
    objective.compute_references(ours, pairs, micro=2, pad_id=tok.pad_token_id)
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"), beta=BETA, report_to=[], use_cpu=True, bf16=False, max_length=None
    )
    dummy = Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}])
    trainer = DPOTrainer(model=theirs, args=args, train_dataset=dummy, processing_class=tok)
    generator = torch.Generator().manual_seed(1)
    theirs_params = dict(trainer.model.named_parameters())
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if "lora_" in name:
                step = torch.randn(p.shape, generator=generator) * 0.05
                p.add_(step)
                theirs_params[name].add_(step)  # the "default" adapter; TRL's "ref" copy stays as it was

    ours.train()
    loss_sum, sums = objective.loss(ours, objective.collate([[p] for p in pairs], tok.pad_token_id))
    (loss_sum / objective.weight(pairs)).backward()
    trainer.model.train()
    batch = trainer.data_collator([trl_example(p) for p in pairs])
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()

    assert abs(float(trl_loss.detach()) - 0.6931) > 1e-3, "the policies moved away from the references"
    assert abs(float(loss_sum.detach()) / len(pairs) - float(trl_loss.detach())) < 1e-4
    mine = {n: p.grad for n, p in ours.named_parameters() if p.requires_grad}
    other = {n: p.grad for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert mine.keys() == other.keys() and mine
    for name, g in mine.items():
        assert g.abs().sum() > 0, name
        torch.testing.assert_close(g, other[name], atol=1e-4, rtol=0, msg=name)
    assert 0 <= sums["preferred"] <= len(pairs)


def test_sequence_log_probs_count_only_the_reply(tiny_model_dir: Path) -> None:
    """The summed log-prob of a pair's reply is what a full-logits computation gives over the labelled tokens."""
    from tunesmith.train.batches import collate
    from tunesmith.train.loss import sequence_logps

    model, tok = lora_model(tiny_model_dir)
    model.eval()
    pairs = make_pairs(tok)
    batch = collate([p.chosen for p in pairs], tok.pad_token_id)
    with torch.no_grad():
        got = sequence_logps(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    logp = torch.log_softmax(logits[:, :-1], -1)
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    want = (logp.gather(2, targets.clamp(min=0)[..., None]).squeeze(-1) * keep).sum(1)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_the_start_has_zero_margin_and_the_loss_is_log_two(tiny_model_dir: Path, beta: float) -> None:
    """With the reference computed from the same weights, every log-ratio is 0: loss log 2 per pair."""
    model, tok = lora_model(tiny_model_dir)
    pairs = make_pairs(tok)
    objective = DPO(beta=beta)
    objective.compute_references(model, pairs, micro=3, pad_id=tok.pad_token_id)
    model.eval()
    with torch.no_grad():
        loss, sums = objective.loss(model, objective.collate([[p] for p in pairs], tok.pad_token_id))
    assert abs(float(loss) / len(pairs) - float(torch.log(torch.tensor(2.0)))) < 1e-5
    assert abs(sums["margin"]) < 1e-4


PAIRS = Path(__file__).resolve().parents[1] / "src/tunesmith/examples/support_triage_pairs"


def pair_rows(n: int, split: str = "train") -> list[dict]:
    import json

    return [json.loads(x) for x in (PAIRS / f"{split}.jsonl").read_text().splitlines()[:n]]


def test_a_file_of_pairs_trains_with_dpo_through_the_loop(tmp_path: Path, tiny_model_dir: Path) -> None:
    """No --method: the pairs choose DPO; metrics.jsonl has its reward margin and preference accuracy, the
    margin grows, and the run resumes exactly (the references are recomputed from the start)."""
    import json

    from tunesmith import runs
    from tunesmith.train.pipeline import run_training

    from .conftest import write_jsonl
    from .test_train import adapter_tensors, make_cfg

    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(24))
    cfg = make_cfg(
        tiny_model_dir,
        data,
        max_steps=12,
        save_every=6,
        epochs=4,
        learning_rate=3e-2,
        early_stopping_patience=None,
        beta=1.0,
        dpo_nll=0.0,  # plain DPO: the first step's loss is exactly log 2
    )
    cfg.data.val_split = 0.25
    result = run_training(cfg, tmp_path / "run")
    assert result.config.train.objective == "dpo" and result.config.train.packing is False
    assert result.config.train.beta == 1.0 and "beta" not in " ".join(result.reasons)
    assert result.config.train.dpo_nll == 0.0
    lines = [json.loads(x) for x in (tmp_path / "run" / runs.METRICS).read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]
    vals = [x for x in lines if "val_loss" in x]
    assert {"preference_accuracy", "reward_margin"} <= steps[0].keys()
    assert {"val_preference_accuracy", "val_reward_margin"} <= vals[0].keys()
    assert abs(steps[0]["loss"] - 0.6931) < 0.02, "the first step starts at log 2: policy == reference"
    late = steps[-4:]
    assert sum(x["loss"] for x in late) / 4 < 0.66, "it learns to prefer the preferred replies"
    assert sum(x["reward_margin"] for x in late) / 4 > 0.05

    run_training(cfg, tmp_path / "resumed", stop_after=6)
    run_training(cfg, tmp_path / "resumed", resume=True)
    a, b = adapter_tensors(tmp_path / "run"), adapter_tensors(tmp_path / "resumed")
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=k)


def test_the_objective_and_the_data_must_agree(tmp_path: Path, tiny_model_dir: Path, chat_file: Path) -> None:
    from tunesmith.errors import UserError
    from tunesmith.train.pipeline import run_training

    from .conftest import write_jsonl
    from .test_train import make_cfg

    cfg = make_cfg(tiny_model_dir, chat_file, max_steps=2, method="dpo")
    assert cfg.train.method == "lora" and cfg.train.objective == "dpo"
    with pytest.raises(UserError, match="holds supervised rows, and DPO trains on preference pairs"):
        run_training(cfg, tmp_path / "a")
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(8))
    cfg = make_cfg(tiny_model_dir, data, max_steps=2, objective="sft")
    with pytest.raises(
        UserError,
        match=r"holds preference pairs: train them with DPO \(tunesmith train --method dpo; jobs: method type dpo\)",
    ):
        run_training(cfg, tmp_path / "b")  # (the message names both ways to ask for DPO)


def test_eval_reports_held_out_preference_accuracy_against_the_start(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tunesmith.eval.report import render_markdown
    from tunesmith.eval.runner import EvalOptions, evaluate_run
    from tunesmith.train.pipeline import run_training

    from .conftest import write_jsonl
    from .test_train import make_cfg

    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(16))
    cfg = make_cfg(tiny_model_dir, data, max_steps=12, epochs=6, learning_rate=3e-2, beta=1.0)
    run_training(cfg, tmp_path / "run")
    # Scored on pairs it trained on: the tiny random model cannot generalise, but DPO must have moved these.
    result = evaluate_run(tmp_path / "run", data, EvalOptions(max_new_tokens=4, batch_size=8))
    p = result["preference"]
    assert p["pairs"] == 16 and p["reward_accuracy"] > 0.5
    assert p["tuned_mean_margin"] > p["start_mean_margin"]
    assert "On 16 held-out pairs" in render_markdown(result)
    assert result["rows"] == 16 and result["rows_detail"][0]["reference"].startswith('{"category"')


def test_dpo_on_a_lora_run_continues_its_adapter(tmp_path: Path, tiny_model_dir: Path, chat_file: Path) -> None:
    """--model RUN (an SFT LoRA run): DPO trains that adapter further; the reference is the SFT model, so the
    first step's loss is log 2; the finished run loads as the original base plus the continued adapter."""
    import json

    from safetensors.torch import load_file

    from tunesmith import runs
    from tunesmith.train.pipeline import run_training

    from .conftest import write_jsonl
    from .test_train import adapter_tensors, make_cfg

    sft_cfg = make_cfg(tiny_model_dir, chat_file, max_steps=3, learning_rate=3e-2)
    sft_cfg.lora.dropout = 0.0  # (with dropout, the first training forward differs from the reference pass)
    sft = run_training(sft_cfg, tmp_path / "sft")
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(8))
    cfg = make_cfg(tmp_path / "sft", data, max_steps=2, learning_rate=1e-2, dpo_nll=0.0)
    cfg.lora.r = 8  # ignored: the adapter keeps its own r
    result = run_training(cfg, tmp_path / "dpo")
    info = runs.read_run(tmp_path / "dpo")
    assert info.base_model == str(tiny_model_dir) and info.started_from == str(tmp_path / "sft")
    assert any("continues the adapter" in c for c in info.choices)
    adapter_cfg = json.loads((tmp_path / "dpo" / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 4
    before, after = adapter_tensors(tmp_path / "sft"), adapter_tensors(tmp_path / "dpo")
    assert before.keys() == after.keys()
    moved = max((after[k] - before[k]).abs().max().item() for k in before)
    assert 0 < moved < 0.5, "the SFT adapter was trained further, not replaced"
    first = json.loads((tmp_path / "dpo" / runs.METRICS).read_text().splitlines()[0])
    assert abs(first["loss"] - 0.6931) < 1e-3, "the reference is the SFT model the run started from"
    assert result.loop.step == 2 and sft.summary is not None
    assert load_file(tmp_path / "dpo" / "adapter" / "adapter_model.safetensors")


def test_the_nll_term_adds_the_preferred_replys_per_token_loss(tiny_model_dir: Path) -> None:
    """RPO: loss = DPO + nll x (the preferred reply's NLL / its token count), per pair; and it is the default."""
    from tunesmith.config import TrainSettings
    from tunesmith.train import auto
    from tunesmith.train.batches import collate
    from tunesmith.train.loss import sequence_logps
    from tunesmith.train.objectives import get_objective

    model, tok = lora_model(tiny_model_dir)
    model.eval()
    pairs = make_pairs(tok)
    plain, anchored = DPO(beta=BETA), DPO(beta=BETA, nll=0.5)
    plain.compute_references(model, pairs, micro=4, pad_id=tok.pad_token_id)
    batch = plain.collate([[p] for p in pairs], tok.pad_token_id)
    with torch.no_grad():
        a, _ = plain.loss(model, batch)
        b, _ = anchored.loss(model, batch)
        logp = sequence_logps(model, collate([p.chosen for p in pairs], tok.pad_token_id))
    n = torch.tensor([sum(x != IGNORE for x in p.chosen.labels[1:]) for p in pairs], dtype=logp.dtype)
    torch.testing.assert_close(b - a, 0.5 * (-logp / n).sum(), atol=1e-5, rtol=0)
    settings = auto.resolve(TrainSettings(objective="dpo"), 300, 100, []).settings
    assert settings.dpo_nll == auto.DPO_NLL and get_objective("dpo", settings).nll == auto.DPO_NLL


def test_bad_pairs_are_named_by_line_field_and_code(tmp_path: Path) -> None:
    import json

    from tunesmith.data.formats import parse_file

    good = pair_rows(2)
    user = [{"role": "user", "content": "x"}]
    bad = [
        {"input": {"messages": user}, "preferred_output": [{"role": "assistant", "content": "y"}]},
        {"prompt": "x", "chosen": ["y"], "rejected": "z"},
        {"prompt": "x", "chosen": "same", "rejected": "same"},
        {"input": {"messages": user}, "preferred_output": [{"role": "user", "content": "y"}],
         "non_preferred_output": [{"role": "assistant", "content": "z"}]},
        {"messages": [*user, {"role": "assistant", "content": "y"}]},
    ]  # fmt: skip
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in good + bad))
    parsed = parse_file(path)
    assert parsed.format == "preference" and len(parsed.examples) == 2
    found = {(p.line, p.code) for p in parsed.problems}
    assert found == {(3, "pair-output"), (4, "pair-output"), (5, "pair-identical"), (6, "pair-output"),
                     (7, "mixed-objectives")}  # fmt: skip
    assert any("'non_preferred_output' is missing" in p.message for p in parsed.problems)


def test_full_fine_tuning_on_pairs_is_dpo_on_every_weight(tmp_path: Path, tiny_model_dir: Path) -> None:
    import json

    from tunesmith import runs
    from tunesmith.train.pipeline import run_training

    from .conftest import write_jsonl
    from .test_train import make_cfg

    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(8))
    cfg = make_cfg(tiny_model_dir, data, method="full", max_steps=2, learning_rate=1e-3, dpo_nll=0.0)
    result = run_training(cfg, tmp_path / "run")
    info = runs.read_run(tmp_path / "run")
    assert info.method == "full" and info.objective == "dpo" and info.trainable_params == info.total_params
    from tunesmith.config import TrainSettings
    from tunesmith.train import auto

    defaults = auto.resolve(TrainSettings(method="full", objective="dpo"), 300, 100, [])
    assert defaults.settings.learning_rate == auto.DPO_FULL_LR
    assert "learning rate 5e-06: the DPO full default, 10x below SFT's" in defaults.reasons
    first = json.loads((tmp_path / "run" / runs.METRICS).read_text().splitlines()[0])
    assert abs(first["loss"] - 0.6931) < 1e-3 and "preference_accuracy" in first
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file() and result.loop.step == 2


@pytest.mark.parametrize("full", [False, True], ids=["lora-fused-head", "full-autograd-head"])
def test_a_shared_prefix_batch_gives_each_replys_own_log_prob_and_gradient(tiny_model_dir: Path, full: bool) -> None:
    """A pair in one row (prompt once, both replies after it) gives the same summed log-probs, and the same
    gradients, as the two sequences padded into rows of their own: the second reply never sees the first.
    With LoRA the frozen head takes the fused path; in a full fine-tune the trainable head goes through autograd."""
    from tunesmith.train.batches import collate, collate_shared_prefix, common_prefix
    from tunesmith.train.loss import sequence_logps

    model, tok = lora_model(tiny_model_dir)
    if full:
        model = model.merge_and_unload()
        for p in model.parameters():
            p.requires_grad_(True)
    pairs = make_pairs(tok)
    assert all(common_prefix(p.chosen.input_ids, p.rejected.input_ids) > 3 for p in pairs)
    weights = torch.linspace(0.5, 2.0, 2 * len(pairs))  # a different upstream gradient for every sequence

    def grads(batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        logps = sequence_logps(model, batch)
        (logps * weights).sum().backward()
        return logps.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    separate, g_separate = grads(collate([p.chosen for p in pairs] + [p.rejected for p in pairs], tok.pad_token_id))
    shared_batch = collate_shared_prefix([(p.chosen, p.rejected) for p in pairs], tok.pad_token_id)
    shared, g_shared = grads(shared_batch)
    assert shared_batch["input_ids"].shape[0] == len(pairs)
    torch.testing.assert_close(shared, separate, atol=1e-4, rtol=0)
    assert g_shared.keys() == g_separate.keys() and g_shared
    for name, g in g_shared.items():
        torch.testing.assert_close(g, g_separate[name], atol=1e-4, rtol=1e-4, msg=name)
