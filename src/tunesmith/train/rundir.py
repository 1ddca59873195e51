"""The run folder's life cycle for `tunesmith train`: refusing to overwrite, starting over, resuming only
with the same inputs, and the hashes and versions a finished run records (runs.py has the folder's layout)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import platform
import shutil
from pathlib import Path
from typing import Any

from tunesmith import __version__, console, runs
from tunesmith.config import RunConfig
from tunesmith.errors import UserError


def versions() -> dict[str, str]:
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


def source_hash(source: Any) -> str:
    return _model_hash(source.path) if source.kind != "hub" else source.name


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


def prepare_run_dir(out: Path, cfg: RunConfig, *, resume: bool, force: bool) -> None:
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


def _saved_settings(out: Path, cfg: RunConfig) -> dict[str, Any]:
    """The run's saved config, with today's value for every setting its tunesmith did not have yet (a run
    started before ``train.objective`` existed was SFT, whatever today's default says)."""
    import yaml

    from tunesmith.config import load_config

    path = out / runs.CONFIG_YAML
    saved, current = load_config(path).model_dump(), cfg.model_dump()
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for section, values in current.items():
        written = raw.get(section) if isinstance(raw.get(section), dict) else {}
        for key, value in values.items():
            if key not in written:
                saved[section][key] = value
    return saved


def check_resume(out: Path, cfg: RunConfig, inputs: dict[str, str | None], force: bool) -> None:
    """A run folder is never continued with other settings, data or model unless the user says --force."""
    saved, current = _saved_settings(out, cfg), cfg.model_dump()
    for settings in (saved, current):  # where the metrics also go is no reason to refuse a resume
        settings["train"].pop("report_to", None)
    differs = ["settings"] if saved != current else []
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


def record_start(out: Path, cfg: RunConfig, inputs: dict[str, str | None], *, resume: bool, force: bool) -> None:
    """Write what the run starts with (after checking a resumed folder against it): inputs.json first, because
    config.yaml is what marks a folder as a started run."""
    if resume and (out / runs.CONFIG_YAML).is_file():
        check_resume(out, cfg, inputs, force)
    runs.write_text_atomic(out / runs.INPUTS_JSON, json.dumps(inputs, indent=1))
    runs.write_text_atomic(out / runs.CONFIG_YAML, cfg.to_yaml())
