"""The training loop: one visible function, plain PyTorch, for every objective.

    train(model, train_data, val_data, plan, settings, ..., engine)     engine.objective says what a loss is

Per optimizer step: run every micro-batch of the step, each contributing (its summed loss) / (the weight of
the whole step: trained tokens for SFT), so accumulation is exact; clip; step AdamW and the schedule; log a
line to metrics.jsonl. Every ``eval_every`` steps: validation and early stopping, keeping the best weights
(validation.py). Every ``save_every`` steps, and before stopping for a signal: an atomic checkpoint holding
all a resume needs (weights, optimizer, schedule, RNG, position).

The objective (objectives/) turns rows into a loss and metrics; the engine (engine.py, distributed.py)
runs forwards, deals a step's rows to the processes and adds up what they measured. Neither knows about
steps, schedules or checkpoints, and this file knows nothing of losses.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tunesmith import console, runs
from tunesmith.config import TrainSettings
from tunesmith.errors import UserError
from tunesmith.train import signals
from tunesmith.train.batches import StepPlan, padded_width
from tunesmith.train.engine import Engine
from tunesmith.train.general import General, KLTargets, replay_tokens
from tunesmith.train.loop_state import LoopState
from tunesmith.train.loss import decoder_hidden
from tunesmith.train.objectives import Objective, Sums
from tunesmith.train.objectives.base import add_sums
from tunesmith.train.optim import make_optimizer
from tunesmith.train.precision import autocast
from tunesmith.train.progress import Progress, trim_metrics
from tunesmith.train.trackers import Tracker
from tunesmith.train.validation import Validator, probe_kept_weights, restore, snapshot

MAX_BAD_STEPS = 5  # consecutive non-finite steps before giving up


def train(
    model: Any,
    train_data: list[Any],
    val_data: list[Any],
    plan: list[StepPlan],
    settings: TrainSettings,
    *,
    total_steps: int,
    warmup_steps: int,
    pad_id: int,
    run_dir: Path,
    bf16: bool = False,
    resume: bool = False,
    stop_after: int | None = None,
    flops_per_token: float = 0.0,
    peak_flops: float = 0.0,
    engine: Engine | None = None,
    open_trackers: Callable[[int], list[Tracker]] | None = None,
    general: General | None = None,
) -> LoopState:
    """Train ``model`` in place with ``engine.objective``. ``stop_after`` ends the loop early (as a crash
    would), for tests. ``open_trackers(start_step)``: the ``--report-to`` trackers (see ``trackers.py``).
    ``general``: the forgetting probe and the KL-to-base term (general.py), where the run has them."""
    general = general or General()
    engine = engine or Engine(model)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    optimizer, scheduler = make_optimizer(
        list(params.values()),
        settings.learning_rate or 0.0,
        settings.weight_decay,
        total_steps,
        warmup_steps,
        settings.min_lr_ratio,
    )
    metrics_path, checkpoints = run_dir / runs.METRICS, run_dir / runs.CHECKPOINTS
    state, best = _start(engine, params, optimizer, scheduler, checkpoints, metrics_path, resume, total_steps)
    micro = settings.micro_batch_size or 1
    step_run = _StepRunner(engine, train_data, pad_id, bf16, flops_per_token, peak_flops, micro, general)
    if general.probe is not None and not (val_data and settings.eval_every):
        general = General(kl=general.kl)  # measured at validations only: a run without them has no probe
    if general.probe is not None and state.probe_base is None:
        state.probe_base = state.last_probe = general.probe.measure_base(model, state.step)
    validator = Validator(model, engine, val_data, micro, pad_id, bf16, settings.early_stopping_patience, general)

    def checkpoint() -> None:
        engine.save_checkpoint(
            checkpoints,
            state.step,
            weights=params,
            best_weights=best if state.best_step != state.step else None,
            optimizer=optimizer,
            state={"loop": asdict(state), "scheduler": scheduler.state_dict()},
            keep=settings.keep_checkpoints,
        )

    model.train()
    with Progress(total_steps, state.step, engine.is_main, metrics_path, open_trackers) as progress:
        start_is_bar = getattr(engine.objective, "validates_start", False)
        if (
            start_is_bar
            and state.step == 0
            and val_data
            and settings.eval_every
            and validator(state, progress, total_steps)
        ):
            best = snapshot(params)  # the start's grade: kept if every later one is clearly worse
        while state.step < total_steps and not state.stopped_early:
            if stop_after is not None and state.step >= stop_after:
                break
            step_plan = plan[state.step]
            record = step_run(step_plan, state, params, settings.max_grad_norm, optimizer)
            record["lr"] = scheduler.get_last_lr()[0]
            record["total_steps"] = total_steps  # readers (the jobs API's estimated finish) need the plan's length
            scheduler.step()
            progress.log(_ordered(record))
            every = settings.eval_every
            due = val_data and every and (state.step % every == 0 or state.step == total_steps)
            if due and validator(state, progress, total_steps):  # (True: the best validation so far)
                best = snapshot(params)
            progress.update(state.step, state.last_loss or 0.0, state.last_val, record["tokens_per_s"])
            # Every rank must agree to stop at the same step (torchrun signals each one separately, and a
            # sharded checkpoint needs them all), so the signal number is agreed on with a max.
            stop_signal = int(engine.all_max(signals.requested() or 0))
            finished = state.step == total_steps or state.stopped_early
            if state.step % (settings.save_every or total_steps) == 0 or finished or stop_signal:
                checkpoint()
            if stop_signal and not finished:
                raise signals.Interrupted(stop_signal, state.step, total_steps)
    if stop_after is None and best is not None and state.best_step != state.step:
        restore(params, best)  # keep the weights with the best validation loss, not the last ones
    if stop_after is None:
        probe_kept_weights(general, model, state)
    return state


# ---- one optimizer step ---------------------------------------------------------------------------------


@dataclass
class _StepRunner:
    """Runs one optimizer step of the plan and returns its metrics line (without the learning rate)."""

    engine: Engine
    data: list[Any]
    pad_id: int
    bf16: bool
    flops_per_token: float
    peak_flops: float
    micro: int = 1  # rows per forward pass, for an on-policy objective's sampled rows
    general: General | None = None  # the KL-to-base term, where the run has one

    def __post_init__(self) -> None:
        self.objective: Objective = self.engine.objective
        self.lengths = [self.objective.length(e) for e in self.data]

    def __call__(
        self, step_plan: StepPlan, state: LoopState, params: dict[str, Any], max_norm: float, optimizer: Any
    ) -> dict[str, Any]:
        examples = [self.data[i] for i in step_plan.indices]
        t0 = time.perf_counter()
        rollout = getattr(self.objective, "rollout", None)
        extra: dict[str, Any] = {}
        if rollout is not None:
            # An on-policy objective (RFT) turns the step's prompts into the rows it trains on, sampled from
            # the model as it is now; its micro-batches are cut from those rows, ``micro`` at a time.
            rows, weight, extra = rollout(self.engine.model, examples)
            lengths = [self.objective.length(e) for e in rows]
            n_tokens, n_trained = sum(lengths), weight
            step = self.micro
            mine = [[[i] for i in range(s, min(s + step, len(rows)))] for s in range(0, len(rows), step)]
            micro_batches = [[[rows[i] for i in row] for row in mb] for mb in mine]
            live = len(mine)
        else:
            weight = self.objective.weight(examples)
            lengths = self.lengths
            n_tokens = sum(self.lengths[i] for i in step_plan.indices)
            # Replay rows (general.py) train too, but are not the user's data: logged apart as replay_tokens.
            n_trained = sum(getattr(e, "n_trained", 0) for e in examples) - replay_tokens(examples)
            mine, live = self.engine.shard(step_plan.micro_batches, self.lengths)
            micro_batches = [[[self.data[i] for i in row] for row in mb] for mb in mine]
        t_train = time.perf_counter()
        kl = self.general.kl if self.general is not None else None
        # The KL-to-base term adds its gradient to the step's, so clipping sees both. An SFT step carries its
        # rows in its first micro-batch, whose pass they share (and the chat template's start, segments.py);
        # the first holds the step's shortest rows (batches.layout_step), where added rows raise the peak least.
        carry = kl is not None and rollout is None and _can_carry(self)
        packed = kl.targets(self.engine.model, state.step) if carry else None
        loss_total, sums = accumulate_gradients(
            self.engine.model,
            micro_batches,
            self.pad_id,
            self.bf16,
            engine=self.engine,
            weight=weight,
            live=live,
            kl=packed,
        )
        if kl is not None:
            value = (packed.kl if packed is not None else 0.0) if carry else kl(self.engine.model, state.step)
            extra["kl_to_base"] = round(value, 6)
        if rollout is None and (replayed := replay_tokens(examples)):  # (the user's rows: trained_tokens)
            extra["replay_tokens"] = replayed
        multiple = self.objective.width_multiple
        padded = sum(
            len(mb) * padded_width(max(sum(lengths[i] for i in row) for row in mb), multiple) for mb in mine[:live]
        )
        names = sorted(sums)
        loss_total, padded, *summed = self.engine.all_sum(loss_total, padded, *(sums[k] for k in names))
        sums = dict(zip(names, summed, strict=True))
        grad_norm = self.engine.clip_grad_norm(list(params.values()), max_norm)
        _apply_update(optimizer, state, ok=math.isfinite(grad_norm) and math.isfinite(loss_total))
        dt = time.perf_counter() - t0
        if rollout is not None:
            extra["train_s"] = round(time.perf_counter() - t_train, 3)
        state.step += 1
        state.elapsed_s += dt
        state.tokens += n_tokens
        state.trained_tokens += n_trained
        state.last_loss = loss_total / max(1, weight)
        return {
            "step": state.step,
            "epoch": step_plan.epoch + 1,
            "loss": round(state.last_loss, 6),
            "grad_norm": round(grad_norm, 6),
            "tokens": n_tokens,
            "trained_tokens": n_trained,
            "padded_tokens": int(padded),
            **{k: round(v, 6) for k, v in self.objective.metrics(sums, weight).items()},
            **extra,
            "tokens_per_s": round(n_tokens / dt, 1),
            "mfu": round(n_tokens / dt * self.flops_per_token / self.peak_flops, 4) if self.peak_flops else None,
            "elapsed_s": round(state.elapsed_s, 3),
        }


def _apply_update(optimizer: Any, state: LoopState, ok: bool) -> None:
    """Step AdamW on a finite step; skip a non-finite one, and give up after MAX_BAD_STEPS in a row."""
    if ok:
        optimizer.step()
        state.bad_steps_in_row = 0
    else:
        state.skipped_steps += 1
        state.bad_steps_in_row += 1
        if state.bad_steps_in_row >= MAX_BAD_STEPS:
            raise UserError(
                f"training diverged: {MAX_BAD_STEPS} steps in a row had a non-finite loss or gradient "
                "(lower the learning rate; the last good checkpoint is kept)"
            )
    optimizer.zero_grad(set_to_none=True)


_RECORD_ORDER = ("step", "epoch", "loss", "lr", "grad_norm", "tokens", "trained_tokens", "padded_tokens")


def _ordered(record: dict[str, Any]) -> dict[str, Any]:
    """The metrics line with its fixed fields first, as metrics.jsonl has always had them."""
    head = {k: record[k] for k in _RECORD_ORDER if k in record}
    return head | {k: v for k, v in record.items() if k not in head}


def _can_carry(runner: Any) -> bool:
    """Whether a step's micro-batches can carry the KL term's rows: an objective that scores a pass's hidden
    states (SFT), in one process."""
    return hasattr(runner.objective, "loss_from") and runner.engine.world == 1


def accumulate_gradients(
    model: Any,
    micro_batches: list[list[list[Any]]],
    pad_id: int,
    bf16: bool,
    *,
    engine: Engine | None = None,
    weight: float | None = None,
    live: int | None = None,
    kl: KLTargets | None = None,
) -> tuple[float, Sums]:
    """Backward over every micro-batch (a list of rows of examples) of one optimizer step; returns the
    summed loss and the summed metric numerators.

    Each micro-batch's summed loss is divided by the weight of the *whole step*, so the accumulated gradient
    equals that of one big batch however the step is cut (8x1 == 2x4). With several processes,
    ``micro_batches`` are this rank's share, ``weight`` is the whole step's on every rank, and micro-batches
    from index ``live`` on are placeholders with weight 0 (see distributed.py). ``kl``: the KL-to-base term's
    rows and targets (general.py), carried by the first micro-batch (SFT in one process: ``_can_carry``)."""
    engine = engine or Engine(model)
    objective = engine.objective
    if weight is None:
        weight = objective.weight([e for mb in micro_batches for row in mb for e in row])
    live = len(micro_batches) if live is None else live
    total, sums = 0.0, {}
    for k, mb in enumerate(micro_batches):
        term = None
        with engine.sync(last=k == len(micro_batches) - 1):
            with autocast(bf16):
                if k == 0 and kl is not None:
                    # The KL rows join this pass as rows of their own (labels ignored), read by the term alone.
                    batch = engine.to_device(objective.collate(mb + [[r] for r in kl.rows], pad_id))
                    hidden, head = decoder_hidden(engine.model, batch)
                    loss_sum, mb_sums = objective.loss_from(hidden, head, batch)
                    term = kl.term(hidden, head)
                else:
                    loss_sum, mb_sums = engine.forward(objective.collate(mb, pad_id))
            scaled = loss_sum * (engine.grad_scale if k < live else 0.0) / max(1, weight)
            (scaled if term is None else scaled + term).backward()
        if k < live:
            total += float(loss_sum.detach())
            sums = add_sums(sums, mb_sums)
    return total, sums


# ---- resume ---------------------------------------------------------------------------------------------


def _start(
    engine: Engine,
    params: dict[str, torch.nn.Parameter],
    optimizer: Any,
    scheduler: Any,
    checkpoints: Path,
    metrics_path: Path,
    resume: bool,
    total_steps: int,
) -> tuple[LoopState, dict[str, torch.Tensor] | None]:
    """(the loop's state, the best weights so far): fresh, or restored from the newest valid checkpoint."""
    main = engine.is_main  # rank 0 alone writes metrics
    if not resume:
        if main:
            metrics_path.unlink(missing_ok=True)
        return LoopState(), None
    found = engine.latest_checkpoint(checkpoints)
    if found is None:
        console.info("No checkpoint was saved yet: starting from step 0.")
        if main:
            trim_metrics(metrics_path, 0)
        return LoopState(), None
    ck = engine.load_checkpoint(found, params, optimizer)
    if ck["weights"] is not None:  # (a sharded checkpoint was loaded in place)
        restore(params, ck["weights"])
        optimizer.load_state_dict(ck["optimizer"])
    scheduler.load_state_dict(ck["state"]["scheduler"])
    torch.set_rng_state(ck["rng"]["torch"])
    state = LoopState(**ck["state"]["loop"])
    best = ck["best_weights"]
    if best is None and state.best_step == state.step:
        best = snapshot(params)
    console.info(f"Resuming from {found.name} (step {state.step} of {total_steps}).")
    if main:
        trim_metrics(metrics_path, state.step)
    return state, best
