"""What a reinforcement fine-tuning run needs before the loop, beside what every run needs (pipeline.py):
its grader, loaded and checked against the rows before anything is spent, and its prompts, read, split
and rendered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.config import RunConfig
from tunesmith.data.render import Renderer, RenderStats
from tunesmith.data.rft import RftPrompt, file_hash, read_prompts, render_prompts, split_prompts
from tunesmith.errors import UserError
from tunesmith.train import distributed


def load_run_grader(cfg: RunConfig) -> Any:
    """The run's grader (GraderError, exit 2, if it does not validate)."""
    from tunesmith.graders import load_grader

    if not cfg.train.grader:
        raise UserError("reinforcement fine-tuning needs a grader: pass --grader GRADER.json")
    if distributed.world() > 1 or distributed.launched():
        raise UserError("reinforcement fine-tuning runs in one process: drop --nproc")
    if cfg.train.beta and cfg.train.method == "full":
        raise UserError(
            "--beta (a KL term to the start) needs LoRA: the reference is the model with its adapter disabled; "
            "drop --beta or --method full"
        )
    path = Path(cfg.train.grader)
    if not path.is_file():
        raise UserError(f"{path}: no such grader file")
    return load_grader(path)


def read_data(cfg: RunConfig, grader: Any) -> tuple[list[RftPrompt], list[RftPrompt], str, str | None, list[str]]:
    """(training prompts, held-out prompts, their files' hashes, the reasons for the split); the grader's
    templates are checked against the rows' fields."""
    assert cfg.data.train is not None
    prompts = read_prompts(cfg.data.train)
    if cfg.data.val is not None:
        train, val, reasons = prompts, read_prompts(cfg.data.val), []
    else:
        train, val, reasons = split_prompts(prompts, cfg.data.val_split, cfg.train.seed)
    grader.check_items([p.item for p in prompts + val])
    if cfg.train.eval_samples and len(val) > cfg.train.eval_samples:
        from tunesmith.train.batches import fixed_sample

        val = fixed_sample(val, cfg.train.eval_samples, cfg.train.seed)
        reasons.append(f"validation: a fixed sample of {len(val)} held-out prompts (eval_samples)")
    val_hash = file_hash(cfg.data.val) if cfg.data.val is not None else None
    return train, val, file_hash(cfg.data.train), val_hash, reasons


def render(renderer: Renderer, prompts: list[RftPrompt]) -> tuple[list[RftPrompt], RenderStats]:
    """Each prompt's ids; a prompt longer than max_len is dropped (counted, as an overlong SFT row is)."""
    stats = RenderStats(examples=len(prompts))
    kept = []
    for p in render_prompts(renderer, prompts):
        if len(p.prompt_ids) > renderer.max_len:
            stats.dropped_overlong += 1
            stats.dropped_sources.append(p.source)
            continue
        kept.append(p)
        stats.tokens += len(p.prompt_ids)
    stats.kept = len(kept)
    return kept, stats
