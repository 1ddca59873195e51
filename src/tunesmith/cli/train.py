"""`tunesmith train`: flags -> RunConfig -> run_training()."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from tunesmith.cli.options import TrustRemoteCodeOverride, given, option
from tunesmith.flags import flag_overrides

Opt = typer.Option


def _launch(cfg: Any, out: Path, nproc: int, *, resume: bool, force: bool, skip_check: bool) -> int:
    """Check what can be checked once, then start ``nproc`` processes on the resolved config."""
    from tunesmith.errors import UserError
    from tunesmith.train.launch import launch
    from tunesmith.train.rundir import check_run_dir
    from tunesmith.train.trackers import check_trackers

    if cfg.data.train is None:
        raise UserError("no training data: pass --data FILE")
    check_trackers(cfg.train.report_to)
    check_run_dir(out, resume=resume, force=force)
    if not skip_check:
        from tunesmith.train.preflight import refuse_on_errors

        refuse_on_errors(cfg)
    args = ["--out", str(out), "--skip-check"] + ["--resume"] * resume + ["--force"] * force
    return launch(cfg.to_yaml(), args, nproc)


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
    data: Annotated[Path | None, option("data")] = None,
    val: Annotated[Path | None, option("val")] = None,
    val_split: Annotated[float | None, option("val_split")] = None,
    columns: Annotated[str | None, option("columns")] = None,
    docs: Annotated[Path | None, option("docs")] = None,
    docs_k: Annotated[int | None, option("docs_k")] = None,
    stale_rows: Annotated[str | None, option("stale_rows")] = None,
    method: Annotated[str | None, option("method")] = None,
    objective: Annotated[str | None, option("objective")] = None,
    beta: Annotated[float | None, option("beta")] = None,
    grader: Annotated[Path | None, option("grader")] = None,
    generations: Annotated[int | None, option("generations")] = None,
    temperature: Annotated[float | None, option("temperature")] = None,
    max_completion_len: Annotated[int | None, option("max_completion_len")] = None,
    eval_samples: Annotated[int | None, option("eval_samples")] = None,
    model: Annotated[str | None, option("model")] = None,
    chat_template: Annotated[str | None, option("chat_template")] = None,
    config: Annotated[Path | None, Opt("--config", help="YAML config; flags override it.")] = None,
    epochs: Annotated[int | None, option("epochs")] = None,
    lr: Annotated[float | None, option("lr")] = None,
    batch_size: Annotated[int | None, option("batch_size")] = None,
    micro_batch_size: Annotated[int | None, option("micro_batch_size")] = None,
    max_steps: Annotated[int | None, option("max_steps")] = None,
    max_len: Annotated[int | None, option("max_len")] = None,
    overlong: Annotated[str | None, option("overlong")] = None,
    train_on: Annotated[str | None, option("train_on")] = None,
    eval_every: Annotated[int | None, option("eval_every")] = None,
    val_budget: Annotated[float | None, option("val_budget")] = None,
    save_every: Annotated[int | None, option("save_every")] = None,
    replay: Annotated[float | None, option("replay")] = None,
    replay_source: Annotated[str | None, option("replay_source")] = None,
    kl_to_base: Annotated[float | None, option("kl_to_base")] = None,
    kl_source: Annotated[str | None, option("kl_source")] = None,
    forgetting_probe: Annotated[bool | None, option("forgetting_probe")] = None,
    forgetting_budget: Annotated[float | None, option("forgetting_budget")] = None,
    lora_r: Annotated[int | None, option("lora_r")] = None,
    lora_alpha: Annotated[int | None, option("lora_alpha")] = None,
    lora_dropout: Annotated[float | None, option("lora_dropout")] = None,
    seed: Annotated[int | None, option("seed")] = None,
    packing: Annotated[bool | None, option("packing")] = None,
    trust_remote_code: TrustRemoteCodeOverride = None,
    compile: Annotated[bool | None, option("compile")] = None,
    report_to: Annotated[list[str] | None, option("report_to", metavar="<names>")] = None,
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
    """Fine-tune a model on your examples (LoRA or full)."""
    flags = given(locals())  # first: only the parameters are bound yet
    from rich.markup import escape

    from tunesmith import console
    from tunesmith.config import load_config
    from tunesmith.train import distributed
    from tunesmith.train.pipeline import run_training
    from tunesmith.train.signals import Interrupted, graceful_stop
    from tunesmith.train.startup import count_from_process_start

    count_from_process_start()

    cfg = load_config(config, flag_overrides(**flags))
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
    if s.objective == "rft" and s.best_val_loss is not None:  # RFT validates on its mean grade (loss = -grade)
        best = f", kept step {s.best_step}'s weights (validation grade {-s.best_val_loss:.4f})"
        if s.best_step == 0:
            best += " (every later validation graded clearly worse: the start's weights are kept)"
    console.info(
        f"[green]done[/green] in {s.wall_time_s:.0f}s: {s.steps} steps, "
        f"{s.tokens_per_s} tok/s{best}{' (stopped early)' if s.stopped_early else ''}"
    )
    console.info(f"run: {out}  (weights in {s.weights_path(out)}, try: tunesmith chat {out})")
    if eval_data is not None and s.objective == "rft":  # graded, as the run was trained
        from tunesmith.eval.graded import grade_and_report

        grade_and_report(out, eval_data, str(result.config.train.grader), out / "eval")
    elif eval_data is not None:
        from tunesmith.eval.report import evaluate_and_report

        evaluate_and_report(out, eval_data, out / "eval")
