"""`tunesmith train` as a library call: config in, finished run folder out.

check the data (parsed and rendered once) -> run folder -> load model -> render -> prepare (hyperparameters,
precision, LoRA or full) -> engine -> train() -> save weights + tokenizer -> run.json (written last: its
presence marks a finished run).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunesmith import console, runs
from tunesmith.config import RunConfig
from tunesmith.data.chat_templates import template_name
from tunesmith.data.render import TOOL_FORMATS, template_hash
from tunesmith.errors import UserError
from tunesmith.models.load import load_model
from tunesmith.models.stops import stop_token_ids
from tunesmith.train import data_prep, distributed, rft_setup, rundir
from tunesmith.train.batches import fixed_sample, plan_steps
from tunesmith.train.chat_replay import BaseChat, base_answers_if_used, replay_setup
from tunesmith.train.general import general_setup, mix_replay, probe_cost, probe_record
from tunesmith.train.loop import LoopState, train
from tunesmith.train.objectives import check_objective, choose_objective, get_objective
from tunesmith.train.perf import flops_per_token, peak_flops
from tunesmith.train.setup import Prepared, prepare
from tunesmith.train.startup import Stopwatch
from tunesmith.train.trackers import check_trackers, make_trackers


@dataclass
class TrainResult:
    run_dir: Path
    config: RunConfig
    loop: LoopState
    stats: dict[str, Any]
    reasons: list[str] = field(default_factory=list)
    summary: runs.RunInfo | None = None  # run.json's record; None until the run finished


def run_training(
    cfg: RunConfig,
    out: Path,
    *,
    resume: bool = False,
    force: bool = False,
    stop_after: int | None = None,
    skip_check: bool = False,
    objective: str | None = None,
) -> TrainResult:
    """Train as ``cfg`` says, into the run folder ``out``. ``objective`` overrides the config's (a name from
    ``train.objectives.OBJECTIVES``, for objectives the config does not list)."""
    out = Path(out)
    if objective is not None:
        check_objective(objective)
    if cfg.data.train is None:
        raise UserError("no training data: pass --data FILE")
    if cfg.data.docs is not None and not Path(cfg.data.docs).is_dir():  # before the run folder is touched
        raise UserError(f"--docs {cfg.data.docs} is not a folder (of .txt / .md files with the current facts)")
    if (objective or cfg.train.objective) != "rft":
        return _run_training(cfg, out, resume, force, stop_after, skip_check, objective, None)
    # A bad grader, or prompts it cannot grade, stop the run before the run folder is touched.
    grader = rft_setup.load_run_grader(cfg)
    try:
        prompts = data_prep.RunData(*rft_setup.read_data(cfg, grader))
        return _run_training(cfg, out, resume, force, stop_after, True, objective, (grader, prompts))
    finally:
        grader.close()


def _run_training(
    cfg: RunConfig,
    out: Path,
    resume: bool,
    force: bool,
    stop_after: int | None,
    skip_check: bool,
    objective: str | None,
    rft: tuple[Any, data_prep.RunData] | None,
) -> TrainResult:
    """``run_training``'s body; ``rft``: an RFT run's grader and prompts (which the dataset check does not read)."""
    grader = rft[0] if rft is not None else None
    check_trackers(cfg.train.report_to)  # a missing tracker package stops the run before anything is spent
    # With several processes, rank 0 alone checks the data and owns the run folder (a failure there stops
    # every rank: torchrun ends the job when one process exits).
    main = distributed.is_main()
    clock = Stopwatch()
    t_start = time.time()  # wall_time_s is the whole call, the data check included (run.json's startup counts it)
    checked = None
    if not skip_check and main:
        # The dataset doctor runs before the run folder is touched or any compute is spent.
        from tunesmith.train.preflight import refuse_on_errors

        checked = refuse_on_errors(cfg)
        clock.mark("data check")
    if main:
        rundir.prepare_run_dir(out, cfg, resume=resume, force=force)
    torch.manual_seed(cfg.train.seed)

    data = rft[1] if rft is not None else data_prep.read_data(cfg, checked)
    if rft is None:
        data_prep.add_docs(cfg, data)
    cfg = data_prep.pack_documents(cfg, data)
    cfg, objective = _choose_objective(cfg, objective, data)
    start = _lora_run_to_continue(cfg)
    clock.mark("reading data")
    model, tokenizer, source = load_model(
        cfg.model.name,
        trust_remote_code=cfg.model.trust_remote_code,
        merge_adapter=start is None,
        chat_template=cfg.model.chat_template,
    )
    clock.mark("loading the model")
    rows = data_prep.render_rows(cfg, data, tokenizer, stop_token_ids(model, tokenizer), checked, kind=objective)
    clock.mark("rendering")
    model_key = rundir.source_hash(source)  # (hashes the weights of a local model: once)
    # Before set-up may compile the layers: the base model's answers for chat replay (cached per model).
    answers = base_answers_if_used(cfg.train, objective, model, tokenizer, model_key)
    clock.mark("chat replay answers")
    lengths = [len(r.input_ids) for r in rows.train]
    val_lengths = [len(r.input_ids) for r in rows.val]
    probe = probe_cost(cfg.train, tokenizer, bool(rows.val)) if objective != "rft" else 0
    prep = prepare(cfg, model, lengths, val_lengths=val_lengths, compile=grader is None, probe_tokens=probe)
    rows.val = fixed_sample(rows.val, prep.resolved.val_rows, cfg.train.seed)
    cfg = cfg.model_copy(update={"train": prep.settings})
    inputs = {"train_data": data.train_hash, "val_data": data.val_hash, "model": model_key}
    if main:
        rundir.record_start(out, cfg, inputs, resume=resume, force=force)
    s = prep.settings
    general, plan, train_rows, general_reasons = _steps_with_general(s, answers, tokenizer, prep.bf16, rows, lengths)
    if general.probe is not None:
        general.probe.last_only = prep.resolved.probe_last_only
    if general.probe is not None and start is None:
        general.probe.use_cache(model_key, s.method)
    reasons = _choices(cfg, data, prep, rows, start) + general_reasons
    _print_plan(cfg, source.name, rows, prep, reasons)
    clock.mark("set-up (LoRA, precision, compile)")
    peak, peak_source = _machine_peak(prep.bf16)
    clock.mark("GEMM peak")
    fpt = flops_per_token(prep.model, sum(lengths) / len(lengths))
    # Moves the model to this process's device; with peers, wraps it in DDP (LoRA) or shards it (full).
    engine = distributed.make_engine(prep.model, s.method, prep.bf16, get_objective(objective, s))
    if grader is not None:
        engine.objective.bind(grader, tokenizer, sorted(rows.renderer.stop_ids), s.micro_batch_size or 1, prep.bf16)
    # Before the loop (and a resume's checkpoint) changes the weights: DPO's reference log-probs.
    engine.objective.start(
        prep.model, rows.train + rows.val, s.micro_batch_size or 1, tokenizer.pad_token_id, prep.bf16
    )
    clock.mark("moving the model, references")
    console.note(clock.line())
    loop_started = time.perf_counter()
    loop = train(
        prep.model,
        train_rows,
        rows.val,
        plan,
        s,
        total_steps=prep.resolved.total_steps,
        warmup_steps=prep.resolved.warmup_steps,
        pad_id=tokenizer.pad_token_id,
        run_dir=out,
        bf16=prep.bf16,
        resume=resume,
        stop_after=stop_after,
        flops_per_token=fpt,
        peak_flops=peak,
        engine=engine,
        open_trackers=functools.partial(make_trackers, s.report_to, out, cfg) if s.report_to else None,
        general=general,
    )
    result = TrainResult(out, cfg, loop, rows.stats.as_dict(), reasons)
    if stop_after is not None and loop.step < prep.resolved.total_steps:
        return result

    # ---- artifacts, then run.json last ----
    weights_dir = out / (runs.ADAPTER_DIR if s.method == "lora" else runs.MODEL_DIR)
    engine.save_pretrained(weights_dir)  # FSDP2: gathers the full weights to rank 0 (every rank takes part)
    if not main:
        return result
    tokenizer.save_pretrained(weights_dir)
    timing = {"t_start": t_start, "loop_wall_s": time.perf_counter() - loop_started, "peak": peak, "fpt": fpt}
    timing |= {"peak_source": peak_source, "startup": clock.phases}
    result.summary = _summary(cfg, weights_dir, loop, prep, rows, data, inputs, tokenizer, reasons, timing, start)
    runs.write_run(out, result.summary)
    return result


def _steps_with_general(
    s: Any, answers: Any, tokenizer: Any, bf16: bool, rows: data_prep.RenderedRows, lengths: list[int]
) -> tuple[Any, list[Any], list[Any], list[str]]:
    """(the forgetting tools the loop runs, the step plan with any replay rows in it, the rows the plan indexes,
    their sentences). The plan is a pure function of these inputs, so a resumed run rebuilds the same steps."""
    chat = BaseChat.of(answers, rows.renderer)
    validates = bool(rows.val) and bool(s.eval_every)
    general, general_reasons = general_setup(s, tokenizer, bf16, validates=validates, chat=chat)
    replay, replay_reasons = replay_setup(s, chat, tokenizer)
    micro = s.micro_batch_size or 1
    plan = plan_steps(lengths, s.batch_size or 1, micro, s.epochs or 1, s.seed, pack=s.packing, pack_len=s.pack_len)
    if replay is None:
        return general, plan, rows.train, general_reasons + replay_reasons
    plan, replayed = mix_replay(plan, rows.train, replay, s.replay, micro, pack=s.packing, pack_len=s.pack_len)
    return general, plan, rows.train + replayed, general_reasons + replay_reasons


def _machine_peak(bf16: bool) -> tuple[float, str]:
    """The GEMM peak MFU is measured against. Each process measures its own share of the machine (its
    threads, its GPU); tokens/s counts them all."""
    peak, source = peak_flops(torch.bfloat16 if bf16 else torch.float32)
    peak *= distributed.world()
    console.note(
        f"MFU is measured against this machine's {'bf16' if bf16 else 'fp32'} GEMM peak: "
        f"{peak / 1e12:.2f} TFLOP/s ({source})"
    )
    return peak, source


# ---- what the run starts from, what it trains with (its data: data_prep.py) -------------------------------


def _lora_run_to_continue(cfg: RunConfig) -> runs.RunInfo | None:
    """The run record of ``--model`` when it is a LoRA run that a LoRA run continues (its adapter trains on)."""
    from tunesmith.models.load import resolve

    if cfg.train.method != "lora":
        return None
    source = resolve(cfg.model.name)
    if source.kind != "run":
        return None
    info = runs.read_run(Path(source.path))
    return info if info.method == "lora" else None


def _choose_objective(cfg: RunConfig, override: str | None, data: data_prep.RunData) -> tuple[RunConfig, str]:
    """(the config with its objective resolved, the objective's name): DPO for preference pairs, SFT for
    everything else, unless the config or the caller names one."""
    name = choose_objective(override or cfg.train.objective, data.pairs, cfg.data.train)
    if name not in ("sft", "dpo", "rft"):
        return cfg, name  # a library objective: the config keeps its own field as it was
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"objective": name})}), name


# ---- what the run says: the plan before, run.json after ---------------------------------------------------


def _summary(
    cfg: RunConfig,
    weights_dir: Path,
    loop: LoopState,
    prep: Prepared,
    rows: data_prep.RenderedRows,
    data: data_prep.RunData,
    inputs: dict[str, str | None],
    tokenizer: Any,
    reasons: list[str],
    timing: dict[str, Any],
    start: runs.RunInfo | None,
) -> runs.RunInfo:
    """run.json's record. A run that continued a LoRA run's adapter has that run's base as its base (the
    adapter applies to it) and says which run it started from."""
    peak, fpt = timing["peak"], timing["fpt"]
    masking = {
        "train_on": cfg.data.train_on,
        "max_len": cfg.data.max_len,
        "overlong": cfg.data.overlong,
        "stops": sorted(rows.renderer.stop_ids),
    }
    rate = loop.tokens / loop.elapsed_s if loop.elapsed_s else None
    return runs.RunInfo(
        method=cfg.train.method,
        base_model=start.base_model if start else cfg.model.name,
        started_from=cfg.model.name if start else None,
        weights_dir=weights_dir.name,
        wall_time_s=round(time.time() - timing["t_start"], 1),
        train_time_s=round(loop.elapsed_s, 1),
        loop_wall_s=round(timing["loop_wall_s"], 1),
        steps=loop.step,
        total_steps=prep.resolved.total_steps,
        stopped_early=loop.stopped_early,
        best_val_loss=loop.best_val,
        best_step=loop.best_step,
        final_train_loss=loop.last_loss,
        skipped_steps=loop.skipped_steps,
        tokens_seen=loop.tokens,
        trained_tokens_seen=loop.trained_tokens,
        tokens_per_s=round(rate, 1) if rate else None,
        mfu=round(rate * fpt / peak, 4) if rate and peak else None,
        peak_flops=runs.PeakFlops(value=peak, dtype="bf16" if prep.bf16 else "fp32", source=timing["peak_source"]),
        trainable_params=prep.n_trainable,
        total_params=prep.n_total,
        precision="bf16-autocast" if prep.bf16 else "fp32",
        choices=reasons,
        counts=runs.Counts(
            train=rows.stats.as_dict(), val=rows.val_stats.as_dict(), dropped_rows=rows.stats.dropped_sources[:50]
        ),
        hashes=runs.Hashes(
            train_data=data.train_hash,
            val_data=data.val_hash,
            model=inputs["model"],
            chat_template=template_hash(tokenizer),
            masking=hashlib.sha256(json.dumps(masking).encode()).hexdigest()[:16],
        ),
        versions=rundir.versions(),
        objective=cfg.train.objective or "sft",
        beta=cfg.train.beta,
        distributed=distributed.info(),
        startup=timing["startup"],
        chat_template=template_name(tokenizer),
        lora_coverage=prep.coverage,
        forgetting_probe=probe_record(loop, cfg.train.forgetting_budget) if cfg.train.forgetting_probe else None,
    )


def _choices(
    cfg: RunConfig, data: data_prep.RunData, prep: Prepared, rows: data_prep.RenderedRows, start: runs.RunInfo | None
) -> list[str]:
    """Every automatic choice of the run, one sentence each, in the order they were made."""
    spread = distributed.info()
    reasons = data.reasons + prep.reasons + ([spread.describe()] if spread else [])
    if start is not None:
        reasons.append(f"LoRA: continues the adapter of {cfg.model.name} (its r and alpha; base {start.base_model})")
    if template_name(rows.renderer.tokenizer) == "fallback":
        reasons.append("chat template: tunesmith's fallback (the model has none; --chat-template chooses another)")
    reasons += rows.renderer.notices
    if rows.stats.tool_rows:
        how = TOOL_FORMATS[rows.renderer.tool_format]
        reasons.append(f"tool calls: {rows.stats.tool_rows} rows use tools, rendered by {how}")
    return reasons


def _print_plan(
    cfg: RunConfig, model_name: str, rows: data_prep.RenderedRows, prep: Prepared, reasons: list[str]
) -> None:
    s, stats, val_stats = prep.settings, rows.stats, rows.val_stats
    console.info(
        f"[bold]tunesmith train[/bold]  model {model_name}  method {s.method}  "
        f"trainable {prep.n_trainable / 1e6:.2f}M of {prep.n_total / 1e6:.1f}M params"
    )
    console.info(
        f"data: {stats.kept} train rows ({stats.trained_tokens} trained of {stats.tokens} tokens), "
        f"{val_stats.kept} validation rows; dropped {stats.dropped_overlong} overlong, "
        f"truncated {stats.truncated}"
    )
    console.info(
        f"plan: {s.epochs} epochs x {prep.resolved.steps_per_epoch} steps = {prep.resolved.total_steps} steps, "
        f"batch {s.batch_size} (micro {s.micro_batch_size}), lr {s.learning_rate:g}, "
        f"warmup {prep.resolved.warmup_steps}, cosine to {s.min_lr_ratio:g}x"
    )
    for why in reasons:
        console.note(why)
    if stats.dropped_overlong:
        console.warn(f"{stats.dropped_overlong} rows longer than max_len {cfg.data.max_len} were dropped")
