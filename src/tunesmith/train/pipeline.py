"""`tunesmith train` as a library call: config in, finished run folder out.

read data -> split -> load model -> render + round-trip guard -> choose hyperparameters -> LoRA or full
-> train() -> save weights + tokenizer -> run.json (written last: its presence marks a finished run).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunesmith import __version__, console, runs
from tunesmith.config import RunConfig
from tunesmith.data.formats import read_examples, split_examples
from tunesmith.data.render import Renderer, RenderStats, template_hash
from tunesmith.errors import UserError
from tunesmith.models.load import load_model
from tunesmith.train import auto, distributed
from tunesmith.train.batches import plan_steps
from tunesmith.train.loop import LoopState, train
from tunesmith.train.perf import flops_per_token, measure_peak_flops
from tunesmith.train.setup import choose_compile, choose_precision, compile_layers, prepare_model

AUTO_VAL_FRACTION, AUTO_VAL_MIN_ROWS, AUTO_VAL_MAX_ROWS = 0.1, 100, 200


@dataclass
class TrainResult:
    run_dir: Path
    config: RunConfig
    loop: LoopState
    stats: dict[str, Any]
    reasons: list[str] = field(default_factory=list)
    summary: runs.RunInfo | None = None  # run.json's record; None until the run finished


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "tunesmith": __version__}
    for pkg in ("torch", "transformers", "peft", "safetensors", "tokenizers"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[pkg] = importlib.metadata.version(pkg)
    return out


def _model_hash(path: str) -> str:
    """SHA-256 over the weight files of a local model (or of the .gguf)."""
    p = Path(path)
    files = [p] if p.is_file() else sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin"))
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()[:16] if files else "remote"


def _source_hash(source: Any) -> str:
    return _model_hash(source.path) if source.kind != "hub" else source.path


def check_run_dir(out: Path, *, resume: bool, force: bool) -> None:
    """The user errors about the run folder, without touching it (the --nproc launcher asks first)."""
    if resume:
        if (out / runs.CONFIG_YAML).is_file():
            return
        if not out.is_dir() or _leftovers(out, remove=False):
            raise UserError(f"nothing to resume in {out}: no run was started there")
        return
    if not force and out.exists() and any(out.iterdir()):
        what = "a finished run" if runs.is_run(out) else "files from an earlier, unfinished run"
        raise UserError(f"{out} already holds {what}; pass --resume to continue it, --force to replace it")


def _prepare_run_dir(out: Path, cfg: RunConfig, *, resume: bool, force: bool) -> None:
    check_run_dir(out, resume=resume, force=force)
    if resume:
        if (out / runs.CONFIG_YAML).is_file():
            return
        # The folder exists but the run was stopped before it wrote its config: nothing to lose, start over.
        _leftovers(out)
        console.note(f"nothing was saved in {out} yet; starting the run from the beginning")
    elif out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _leftovers(out: Path, remove: bool = True) -> list[Path]:
    """What a folder holds besides what a run writes before its config (inputs.json, and the temporary
    files of an atomic write that a kill interrupted, which are removed here unless ``remove`` is off)."""
    kept = []
    for p in out.iterdir():
        if p.name.startswith(runs.TEMP_PREFIXES) and p.is_file():
            if remove:
                p.unlink(missing_ok=True)
        elif p.name != runs.INPUTS_JSON:
            kept.append(p)
    return kept


def _check_resume(out: Path, cfg: RunConfig, inputs: dict[str, str | None], force: bool) -> None:
    """A run folder is never continued with other settings, data or model unless the user says --force."""
    from tunesmith.config import load_config

    saved = load_config(out / runs.CONFIG_YAML)
    differs = ["settings"] if saved.model_dump() != cfg.model_dump() else []
    try:
        before = json.loads((out / runs.INPUTS_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        before = {}  # a run from before inputs.json was written: only the config can be compared
    names = {"train_data": "training data", "val_data": "validation data", "model": "model weights"}
    differs += [names[k] for k in names if k in before and before[k] != inputs[k]]
    if differs and not force:
        raise UserError(
            f"{out} was started with other {' and '.join(differs)} (see its {runs.CONFIG_YAML} and "
            f"{runs.INPUTS_JSON}); resume with the same ones, or pass --force to continue anyway"
        )


def run_training(
    cfg: RunConfig,
    out: Path,
    *,
    resume: bool = False,
    force: bool = False,
    stop_after: int | None = None,
    skip_check: bool = False,
) -> TrainResult:
    out = Path(out)
    if cfg.data.train is None:
        raise UserError("no training data: pass --data FILE.jsonl")
    # With several processes, rank 0 alone checks the data and owns the run folder (a failure there stops
    # every rank: torchrun ends the job when one process exits).
    main = distributed.is_main()
    if not skip_check and main:
        # The dataset doctor runs before the run folder is touched or any compute is spent.
        from tunesmith.train.preflight import refuse_on_errors

        refuse_on_errors(cfg)
    if main:
        _prepare_run_dir(out, cfg, resume=resume, force=force)
    torch.manual_seed(cfg.train.seed)
    t_start = time.time()

    # ---- data ---------------------------------------------------------------------------------------
    parsed = read_examples(cfg.data.train)
    examples, val_examples, reasons = parsed.examples, [], []
    val_hash = None
    if cfg.data.val is not None:
        val_parsed = read_examples(cfg.data.val)
        val_examples, val_hash = val_parsed.examples, val_parsed.sha256
    else:
        frac = cfg.data.val_split
        if frac is None:
            frac = AUTO_VAL_FRACTION if len(examples) >= AUTO_VAL_MIN_ROWS else 0.0
            if frac:
                frac = min(frac, AUTO_VAL_MAX_ROWS / len(examples))
                reasons.append(f"validation: held out {frac:.0%} of the rows (seeded), no --val given")
        examples, val_examples = split_examples(examples, frac, cfg.train.seed)

    # ---- model + rendering --------------------------------------------------------------------------
    model, tokenizer, source = load_model(cfg.model.name, trust_remote_code=cfg.model.trust_remote_code)
    gen_eos = model.generation_config.eos_token_id
    stops = [gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [])
    renderer = Renderer(
        tokenizer,
        max_len=cfg.data.max_len,
        overlong=cfg.data.overlong,
        train_on=cfg.data.train_on,
        stop_token_ids=stops,
    )
    train_data, stats = renderer.render_all(examples)
    val_data, val_stats = renderer.render_all(val_examples)
    if not train_data:
        raise UserError(
            f"no training rows left: all {stats.examples} were longer than max_len {cfg.data.max_len} "
            "(raise --max-len or use overlong: truncate)"
        )
    lengths = [len(r.input_ids) for r in train_data]
    p95 = sorted(lengths)[int(0.95 * (len(lengths) - 1))]

    # ---- hyperparameters ----------------------------------------------------------------------------
    resolved = auto.resolve(cfg.train, len(train_data), p95, has_val=bool(val_data))
    reasons += resolved.reasons
    cfg = cfg.model_copy(update={"train": resolved.settings})
    inputs = {"train_data": parsed.sha256, "val_data": val_hash, "model": _source_hash(source)}
    if main:
        if resume and (out / runs.CONFIG_YAML).is_file():
            _check_resume(out, cfg, inputs, force)
        # inputs.json first: config.yaml is what marks a folder as a started run.
        runs.write_text_atomic(out / runs.INPUTS_JSON, json.dumps(inputs, indent=1))
        runs.write_text_atomic(out / runs.CONFIG_YAML, cfg.to_yaml())
    bf16, why = choose_precision(cfg.train.precision, cfg.train.method)
    reasons.append(why)

    # ---- method: one branch, then the same loop -----------------------------------------------------
    model = prepare_model(model, cfg.train.method, cfg.lora, bf16)
    if cfg.train.gradient_checkpointing:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        reasons.append("gradient checkpointing: on (activations recomputed in the backward pass)")
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())
    use_compile, why = choose_compile(cfg.train.compile, resolved.total_steps, n_total)
    if use_compile:
        compile_layers(model)
    reasons.append(why)
    if distributed.active():
        reasons.append(distributed.describe())
    _print_plan(cfg, source.name, stats, val_stats, resolved, reasons, n_trainable, n_total)

    plan = plan_steps(
        lengths,
        resolved.settings.batch_size or 1,
        resolved.settings.micro_batch_size or 1,
        resolved.settings.epochs or 1,
        cfg.train.seed,
        pack=cfg.train.packing,
        pack_len=cfg.train.pack_len,
    )
    # Each process measures its own share of the machine (its threads, its GPU); tokens/s counts them all.
    peak = measure_peak_flops(torch.bfloat16 if bf16 else torch.float32) * distributed.world()
    fpt = flops_per_token(model, sum(lengths) / len(lengths))
    # Moves the model to this process's device; with peers, wraps it in DDP (LoRA) or shards it (full).
    engine = distributed.make_engine(model, cfg.train.method, bf16)
    console.note(
        f"MFU is measured against this machine's {'bf16' if bf16 else 'fp32'} GEMM peak: {peak / 1e12:.2f} TFLOP/s"
    )
    loop_started = time.perf_counter()
    loop = train(
        model,
        train_data,
        val_data,
        plan,
        resolved.settings,
        total_steps=resolved.total_steps,
        warmup_steps=resolved.warmup_steps,
        pad_id=tokenizer.pad_token_id,
        run_dir=out,
        bf16=bf16,
        resume=resume,
        stop_after=stop_after,
        flops_per_token=fpt,
        peak_flops=peak,
        engine=engine,
    )
    if stop_after is not None and loop.step < resolved.total_steps:
        return TrainResult(out, cfg, loop, stats.as_dict(), reasons)

    # ---- artifacts, then run.json last --------------------------------------------------------------
    weights_dir = out / (runs.ADAPTER_DIR if cfg.train.method == "lora" else runs.MODEL_DIR)
    engine.save_pretrained(weights_dir)  # FSDP2: gathers the full weights to rank 0 (every rank takes part)
    if not main:
        return TrainResult(out, cfg, loop, stats.as_dict(), reasons)
    tokenizer.save_pretrained(weights_dir)
    summary = {
        "status": "completed",
        "method": cfg.train.method,
        "base_model": cfg.model.name,
        "weights_dir": weights_dir.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_time_s": round(time.time() - t_start, 1),
        "train_time_s": round(loop.elapsed_s, 1),
        "loop_wall_s": round(time.perf_counter() - loop_started, 1),
        "steps": loop.step,
        "total_steps": resolved.total_steps,
        "stopped_early": loop.stopped_early,
        "best_val_loss": loop.best_val,
        "best_step": loop.best_step,
        "final_train_loss": loop.last_loss,
        "skipped_steps": loop.skipped_steps,
        "tokens_seen": loop.tokens,
        "trained_tokens_seen": loop.trained_tokens,
        "tokens_per_s": round(loop.tokens / loop.elapsed_s, 1) if loop.elapsed_s else None,
        "mfu": round(loop.tokens / loop.elapsed_s * fpt / peak, 4) if loop.elapsed_s and peak else None,
        "peak_flops": {"value": peak, "dtype": "bf16" if bf16 else "fp32", "source": "GEMM probe at start-up"},
        "trainable_params": n_trainable,
        "total_params": n_total,
        "precision": "bf16-autocast" if bf16 else "fp32",
        "choices": reasons,
        "counts": {
            "train": stats.as_dict(),
            "val": val_stats.as_dict(),
            "dropped_rows": stats.dropped_sources[:50],
        },
        "hashes": {
            "train_data": parsed.sha256,
            "val_data": val_hash,
            "model": inputs["model"],
            "chat_template": template_hash(tokenizer),
            "masking": hashlib.sha256(
                json.dumps(
                    {
                        "train_on": cfg.data.train_on,
                        "max_len": cfg.data.max_len,
                        "overlong": cfg.data.overlong,
                        "stops": sorted(renderer.stop_ids),
                    }
                ).encode()
            ).hexdigest()[:16],
        },
        "versions": _versions(),
    }
    info = runs.RunInfo.from_dict(summary)
    runs.write_run(out, info)
    return TrainResult(out, cfg, loop, stats.as_dict(), reasons, info)


def _print_plan(
    cfg: RunConfig,
    model_name: str,
    stats: RenderStats,
    val_stats: RenderStats,
    resolved: auto.Resolved,
    reasons: list[str],
    n_trainable: int,
    n_total: int,
) -> None:
    s = resolved.settings
    console.info(
        f"[bold]tunesmith train[/bold]  model {model_name}  method {s.method}  "
        f"trainable {n_trainable / 1e6:.2f}M of {n_total / 1e6:.1f}M params"
    )
    console.info(
        f"data: {stats.kept} train rows ({stats.trained_tokens} trained of {stats.tokens} tokens), "
        f"{val_stats.kept} validation rows; dropped {stats.dropped_overlong} overlong, "
        f"truncated {stats.truncated}"
    )
    console.info(
        f"plan: {s.epochs} epochs x {resolved.steps_per_epoch} steps = {resolved.total_steps} steps, "
        f"batch {s.batch_size} (micro {s.micro_batch_size}), lr {s.learning_rate:g}, "
        f"warmup {resolved.warmup_steps}, cosine to {s.min_lr_ratio:g}x"
    )
    for why in reasons:
        console.note(why)
    if stats.dropped_overlong:
        console.warn(f"{stats.dropped_overlong} rows longer than max_len {cfg.data.max_len} were dropped")
