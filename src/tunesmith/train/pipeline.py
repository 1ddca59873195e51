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
from tunesmith.data.check_report import CheckReport
from tunesmith.data.formats import Conversation, metadata_warning, read_examples, require_clean, split_examples
from tunesmith.data.render import TOOL_FORMATS, Renderer, RenderStats, template_hash
from tunesmith.errors import UserError
from tunesmith.models.load import load_model
from tunesmith.models.stops import stop_token_ids
from tunesmith.train import distributed, rft_setup, rundir
from tunesmith.train.batches import fixed_sample, plan_steps
from tunesmith.train.chat_replay import base_answers_if_replayed, replay_setup
from tunesmith.train.general import general_setup, mix_replay, probe_record
from tunesmith.train.loop import LoopState, train
from tunesmith.train.objectives import check_objective, choose_objective, get_objective
from tunesmith.train.objectives.dpo import render_pairs
from tunesmith.train.perf import flops_per_token, peak_flops
from tunesmith.train.setup import Prepared, prepare
from tunesmith.train.startup import Stopwatch
from tunesmith.train.trackers import check_trackers, make_trackers

AUTO_VAL_FRACTION, AUTO_VAL_MIN_ROWS, AUTO_VAL_MAX_ROWS = 0.1, 100, 200


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
        prompts = _Data(*rft_setup.read_data(cfg, grader))
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
    rft: tuple[Any, _Data] | None,
) -> TrainResult:
    """``run_training``'s body; ``rft``: an RFT run's grader and prompts (which the dataset check does not read)."""
    grader = rft[0] if rft is not None else None
    check_trackers(cfg.train.report_to)  # a missing tracker package stops the run before anything is spent
    # With several processes, rank 0 alone checks the data and owns the run folder (a failure there stops
    # every rank: torchrun ends the job when one process exits).
    main = distributed.is_main()
    clock = Stopwatch()
    checked = None
    if not skip_check and main:
        # The dataset doctor runs before the run folder is touched or any compute is spent.
        from tunesmith.train.preflight import refuse_on_errors

        checked = refuse_on_errors(cfg)
        clock.mark("data check")
    if main:
        rundir.prepare_run_dir(out, cfg, resume=resume, force=force)
    torch.manual_seed(cfg.train.seed)
    t_start = time.time()

    data = rft[1] if rft is not None else _read_data(cfg, checked)
    if rft is None:
        _add_docs_context(cfg, data)
    cfg = _pack_documents(cfg, data)
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
    rows = _render(cfg, data, tokenizer, stop_token_ids(model, tokenizer), checked, kind=objective)
    clock.mark("rendering")
    # Before set-up may compile the layers: the base model's answers for chat replay (cached per model).
    answers = base_answers_if_replayed(cfg.train, objective, model, tokenizer, rundir.source_hash(source))
    clock.mark("chat replay answers")
    lengths = [len(r.input_ids) for r in rows.train]
    prep = prepare(cfg, model, lengths, val_lengths=[len(r.input_ids) for r in rows.val], compile=grader is None)
    rows.val = fixed_sample(rows.val, prep.resolved.val_rows, cfg.train.seed)
    cfg = cfg.model_copy(update={"train": prep.settings})
    inputs = {"train_data": data.train_hash, "val_data": data.val_hash, "model": rundir.source_hash(source)}
    if main:
        rundir.record_start(out, cfg, inputs, resume=resume, force=force)
    s = prep.settings
    general, general_reasons = general_setup(s, tokenizer, prep.bf16, validates=bool(rows.val) and bool(s.eval_every))
    replay, replay_reasons = replay_setup(s, answers, tokenizer, rows.renderer)
    reasons = _choices(cfg, data, prep, rows, start) + general_reasons + replay_reasons
    _print_plan(cfg, source.name, rows, prep, reasons)

    plan = plan_steps(
        lengths, s.batch_size or 1, s.micro_batch_size or 1, s.epochs or 1, s.seed, pack=s.packing, pack_len=s.pack_len
    )
    train_rows = rows.train
    if replay is not None:  # general rows join every step (train/general.py); rebuilt the same on resume
        plan, replayed = mix_replay(
            plan, rows.train, replay, s.replay, s.micro_batch_size or 1, pack=s.packing,
            pack_len=s.pack_len,
        )  # fmt: skip
        train_rows = rows.train + replayed
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


# ---- data: read (or taken from the check), split, rendered ------------------------------------------------


@dataclass
class _Data:
    train: list[Conversation]
    val: list[Conversation]
    train_hash: str
    val_hash: str | None
    reasons: list[str]
    pairs: bool = False  # the files hold preference pairs


def _read_data(cfg: RunConfig, checked: CheckReport | None) -> _Data:
    """The training and validation rows, as the check parsed them when it ran; an automatic split when no
    validation file is given."""
    parsed = checked.parsed if checked is not None else {}
    columns = cfg.data.columns
    train_file = require_clean(parsed["train"]) if "train" in parsed else read_examples(cfg.data.train, columns=columns)
    if checked is None and (warning := metadata_warning(train_file)):  # (the check says it otherwise)
        console.warn(warning)
    examples, reasons, pairs = train_file.examples, [], train_file.format == "preference"
    if cfg.data.val is not None:
        val_file = require_clean(parsed["val"]) if "val" in parsed else read_examples(cfg.data.val, columns=columns)
        if (val_file.format == "preference") != pairs:
            kinds = ("preference pairs", "supervised rows") if pairs else ("supervised rows", "preference pairs")
            raise UserError(f"{cfg.data.val} holds {kinds[1]} but {cfg.data.train} holds {kinds[0]}: give both alike")
        return _Data(examples, val_file.examples, train_file.sha256, val_file.sha256, reasons, pairs)
    frac = cfg.data.val_split
    if frac is None:
        frac = AUTO_VAL_FRACTION if len(examples) >= AUTO_VAL_MIN_ROWS else 0.0
        if frac:
            frac = min(frac, AUTO_VAL_MAX_ROWS / len(examples))
            reasons.append(f"validation: held out {frac:.0%} of the rows (seeded), no --val given")
    examples, val_examples = split_examples(examples, frac, cfg.train.seed)
    return _Data(examples, val_examples, train_file.sha256, None, reasons, pairs)


def _add_docs_context(cfg: RunConfig, data: _Data) -> None:
    """With --docs, training and validation prompts carry their nearest doc chunks (data/context.py)."""
    if cfg.data.docs is None:
        return
    from tunesmith.data.context import add_docs_context
    from tunesmith.decide.retrieval import DocsIndex

    index = DocsIndex(cfg.data.docs)
    data.train, line = add_docs_context(
        data.train, index, cfg.data.docs_k, cfg.data.stale_rows, shuffle_seed=cfg.train.seed
    )  # validation keeps the ranked order inference uses
    data.val, _ = add_docs_context(data.val, index, cfg.data.docs_k, cfg.data.stale_rows)
    data.reasons.append(line)


def _pack_documents(cfg: RunConfig, data: _Data) -> RunConfig:
    """Text rows are continued pretraining: documents are packed into rows of max_len tokens (the longer ones
    were cut into max_len pieces), not into rows as long as a step's longest document."""
    if not data.train or not getattr(data.train[0], "text_only", False) or not cfg.train.packing or cfg.train.pack_len:
        return cfg
    n = cfg.data.max_len
    data.reasons.append(f"text rows: every token trained, documents packed into rows of {n} tokens (max_len)")
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"pack_len": n})})


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


def _choose_objective(cfg: RunConfig, override: str | None, data: _Data) -> tuple[RunConfig, str]:
    """(the config with its objective resolved, the objective's name): DPO for preference pairs, SFT for
    everything else, unless the config or the caller names one."""
    name = choose_objective(override or cfg.train.objective, data.pairs, cfg.data.train)
    if name not in ("sft", "dpo", "rft"):
        return cfg, name  # a library objective: the config keeps its own field as it was
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"objective": name})}), name


@dataclass
class _Rows:
    renderer: Renderer
    train: list[Any]  # Rendered rows, or PreferencePairs for DPO
    stats: RenderStats
    val: list[Any]
    val_stats: RenderStats


def _render(
    cfg: RunConfig, data: _Data, tokenizer: Any, stops: list[int], checked: CheckReport | None, kind: str = "sft"
) -> _Rows:
    renderer = Renderer(
        tokenizer,
        max_len=cfg.data.max_len,
        overlong=cfg.data.overlong,
        train_on=cfg.data.train_on,
        stop_token_ids=stops,
    )
    if checked is not None and checked.renderer is not None:
        renderer.adopt_renderings(checked.renderer)  # the check rendered every row already
    render = {"dpo": functools.partial(render_pairs, renderer), "rft": functools.partial(rft_setup.render, renderer)}
    render = render.get(kind, renderer.render_all)
    train_rows, stats = render(data.train)
    val_rows, val_stats = render(data.val)
    if not train_rows:
        raise UserError(
            f"no training rows left: all {stats.examples} were longer than max_len {cfg.data.max_len} "
            "(raise --max-len or use overlong: truncate)"
        )
    return _Rows(renderer, train_rows, stats, val_rows, val_stats)


# ---- what the run says: the plan before, run.json after ---------------------------------------------------


def _summary(
    cfg: RunConfig,
    weights_dir: Path,
    loop: LoopState,
    prep: Prepared,
    rows: _Rows,
    data: _Data,
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


def _choices(cfg: RunConfig, data: _Data, prep: Prepared, rows: _Rows, start: runs.RunInfo | None) -> list[str]:
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


def _print_plan(cfg: RunConfig, model_name: str, rows: _Rows, prep: Prepared, reasons: list[str]) -> None:
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
