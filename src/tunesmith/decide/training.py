"""The bakeoff's fine-tuned methods: reuse a finished run (``--lora-run``, ``--full-run``) or train one here
with tunesmith's own defaults, as a new user would, after checking with the pre-flight estimate
(``train/estimate.py``) that it fits in memory (and in ``--max-train-minutes``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tunesmith import console, runs
from tunesmith.decide.options import BakeoffOptions
from tunesmith.errors import UserError

MEMORY_HEADROOM = 1.2  # the estimate is a floor: the backward pass's transient buffers come on top


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable: free plus what the kernel can reclaim)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _reuse(method: str, run: Path, flag: str | None = None) -> dict[str, Any]:
    flag = flag or method
    if not runs.is_run(run):
        raise UserError(f"--{flag}-run {run} is not a finished tunesmith run (no {runs.RUN_JSON})")
    info = runs.read_run(run)
    if info.method != method:
        raise UserError(f"--{flag}-run {run} is a {info.method} run, not {method}")
    return {
        "source": "reused",
        "run": str(run),
        "base_model": info.base_model,
        "seconds": info.wall_time_s,
        "loop_seconds": info.train_time_s,
        "steps": info.steps,
        "docs": _run_docs(run),
    }


def _run_docs(run: Path) -> str | None:
    """The docs a finished run trained with (``train --docs``), from its saved config."""
    from tunesmith.config import load_config

    path = run / runs.CONFIG_YAML
    docs = load_config(path).data.docs if path.is_file() else None
    return str(docs) if docs else None


def _train_config(method: str, options: BakeoffOptions, model: str) -> Any:
    from tunesmith.config import deep_merge, load_config
    from tunesmith.flags import flag_overrides

    # trust_remote_code is only ever switched on here: a YAML that already trusts the model keeps doing so.
    trust = True if options.trust_remote_code else None
    docs = {"docs": Path(options.docs), "docs_k": options.k} if method == "lora+rag" and options.docs else {}
    flags = flag_overrides(
        model=model,
        trust_remote_code=trust,
        data=Path(options.train),
        method="lora" if method == "lora+rag" else method,
        columns=options.columns,
        **docs,
    )
    return load_config(options.config, deep_merge(options.train_overrides, flags))


def _too_big(method: str, cfg: Any, options: BakeoffOptions) -> str | None:
    """Why ``method`` should not be trained here, from the pre-flight estimate (train/estimate.py), or None.
    Full fine-tuning is always checked against memory; either method against --max-train-minutes."""
    if method != "full" and options.max_train_minutes is None:
        return None
    from tunesmith.train.estimate import estimate_training
    from tunesmith.train.preflight import run_check

    report = run_check(cfg, estimate=False).report
    if not report.kept:
        return None  # training itself reports why nothing is trainable
    est = estimate_training(cfg, report.kept, report.kept_lengths, report.val_lengths, methods=(method,)).methods[0]
    need = est.memory["peak"] * MEMORY_HEADROOM
    have = options.max_memory_gb * 2**30 if options.max_memory_gb is not None else available_memory()
    if need > have:
        where = "--max-memory-gb" if options.max_memory_gb is not None else "available on this machine"
        return (
            f"{method} fine-tuning needs about {need / 2**30:.2f} GiB (estimated peak "
            f"{est.memory['peak'] / 2**30:.2f} GiB + 20%), more than the {have / 2**30:.2f} GiB {where}"
        )
    minutes = est.seconds_total / 60
    if options.max_train_minutes is not None and minutes > options.max_train_minutes:
        return (
            f"{method} fine-tuning is estimated at {minutes:.0f} min on this machine "
            f"({est.epochs} epochs x {est.steps_per_epoch} steps), "
            f"over --max-train-minutes {options.max_train_minutes:g}"
        )
    return None


def obtain_run(method: str, options: BakeoffOptions, model: str, out: Path) -> tuple[Path, dict[str, Any]]:
    """The run to test for ``method``: the one given, or one trained here with tunesmith's defaults."""
    given = {"lora": options.lora_run, "full": options.full_run, "lora+rag": options.lora_rag_run}[method]
    kind = "lora" if method == "lora+rag" else method
    if given is not None:
        return Path(given), _reuse(kind, Path(given), flag=method.replace("+", "-"))
    from tunesmith.train.pipeline import run_training

    cfg = _train_config(method, options, model)
    why = _too_big("lora" if method == "lora+rag" else method, cfg, options)
    if why:
        raise UserError(why)
    run_dir = out / f"{method.replace('+', '-')}-run"
    with_docs = f", prompts with {options.k} chunks of --docs {options.docs}" if cfg.data.docs else ""
    console.info(f"[bold]bakeoff[/bold]: training {method} on {options.train}{with_docs} -> {run_dir}")
    t0 = time.perf_counter()
    info = run_training(cfg, run_dir, force=True).summary
    assert info is not None  # one process, run to the end
    seconds = time.perf_counter() - t0
    return run_dir, {
        "source": "trained here",
        "run": str(run_dir),
        "base_model": model,
        "seconds": round(seconds, 1),
        "loop_seconds": info.train_time_s,
        "steps": info.steps,
        "docs": str(cfg.data.docs) if cfg.data.docs else None,
    }
