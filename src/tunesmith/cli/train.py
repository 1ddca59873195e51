"""`tunesmith train`: flags -> RunConfig -> run_training()."""

from __future__ import annotations

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
        "compile": ("train", "compile"),
    }
    out: dict[str, Any] = {}
    for flag, value in flags.items():
        if value is None:
            continue
        section, key = where[flag]
        out.setdefault(section, {})[key] = str(value) if isinstance(value, Path) else value
    return out


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
    compile: Annotated[
        bool | None, Opt("--compile/--no-compile", help="torch.compile the decoder layers (off by default).")
    ] = None,
    resume: Annotated[bool, Opt("--resume", help="Continue from the newest valid checkpoint.")] = False,
    force: Annotated[bool, Opt("--force", help="Replace an existing run folder.")] = False,
    skip_check: Annotated[
        bool, Opt("--skip-check", help="Start even if `tunesmith check` finds errors in the data.")
    ] = False,
    eval_data: Annotated[
        Path | None, Opt("--eval-data", help="Held-out JSONL: run `tunesmith eval` on it after training.")
    ] = None,
) -> None:
    """Fine-tune a model on JSONL examples (LoRA or full)."""
    from tunesmith import console
    from tunesmith.config import load_config
    from tunesmith.train.pipeline import run_training

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
        compile=compile,
    )
    cfg = load_config(config, overrides)
    result = run_training(cfg, out, resume=resume, force=force, skip_check=skip_check)
    s = result.summary
    best = f", best validation loss {s['best_val_loss']:.4f} at step {s['best_step']}" if s["best_val_loss"] else ""
    console.info(
        f"[green]done[/green] in {s['wall_time_s']:.0f}s: {s['steps']} steps, "
        f"{s['tokens_per_s']} tok/s{best}{' (stopped early)' if s['stopped_early'] else ''}"
    )
    console.info(f"run: {out}  (weights in {out / s['weights_dir']}, try: tunesmith chat {out})")
    if eval_data is not None:
        from tunesmith.eval.report import evaluate_and_report

        evaluate_and_report(out, eval_data, out / "eval")
