"""The training loop: one visible function, plain PyTorch.

Per optimizer step: run every micro-batch of the step, each contributing (sum of token losses) / (trained
tokens in the whole step), so accumulation is exact; clip; step AdamW and the schedule; log a line to
metrics.jsonl. Every ``eval_every`` steps: validation loss and early stopping. Every ``save_every``
steps: an atomic checkpoint holding all a resume needs (weights, optimizer, schedule, RNG, position).

With several processes (see distributed.py), an ``Engine`` deals each step's rows to the ranks, runs the
forward through DDP or FSDP2, and sums what every rank measured; the loop itself reads the same.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tunesmith import console
from tunesmith.config import TrainSettings
from tunesmith.data.render import Rendered
from tunesmith.errors import UserError
from tunesmith.runs import write_text_atomic
from tunesmith.train import signals
from tunesmith.train.batches import StepPlan, collate, to_batch
from tunesmith.train.distributed import Engine
from tunesmith.train.optim import make_optimizer

MAX_BAD_STEPS = 5  # consecutive non-finite steps before giving up


@dataclass
class LoopState:
    step: int = 0
    best_val: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    bad_steps_in_row: int = 0
    skipped_steps: int = 0
    elapsed_s: float = 0.0
    tokens: int = 0
    trained_tokens: int = 0
    stopped_early: bool = False
    last_val: float | None = None
    last_loss: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)  # validation points


def autocast(bf16: bool) -> contextlib.AbstractContextManager[Any]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


@torch.no_grad()
def evaluate_with_accuracy(
    model: Any, data: list[Rendered], micro: int, pad_id: int, bf16: bool, engine: Engine | None = None
) -> tuple[float, float]:
    """(mean loss per trained token, share of trained tokens the argmax predicts) over a whole dataset.
    With several processes each evaluates its share of the micro-batches and the sums are added up."""
    engine = engine or Engine(model)
    was_training = model.training
    model.eval()
    order = sorted(range(len(data)), key=lambda i: len(data[i].input_ids))
    starts = list(range(0, len(order), micro))
    mine, rounds = engine.eval_shard(len(starts))
    total, count, right = 0.0, 0, 0
    for k in range(rounds):
        # A rank with one micro-batch fewer repeats the first one and ignores it (FSDP2 needs every rank
        # to take part in every forward).
        start = starts[mine[k]] if k < len(mine) else starts[0]
        batch = collate([data[i] for i in order[start : start + micro]], pad_id)
        with autocast(bf16):
            loss, n, correct = engine.forward(batch)
        if k < len(mine):
            total += float(loss)
            count += n
            right += correct
    total, count, right = engine.all_sum(total, count, right)
    model.train(was_training)
    return total / max(1, count), right / max(1, count)


def evaluate(model: Any, data: list[Rendered], micro: int, pad_id: int, bf16: bool) -> float:
    """Mean loss per trained token over a whole dataset (micro-batched, length-sorted)."""
    return evaluate_with_accuracy(model, data, micro, pad_id, bf16)[0]


def accumulate_gradients(
    model: Any,
    micro_batches: list[list[list[Rendered]]],
    pad_id: int,
    bf16: bool,
    *,
    engine: Engine | None = None,
    n_trained: int | None = None,
    live: int | None = None,
) -> tuple[float, int]:
    """Backward over every micro-batch (a list of rows of examples) of one optimizer step; returns the
    summed token loss and how many trained tokens the argmax predicted.

    Each micro-batch's summed loss is divided by the trained tokens of the *whole step*, so the
    accumulated gradient equals that of one big batch however the step is cut (8x1 == 2x4). With several
    processes, ``micro_batches`` are this rank's share, ``n_trained`` counts the whole step on every rank,
    and micro-batches from index ``live`` on are placeholders with weight 0 (see distributed.py)."""
    engine = engine or Engine(model)
    if n_trained is None:
        n_trained = sum(e.n_trained for mb in micro_batches for row in mb for e in row)
    live = len(micro_batches) if live is None else live
    total, right = 0.0, 0
    for k, mb in enumerate(micro_batches):
        with engine.sync(last=k == len(micro_batches) - 1):
            with autocast(bf16):
                loss_sum, _, correct = engine.forward(to_batch(mb, pad_id))
            (loss_sum * (engine.grad_scale if k < live else 0.0) / n_trained).backward()
        if k < live:
            total += float(loss_sum.detach())
            right += correct
    return total, right


def _trainable(model: Any) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _snapshot(params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in params.items()}


def _restore(params: dict[str, torch.nn.Parameter], weights: dict[str, torch.Tensor]) -> None:
    missing = set(params) - set(weights)
    if missing:
        raise UserError(f"the checkpoint does not match this model ({len(missing)} tensors missing)")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name])


def _trim_metrics(path: Path, upto_step: int) -> None:
    """On resume, drop metric lines written after the checkpoint we resume from (and a line torn in half
    by a kill), so the log continues without gaps or repeats."""
    if not path.is_file():
        return
    keep = []
    for ln in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            if json.loads(ln)["step"] <= upto_step:
                keep.append(ln)
        except (ValueError, KeyError, TypeError):
            continue
    write_text_atomic(path, "".join(ln + "\n" for ln in keep))


def train(
    model: Any,
    train_data: list[Rendered],
    val_data: list[Rendered],
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
) -> LoopState:
    """Train ``model`` in place. ``stop_after`` ends the loop early (as a crash would), for tests."""
    engine = engine or Engine(model)
    main = engine.is_main  # rank 0 alone writes metrics and shows progress
    params = _trainable(model)
    optimizer, scheduler = make_optimizer(
        list(params.values()),
        settings.learning_rate or 0.0,
        settings.weight_decay,
        total_steps,
        warmup_steps,
        settings.min_lr_ratio,
    )
    state, best_weights = LoopState(), None
    metrics_path = run_dir / "metrics.jsonl"
    checkpoints = run_dir / "checkpoints"
    if resume and (found := engine.latest_checkpoint(checkpoints)) is not None:
        ck = engine.load_checkpoint(found, params, optimizer)
        if ck["weights"] is not None:  # (a sharded checkpoint was loaded in place)
            _restore(params, ck["weights"])
            optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["state"]["scheduler"])
        torch.set_rng_state(ck["rng"]["torch"])
        state = LoopState(**ck["state"]["loop"])
        best_weights = (
            ck["best_weights"]
            if ck["best_weights"] is not None
            else (_snapshot(params) if state.best_step == state.step else None)
        )
        console.info(f"Resuming from {found.name} (step {state.step} of {total_steps}).")
        if main:
            _trim_metrics(metrics_path, state.step)
    elif resume:
        console.info("No checkpoint was saved yet: starting from step 0.")
        if main:
            _trim_metrics(metrics_path, 0)
    elif main:
        metrics_path.unlink(missing_ok=True)

    def checkpoint() -> None:
        engine.save_checkpoint(
            checkpoints,
            state.step,
            weights={n: p for n, p in params.items()},
            best_weights=best_weights if state.best_step != state.step else None,
            optimizer=optimizer,
            state={"loop": asdict(state), "scheduler": scheduler.state_dict()},
            keep=settings.keep_checkpoints,
        )

    model.train()
    micro = settings.micro_batch_size or 1
    columns = [
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("val {task.fields[val]}"),
        TextColumn("{task.fields[tps]} tok/s"),
        TimeRemainingColumn(),
    ]
    show = console.is_interactive()
    lengths = [len(e.input_ids) for e in train_data]
    with (
        Progress(*columns, console=console.console, disable=not show, transient=False) as bar,
        open(metrics_path if main else os.devnull, "a", encoding="utf-8") as log,
    ):
        task = bar.add_task("train", total=total_steps, completed=state.step, loss="-", val="-", tps="-")
        while state.step < total_steps and not state.stopped_early:
            if stop_after is not None and state.step >= stop_after:
                break
            step_plan = plan[state.step]
            examples = [train_data[i] for i in step_plan.indices]
            n_trained = sum(e.n_trained for e in examples)
            n_tokens = sum(len(e.input_ids) for e in examples)
            t0 = time.perf_counter()
            mine, live = engine.shard(step_plan.micro_batches, lengths)
            micro_batches = [[[train_data[i] for i in row] for row in mb] for mb in mine]
            loss_total, correct = accumulate_gradients(
                model, micro_batches, pad_id, bf16, engine=engine, n_trained=n_trained, live=live
            )
            padded = sum(len(mb) * max(sum(len(e.input_ids) for e in r) for r in mb) for mb in micro_batches[:live])
            loss_total, correct, padded = engine.all_sum(loss_total, correct, padded)
            grad_norm = engine.clip_grad_norm(list(params.values()), settings.max_grad_norm)
            if math.isfinite(grad_norm) and math.isfinite(loss_total):
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
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            dt = time.perf_counter() - t0
            state.step += 1
            state.elapsed_s += dt
            state.tokens += n_tokens
            state.trained_tokens += n_trained
            state.last_loss = loss_total / max(1, n_trained)
            record = {
                "step": state.step,
                "epoch": step_plan.epoch + 1,
                "loss": round(state.last_loss, 6),
                "lr": lr,
                "grad_norm": round(grad_norm, 6),
                "tokens": n_tokens,
                "trained_tokens": n_trained,
                "padded_tokens": int(padded),
                "token_accuracy": round(correct / max(1, n_trained), 6),
                "tokens_per_s": round(n_tokens / dt, 1),
                "mfu": round(n_tokens / dt * flops_per_token / peak_flops, 4) if peak_flops else None,
                "elapsed_s": round(state.elapsed_s, 3),
            }
            log.write(json.dumps(record) + "\n")
            if (
                val_data
                and settings.eval_every
                and (state.step % settings.eval_every == 0 or state.step == total_steps)
            ):
                state.last_val, val_accuracy = evaluate_with_accuracy(model, val_data, micro, pad_id, bf16, engine)
                state.history.append({"step": state.step, "val_loss": state.last_val})
                val_line = {
                    "step": state.step,
                    "val_loss": round(state.last_val, 6),
                    "val_token_accuracy": round(val_accuracy, 6),
                }
                log.write(json.dumps(val_line) + "\n")
                if state.best_val is None or state.last_val < state.best_val:
                    state.best_val, state.best_step, state.bad_evals = state.last_val, state.step, 0
                    best_weights = _snapshot(params)
                else:
                    state.bad_evals += 1
                    patience = settings.early_stopping_patience
                    if patience is not None and state.bad_evals >= patience:
                        state.stopped_early = True
                if not show:
                    console.info(
                        f"step {state.step}/{total_steps}  loss {state.last_loss:.4f}  "
                        f"val {state.last_val:.4f}  {n_tokens / dt:.0f} tok/s"
                    )
            log.flush()
            bar.update(
                task,
                completed=state.step,
                loss=f"{state.last_loss:.4f}",
                tps=f"{n_tokens / dt:.0f}",
                val=f"{state.last_val:.4f}" if state.last_val is not None else "-",
            )
            # Every rank must agree to stop at the same step (torchrun signals each one separately, and a
            # sharded checkpoint needs them all), so the signal number is agreed on with a max.
            stop_signal = int(engine.all_max(signals.requested() or 0))
            if (
                state.step % (settings.save_every or total_steps) == 0
                or state.step == total_steps
                or state.stopped_early
                or stop_signal
            ):
                checkpoint()
            if stop_signal and state.step < total_steps and not state.stopped_early:
                raise signals.Interrupted(stop_signal, state.step, total_steps)
    if stop_after is None and best_weights is not None and state.best_step != state.step:
        # Keep the weights with the best validation loss, not the last ones.
        _restore(params, best_weights)
    return state
