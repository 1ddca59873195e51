"""Hyperparameters chosen for the data, the way hosted fine-tuning services do it.

A new user with a few hundred rows and no flags should get a model that learned the task and learned
to stop. Every automatic choice comes with the reason, which the run summary prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tunesmith.config import TrainSettings
from tunesmith.errors import UserError

# OpenAI's published defaults for epochs: aim for 3 passes, but see at least ~100 examples in total
# and at most ~25k, within 1..25 epochs.
TARGET_EPOCHS, MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES = 3, 100, 25_000
MIN_EPOCHS, MAX_EPOCHS = 1, 25
# Peak learning rates that worked across our small-model runs (see BENCHMARKS.md / README defaults).
LORA_LR = 1e-3
FULL_LR = 5e-5
# DPO moves the log-ratio of two replies at once and is held near the start only by beta: an order of
# magnitude below SFT's rates (TRL's examples use 5e-6..5e-5 for full, ~1e-4 for LoRA).
DPO_LORA_LR = 1e-4
DPO_FULL_LR = 5e-6
DPO_BETA = 0.1
DPO_NLL = 1.0  # RPO's weight (Pang et al. 2024); see README for the demo run without it
# RFT (GRPO): the update is a policy gradient on sampled completions, held near the start by nothing but a
# small step; 10x below SFT's LoRA rate (as DPO), and TRL's GRPO default for full fine-tuning.
RFT_LORA_LR = 1e-4
RFT_FULL_LR = 1e-6
RFT_TEMPERATURE = 1.0  # TRL's: sample the policy as it is, so the loss's log-probs are the sampler's
RFT_MAX_COMPLETION = 128
RFT_EVALS = 5  # validations a run: each one generates a completion of every held-out prompt
# Prompt visits an RFT run aims for (epochs x prompts, 1..3 epochs). On the shipped triage example (96 training
# prompts after an SFT run on 40 rows) 2 epochs raised the held-out grade +4.2 and +2.5 points over two seeds,
# 3 epochs (288 visits) +10.4 on both; one epoch over 228 prompts never beat its start on validation (README,
# reinforcement).
RFT_TARGET_VISITS = 280
# Replay of general rows in SFT steps (train/general.py, train/chat_replay.py): the share of each step's trained
# tokens. On the demo task at lr 1e-3 (BENCHMARKS.md, "Forgetting frontier", parts 1 and 2): prose replay held
# general-English perplexity but kept 0 of 41 everyday answers; chat replay 10% kept 29 of 41 at 94.0% field
# accuracy. The KL term below holds both checks at less cost to the task, so replay stays opt-in.
REPLAY_SHARE = 0.0
# KL(base || tuned) on the base model's own answers to everyday prompts, one a step (LoRA SFT; train/general.py):
# the default hold against forgetting. BENCHMARKS.md, "Forgetting frontier, part 3", lr 1e-3, one seed each:
# on the demo task 2.0 with 4 epochs kept 96.7% field accuracy (95.7% without the term, 3 epochs), -0.4% perplexity
# and all 31 everyday answers, where the run without it rose +36.9% and answered none; on the persona task test
# loss 0.568 (0.603 without), +1.2%, 30 of 31 (without: +86.3%, none); on long replies 0.224 (0.220), +6.3%, 31 of
# 31 (without: +537.7%, at most 1). Lower weights lost everyday answers on the persona task (1.0: 5 of 31,
# numbers from the task's facts), higher ones cost the demo task accuracy (4.0, 3 epochs: 91.3%).
KL_TO_BASE = 2.0
# The term holds the model near its base, so the task takes a pass longer: on the demo, 2.0 x KL reached 96.7% in
# 4 epochs (KL 1.0: 94.0% in 3, 97.0% in 4). A run with the term and the usual epoch count gets one more.
KL_EXTRA_EPOCHS = 1
# Tokens per forward pass: bounds activation memory whatever the row length. The activations kept for the
# backward pass set the peak RSS (~1 MB a token for SmolLM2-135M): on the long-reply set, ~2k tokens instead
# of ~4k cut it 4474 -> 3413 MB for ~5% more wall time (2-vCPU AMX Xeon, 2026-12-06: one benchmark pair
# against one single run; BENCHMARKS.md). Rows of up to ~250 tokens (the demo) keep micro-batches of 8 either way.
# A run in fp32 (no native bf16) takes half as many (resolve's ``fp32``): its activations are twice the bytes;
# on a Zen 3 EPYC the short set's RSS went 4533 -> 3663 MB for ~4% more time (BENCHMARKS.md, "Zen 3").
MICRO_BATCH_TOKENS = 2048
# DPO's and RFT's figures (README; their benchmarks against TRL) were measured at ~4k tokens per forward
# pass in bf16; ~2k is not measured for them yet, so they keep it (halved in fp32 too: not measured there).
MICRO_BATCH_TOKENS_DPO_RFT = 4096


# Validation: aim for ~10 evaluations a run, no fewer than enough for early stopping to act (patience 3
# needs 4 after the best), and never on fewer than a handful of rows. A run so short that even that costs more than
# its budget (18 steps of 160 short rows, with the forgetting probe's ~3,200 tokens each time: ~32%) validates
# FEWEST_EVALS times instead (the middle and the end: best weights still have a choice), and says so.
TARGET_EVALS, MIN_EVALS, MIN_VAL_ROWS, FEWEST_EVALS = 10, 5, 8, 2
# A trained token costs a forward and a backward pass, about three forward passes' worth; a validation
# token costs one. The budget is a share of compute, so it is counted in forward tokens.
TRAIN_TOKEN_COST = 3


@dataclass
class Resolved:
    settings: TrainSettings
    reasons: list[str]
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    val_rows: int = 0  # how many validation rows each evaluation uses (a fixed sample when fewer than all)
    n_evals: int = 0
    probe_last_only: bool = False  # the forgetting probe reads at the last evaluation only (ValidationPlan)


@dataclass(frozen=True)
class ValidationPlan:
    eval_every: int
    rows: int
    n_evals: int
    share: float  # of the run's compute
    # Over budget, with nothing choosing by the probe (no forgetting budget): it reads its text at the last
    # evaluation only (and on the kept weights, if those are earlier ones), not at every one.
    probe_last_only: bool = False


def evaluations(total_steps: int, every: int) -> int:
    """How many times the loop validates: every ``every`` steps, and after the last step."""
    return total_steps // every + (1 if total_steps % every else 0)


def _cadence(total_steps: int, wanted: int, least: int = MIN_EVALS) -> int:
    """The most frequent cadence that validates at most ``wanted`` times, unless that falls short of ``least``:
    then the least frequent one that still reaches it."""
    every = next(e for e in range(1, total_steps + 1) if evaluations(total_steps, e) <= wanted)
    if evaluations(total_steps, every) < min(least, total_steps):
        every = max(e for e in range(1, total_steps + 1) if evaluations(total_steps, e) >= least)
    return every


def plan_validation(
    eval_every: int | None,
    budget: float,
    total_steps: int,
    train_tokens: int,
    val_lengths: list[int],
    per_eval_tokens: int = 0,
    probe_may_thin: bool = False,
) -> ValidationPlan:
    """How often, and on how many rows, validation runs so that it costs at most ``budget`` of the run's
    compute: ~10 evaluations on every row when that fits; else fewer evaluations (down to 5); else 5 on a
    fixed sample of the rows; else, for a run too short even for that, ``FEWEST_EVALS`` on the sample (the one
    case whose share may exceed the budget: the plan says so). An ``eval_every`` that was given is kept, on every
    row. ``per_eval_tokens``: forward tokens every evaluation spends besides its rows (the forgetting probe's
    text), which it also spends once before the first step. ``probe_may_thin``: nothing selects weights by the
    probe, so a plan over budget may read it at the last evaluation only."""
    n_val = len(val_lengths)
    mean_len = sum(val_lengths) / max(1, n_val)
    allowed = budget * TRAIN_TOKEN_COST * train_tokens  # forward tokens validation may spend in the run
    rows, given = n_val, eval_every is not None
    if eval_every is None:
        affordable = int((allowed - per_eval_tokens) // max(1.0, mean_len * n_val + per_eval_tokens))
        eval_every = _cadence(total_steps, wanted=min(TARGET_EVALS, max(MIN_EVALS, affordable)))
        if affordable < MIN_EVALS:
            rows = min(n_val, MIN_VAL_ROWS)
            at_least = int((allowed - per_eval_tokens) // max(1.0, rows * mean_len + per_eval_tokens))
            least = max(FEWEST_EVALS, min(MIN_EVALS, at_least))
            eval_every = _cadence(total_steps, wanted=least, least=least)
            n = evaluations(total_steps, eval_every)
            fit = int(((allowed - per_eval_tokens) / n - per_eval_tokens) // max(1.0, mean_len))
            rows = min(n_val, max(MIN_VAL_ROWS, fit))
    n_evals = evaluations(total_steps, eval_every)

    def share(probed: int) -> float:
        spent = n_evals * rows * mean_len + (probed + 1) * per_eval_tokens
        return spent / max(1.0, TRAIN_TOKEN_COST * train_tokens)

    thin = probe_may_thin and not given and per_eval_tokens > 0 and n_evals > 1 and share(n_evals) > budget + 1e-9
    return ValidationPlan(eval_every, rows, n_evals, share(1 if thin else n_evals), thin)


def default_epochs(n: int, held: bool = False) -> tuple[int, str]:
    """Epochs for ``n`` rows; ``held``: the run has a KL-to-base term, which slows the task's learning."""
    if n * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        e = min(MAX_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / n))
        return e, f"{e} epochs: only {n} rows, so repeat them to see >= {MIN_TARGET_EXAMPLES} examples"
    if n * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        e = max(MIN_EPOCHS, MAX_TARGET_EXAMPLES // n)
        return e, f"{e} epoch(s): {n} rows is plenty; capped at ~{MAX_TARGET_EXAMPLES} examples seen"
    if held:
        e = TARGET_EPOCHS + KL_EXTRA_EPOCHS
        why = f"{e} epochs: the usual {TARGET_EPOCHS} for {n} rows, and one more because the KL term holds the "
        return e, why + "model near its base, so the task takes a pass longer"
    return TARGET_EPOCHS, f"{TARGET_EPOCHS} epochs: the usual choice for {n} rows"


def default_batch_size(n: int) -> tuple[int, str]:
    b = 4 if n < 100 else 8 if n < 2_000 else 16 if n < 20_000 else 32
    return b, f"batch {b}: enough optimizer steps for {n} rows"


def default_learning_rate(method: str, objective: str | None = "sft") -> float:
    """The peak learning rate a run gets when none is given (the jobs API's multiplier scales it)."""
    if objective == "rft":
        return RFT_LORA_LR if method == "lora" else RFT_FULL_LR
    if objective == "dpo":
        return DPO_LORA_LR if method == "lora" else DPO_FULL_LR
    return LORA_LR if method == "lora" else FULL_LR


def _dpo_defaults(s: TrainSettings) -> list[str]:
    """DPO's own choices: beta, a lower learning rate, and whole pairs (no packing)."""
    reasons = []
    if s.beta is None:
        s.beta = DPO_BETA
        reasons.append(f"beta {s.beta:g}: DPO's usual pull toward the starting model (the paper's and TRL's)")
    if s.learning_rate is None:
        s.learning_rate = DPO_LORA_LR if s.method == "lora" else DPO_FULL_LR
        reasons.append(f"learning rate {s.learning_rate:g}: the DPO {s.method} default, 10x below SFT's")
    if s.dpo_nll is None:
        s.dpo_nll = DPO_NLL
        reasons.append(
            f"DPO + {s.dpo_nll:g} x the preferred reply's NLL (RPO): keeps it likely while the pair is pulled apart"
        )
    if s.packing:
        s.packing = False
        reasons.append("packing: off (DPO compares each pair's two replies whole)")
    return reasons


def default_generations(n: int) -> int:
    """RFT's K for ``n`` prompts (the jobs API's compute_multiplier scales it)."""
    return 8 if n < 50 else 4


def _rft_defaults(s: TrainSettings, n: int, p95_prompt: int) -> list[str]:
    """RFT's own choices, made before the generic ones: K, temperature, completion length, epochs, the
    forward-pass size in completions, the learning rate, the KL term, no packing."""
    reasons = []
    if s.generations is None:
        s.generations = default_generations(n)
        why = "few prompts: more samples each" if n < 50 else "enough prompts: fewer samples each, cheaper steps"
        reasons.append(f"K {s.generations} completions per prompt ({why}; a group's spread is its signal)")
    if s.temperature is None:
        s.temperature = RFT_TEMPERATURE
        reasons.append(f"sampling temperature {s.temperature:g}: the policy as it is (TRL's default)")
    if s.max_completion_len is None:
        s.max_completion_len = RFT_MAX_COMPLETION
        reasons.append(
            f"completions of at most {s.max_completion_len} tokens (sampling dominates a step; raise with "
            "--max-completion-len if answers are longer: metrics.jsonl's completions_stopped says how many ended)"
        )
    if s.epochs is None:
        s.epochs = min(3, max(1, math.ceil(RFT_TARGET_VISITS / max(1, n))))
        reasons.append(
            f"{s.epochs} epoch(s) over {n} prompts: ~{RFT_TARGET_VISITS} prompt visits, at most 3 passes "
            "(every step samples K completions of each)"
        )
    if s.micro_batch_size is None:
        s.micro_batch_size = max(1, MICRO_BATCH_TOKENS_DPO_RFT // max(1, p95_prompt + s.max_completion_len))
        reasons.append(
            f"micro-batch {s.micro_batch_size} completions: ~{MICRO_BATCH_TOKENS_DPO_RFT} tokens per forward pass"
        )
    if s.learning_rate is None:
        s.learning_rate = default_learning_rate(s.method, "rft")
        reasons.append(f"learning rate {s.learning_rate:g}: the RFT {s.method} default, 10x below SFT's")
    reasons.append(
        f"KL to the start: beta {s.beta:g}" if s.beta else "no KL term (TRL's default; --beta 0.04 adds one)"
    )
    if s.packing:
        s.packing = False
        reasons.append("packing: off (each completion is scored whole)")
    return reasons


def default_kl_to_base(method: str, objective: str | None) -> tuple[float, str]:
    """(the KL-to-base weight a run gets when it sets none, the sentence saying why)."""
    from tunesmith.train import distributed

    off = "KL to the base: off by default for"
    if method != "lora":
        return 0.0, f"{off} full fine-tuning (its base would be a second copy of the model; --replay holds it)"
    if (objective or "sft") != "sft":
        return 0.0, f"{off} {objective}: its own objective holds the model near its reference"
    if distributed.world() > 1:
        return 0.0, f"{off} a multi-process run (the term runs in one process for now)"
    return KL_TO_BASE, (
        f"KL to the base {KL_TO_BASE:g}: the LoRA SFT default, which kept the shipped tasks' runs within both "
        "forgetting checks at the task's accuracy (BENCHMARKS.md, forgetting frontier; --kl-to-base 0 turns it off)"
    )


def _forgetting_defaults(s: TrainSettings) -> list[str]:
    """Replay's share (SFT only) and the checks of the forgetting options against the method and objective
    (the KL term's weight is chosen before the epochs, which depend on it)."""
    sft = (s.objective or "sft") == "sft"
    if s.replay and not sft:
        raise UserError(
            f"--replay mixes general text into SFT steps, and {s.objective} does not train on plain text "
            "(use --beta to hold it near the start)"
        )
    if s.kl_to_base and s.method != "lora":
        raise UserError("--kl-to-base needs LoRA: the base it compares with is the model with its adapter disabled")
    if s.replay is not None or not sft:
        return []
    s.replay = REPLAY_SHARE
    if not s.replay:
        return []
    return [
        f"replay: {s.replay:.0%} of each step's trained tokens are general English (a shipped text the forgetting "
        "check does not read): on the demo it kept general-English perplexity within the check's +10% where lr "
        "1e-3 alone rose 37% (BENCHMARKS.md, forgetting frontier; --replay 0 turns it off)"
    ]


def _rft_validation(s: TrainSettings, total: int, n_val: int) -> tuple[int, str]:
    """(eval_every, the sentence): RFT validates on its mean grade, ~RFT_EVALS times a run."""
    every = s.eval_every or max(1, math.ceil(total / RFT_EVALS))
    how = "as configured" if s.eval_every else f"~{RFT_EVALS} times a run"
    return every, (
        f"validation: mean grade of greedy completions (temperature 0, up to {s.max_completion_len} tokens) on "
        f"{n_val} held-out prompts every {every} steps ({how}); the run keeps the latest weights whose grade is "
        "not clearly below the highest (by 2 standard errors, paired over the prompts); early stopping counts "
        "only the validations that are"
    )


def resolve(
    settings: TrainSettings,
    n_train: int,
    p95_len: int,
    val_lengths: list[int],
    train_tokens: int | None = None,
    probe_tokens: int = 0,
    fp32: bool = False,
) -> Resolved:
    """Every automatic choice for ``n_train`` rows (``train_tokens`` tokens in an epoch) and a validation set
    of ``val_lengths``; ``probe_tokens``: what the forgetting probe reads at each validation (0: no probe);
    ``fp32``: the run computes in fp32 (its activations take twice bf16's memory)."""
    s = settings.model_copy()
    reasons: list[str] = _rft_defaults(s, n_train, p95_len) if s.objective == "rft" else []
    if s.kl_to_base is None:
        s.kl_to_base, why = default_kl_to_base(s.method, s.objective)
        reasons.append(why)
    if s.epochs is None:
        s.epochs, why = default_epochs(n_train, held=bool(s.kl_to_base))
        reasons.append(why)
    if s.batch_size is None:
        s.batch_size, why = default_batch_size(n_train)
        reasons.append(why)
    if s.micro_batch_size is None:
        tokens = MICRO_BATCH_TOKENS if (s.objective or "sft") == "sft" else MICRO_BATCH_TOKENS_DPO_RFT
        why = ""
        if fp32:
            tokens //= 2
            why = " (fp32: half bf16's tokens, as each one's activations take twice the memory)"
        fit = max(1, tokens // max(1, p95_len))
        s.micro_batch_size = max(d for d in range(1, s.batch_size + 1) if s.batch_size % d == 0 and d <= fit)
        reasons.append(f"micro-batch {s.micro_batch_size}: ~{tokens} tokens per forward pass{why}")
    if s.objective == "dpo":
        reasons += _dpo_defaults(s)
    if s.learning_rate is None:
        s.learning_rate = LORA_LR if s.method == "lora" else FULL_LR
        reasons.append(f"learning rate {s.learning_rate:g}: the {s.method} default, cosine-decayed")
    reasons += _forgetting_defaults(s)
    steps_per_epoch = math.ceil(n_train / s.batch_size)
    total = steps_per_epoch * s.epochs
    if s.max_steps is not None:
        total = min(total, s.max_steps)
    warmup = math.ceil(total * s.warmup_ratio) if s.warmup_ratio else 0
    val_rows = n_evals = 0
    last_only = False
    if val_lengths and s.objective == "rft":
        s.eval_every, why = _rft_validation(s, total, len(val_lengths))
        val_rows, n_evals = len(val_lengths), evaluations(total, s.eval_every)
        reasons.append(why)
    elif val_lengths:
        tokens = (train_tokens or n_train * p95_len) * total / max(1, steps_per_epoch)  # trained in the run
        given = s.eval_every
        thin = s.forgetting_budget is None
        v = plan_validation(given, s.val_budget, total, round(tokens), val_lengths, probe_tokens, thin)
        s.eval_every, val_rows, n_evals, last_only = v.eval_every, v.rows, v.n_evals, v.probe_last_only
        reasons.append(_validation_reason(v, len(val_lengths), given is not None, s.val_budget, probe_tokens))
    if s.save_every is None:
        s.save_every = s.eval_every or max(1, total // 5)
    return Resolved(s, reasons, steps_per_epoch, total, warmup, val_rows, n_evals, last_only)


def _validation_reason(v: ValidationPlan, n_val: int, given: bool, budget: float, probe_tokens: int = 0) -> str:
    on = f"all {n_val} validation rows" if v.rows == n_val else f"a fixed sample of {v.rows} of the {n_val} rows"
    on += f" and the forgetting probe's {probe_tokens} tokens" if probe_tokens else ""
    if given:
        how = "as configured"
    elif v.share <= budget + 1e-9:
        how = f"within the {budget:.0%} budget"
    else:  # the fewest evaluations on the fewest rows still cost more: a very short run
        how = (
            f"over the {budget:.0%} budget: {v.n_evals} evaluations on {v.rows} rows is the least validation that "
            f"still picks best weights (early stopping needs {MIN_EVALS}; --val-budget or --eval-every to change)"
        )
    times = f"{v.n_evals} times"
    if v.probe_last_only:
        times += "; the probe at the last one only, as nothing picks weights by it (--forgetting-budget would)"
    return f"validation every {v.eval_every} steps on {on} ({times}): ~{v.share:.0%} of the run's compute, {how}"
