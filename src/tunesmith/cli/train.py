"""`tunesmith train`: flags -> RunConfig -> run_training()."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

Opt = typer.Option


def _overrides(**flags: Any) -> dict[str, Any]:
    """CLI flags as a nested dict of only the settings the user actually gave."""
    where = {
        "model": ("model", "name"),
        "data": ("data", "train"),
        "val": ("data", "val"),
        "val_split": ("data", "val_split"),
        "max_len": ("data", "max_len"),
        "overlong": ("data", "overlong"),
        "train_on": ("data", "train_on"),
        "method": ("train", "method"),
        "epochs": ("train", "epochs"),
        "lr": ("train", "learning_rate"),
        "batch_size": ("train", "batch_size"),
        "micro_batch_size": ("train", "micro_batch_size"),
        "max_steps": ("train", "max_steps"),
        "eval_every": ("train", "eval_every"),
        "save_every": ("train", "save_every"),
        "seed": ("train", "seed"),
        "lora_r": ("lora", "r"),
        "lora_alpha": ("lora", "alpha"),
        "lora_dropout": ("lora", "dropout"),
        "packing": ("train", "packing"),
        "trust_remote_code": ("model", "trust_remote_code"),
        "compile": ("train", "compile"),
    }
    out: dict[str, Any] = {}
    for flag, value in flags.items():
        if value is None:
            continue
        section, key = where[flag]
        out.setdefault(section, {})[key] = str(value) if isinstance(value, Path) else value
    return out


def _launch(cfg: Any, out: Path, nproc: int, *, resume: bool, force: bool, skip_check: bool) -> int:
    """Check what can be checked once, then start ``nproc`` processes on the resolved config."""
    from tunesmith.errors import UserError
    from tunesmith.train import distributed
    from tunesmith.train.pipeline import check_run_dir

    if cfg.data.train is None:
        raise UserError("no training data: pass --data FILE.jsonl")
    check_run_dir(out, resume=resume, force=force)
    if not skip_check:
        from tunesmith.train.preflight import refuse_on_errors

        refuse_on_errors(cfg)
    args = ["--out", str(out), "--skip-check"] + ["--resume"] * resume + ["--force"] * force
    return distributed.launch(cfg.to_yaml(), args, nproc)


def _resume_command(out: Path, skip_check: bool, eval_data: Path | None, nproc: int) -> str:
    """The one command that continues this run: its saved config is exactly what --resume compares against."""
    import shlex

    args = ["tunesmith", "train", "--config", str(out / "config.yaml"), "--out", str(out), "--resume"]
    args += ["--nproc", str(nproc)] if nproc > 1 else []
    args += ["--skip-check"] if skip_check else []
    args += ["--eval-data", str(eval_data)] if eval_data is not None else []
    return shlex.join(args)


def train_command(
    out: Annotated[Path, Opt("--out", help="Run folder to write (runs/NAME).")],
    data: Annotated[Path | None, Opt("--data", help="Training JSONL.")] = None,
    val: Annotated[Path | None, Opt("--val", help="Validation JSONL.")] = None,
    val_split: Annotated[float | None, Opt("--val-split", help="Hold out this fraction instead.")] = None,
    method: Annotated[str | None, Opt("--method", help="lora (default) or full.")] = None,
    model: Annotated[str | None, Opt("--model", help="Alias, HF folder, .gguf file or hub id.")] = None,
    config: Annotated[Path | None, Opt("--config", help="YAML config; flags override it.")] = None,
    epochs: Annotated[int | None, Opt("--epochs")] = None,
    lr: Annotated[float | None, Opt("--lr", help="Peak learning rate.")] = None,
    batch_size: Annotated[int | None, Opt("--batch-size", help="Examples per optimizer step.")] = None,
    micro_batch_size: Annotated[int | None, Opt("--micro-batch-size", help="Examples per forward.")] = None,
    max_steps: Annotated[int | None, Opt("--max-steps")] = None,
    max_len: Annotated[int | None, Opt("--max-len", help="Longest sequence in tokens.")] = None,
    overlong: Annotated[str | None, Opt("--overlong", help="drop | truncate | error")] = None,
    train_on: Annotated[str | None, Opt("--train-on", help="all | last assistant turns")] = None,
    eval_every: Annotated[int | None, Opt("--eval-every")] = None,
    save_every: Annotated[int | None, Opt("--save-every")] = None,
    lora_r: Annotated[int | None, Opt("--lora-r")] = None,
    lora_alpha: Annotated[int | None, Opt("--lora-alpha")] = None,
    lora_dropout: Annotated[float | None, Opt("--lora-dropout")] = None,
    seed: Annotated[int | None, Opt("--seed")] = None,
    packing: Annotated[
        bool | None, Opt("--packing/--no-packing", help="Pack examples into shared rows (default on).")
    ] = None,
    trust_remote_code: Annotated[
        bool | None,
        Opt("--trust-remote-code", help="Let the model folder run its own Python code (off by default)."),
    ] = None,
    compile: Annotated[
        bool | None,
        Opt("--compile/--no-compile", help="torch.compile the decoder layers (default: auto, on for long runs)."),
    ] = None,
    resume: Annotated[bool, Opt("--resume", help="Continue from the newest valid checkpoint.")] = False,
    force: Annotated[bool, Opt("--force", help="Replace an existing run folder.")] = False,
    skip_check: Annotated[
        bool, Opt("--skip-check", help="Start even if `tunesmith check` finds errors in the data.")
    ] = False,
    eval_data: Annotated[
        Path | None, Opt("--eval-data", help="Held-out JSONL: run `tunesmith eval` on it after training.")
    ] = None,
    nproc: Annotated[
        int | None,
        Opt("--nproc", min=1, help="Train in N local processes via torchrun (LoRA: DDP, full: FSDP2)."),
    ] = None,
) -> None:
    """Fine-tune a model on JSONL examples (LoRA or full)."""
    from rich.markup import escape

    from tunesmith import console
    from tunesmith.config import load_config
    from tunesmith.train import distributed
    from tunesmith.train.pipeline import run_training
    from tunesmith.train.signals import Interrupted, graceful_stop

    overrides = _overrides(
        model=model,
        data=data,
        val=val,
        val_split=val_split,
        max_len=max_len,
        overlong=overlong,
        train_on=train_on,
        method=method,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        micro_batch_size=micro_batch_size,
        max_steps=max_steps,
        eval_every=eval_every,
        save_every=save_every,
        seed=seed,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        packing=packing,
        trust_remote_code=trust_remote_code,
        compile=compile,
    )
    cfg = load_config(config, overrides)
    if nproc and nproc > 1 and not distributed.launched():
        code = _launch(cfg, out, nproc, resume=resume, force=force, skip_check=skip_check)
        if code:
            raise typer.Exit(code)
        if eval_data is not None:  # (rank 0 already said "done")
            from tunesmith.eval.report import evaluate_and_report

            evaluate_and_report(out, eval_data, out / "eval")
        return
    if nproc and distributed.launched() and nproc != distributed.env_world_size():
        console.warn(f"--nproc {nproc} ignored: torchrun started {distributed.env_world_size()} processes")
    # Ctrl-C / SIGTERM: checkpoint at the next step boundary, then say how to continue.
    world = distributed.env_world_size() if distributed.launched() else 1
    resume_cmd = _resume_command(out, skip_check, eval_data, world)
    with distributed.session(), graceful_stop():
        try:
            result = run_training(cfg, out, resume=resume, force=force, skip_check=skip_check)
        except Interrupted as e:
            if os.environ.get("RANK", "0") == "0":
                console.warn(escape(f"{e}; resume with: {resume_cmd}"))
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            if os.environ.get("RANK", "0") == "0":
                console.warn(escape(f"aborted; resume from the last checkpoint with: {resume_cmd}"))
            raise typer.Exit(130) from None
    if os.environ.get("RANK", "0") != "0":
        return  # rank 0 reports, and evaluates
    s = result.summary
    assert s is not None  # rank 0 of a finished run
    best = f", best validation loss {s.best_val_loss:.4f} at step {s.best_step}" if s.best_val_loss else ""
    console.info(
        f"[green]done[/green] in {s.wall_time_s:.0f}s: {s.steps} steps, "
        f"{s.tokens_per_s} tok/s{best}{' (stopped early)' if s.stopped_early else ''}"
    )
    console.info(f"run: {out}  (weights in {s.weights_path(out)}, try: tunesmith chat {out})")
    if eval_data is not None:
        from tunesmith.eval.report import evaluate_and_report

        evaluate_and_report(out, eval_data, out / "eval")
