"""Checkpoints that survive crashes: everything needed for an exact resume, written atomically.

    checkpoints/step-000010/
      weights.safetensors   trainable parameters (LoRA tensors, or every weight for full fine-tuning)
      best.safetensors      trainable parameters at the best validation loss so far (if not this step)
      optimizer.pt          AdamW state (tensors and numbers only: loads with weights_only=True)
      rng.pt                torch RNG state (dropout); python's is in state.json
      state.json            step, scheduler, early-stopping state, elapsed time
      manifest.json         SHA-256 of every file above; a checkpoint that fails it is skipped

A checkpoint is written to a temporary folder, fsynced, then renamed into place; the rename is the
commit point, so a crash mid-write leaves only a temporary folder that resume ignores and removes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tunesmith import console
from tunesmith.runs import fsync_dir

PREFIX = "step-"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_checkpoint(
    checkpoints_dir: Path,
    step: int,
    *,
    weights: dict[str, torch.Tensor],
    best_weights: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    keep: int,
) -> Path:
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoints_dir / f"{PREFIX}{step:06d}"
    tmp = checkpoints_dir / f".tmp-{PREFIX}{step:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(_tensors(weights), tmp / "weights.safetensors")
    if best_weights is not None:
        save_file(_tensors(best_weights), tmp / "best.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save({"torch": torch.get_rng_state()}, tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
    files = sorted(p.name for p in tmp.iterdir())
    manifest = {"step": step, "files": {name: _sha256(tmp / name) for name in files}}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    for p in tmp.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())
    fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(checkpoints_dir)
    _prune(checkpoints_dir, keep)
    return final


def _prune(checkpoints_dir: Path, keep: int) -> None:
    for old in list_checkpoints(checkpoints_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    if not checkpoints_dir.is_dir():
        return []
    return sorted(p for p in checkpoints_dir.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def verify(folder: Path) -> str | None:
    """None if the checkpoint is whole, else what is wrong with it."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "no readable manifest"
    for name, digest in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if _sha256(path) != digest:
            return f"{name} does not match its checksum"
    return None


def latest_valid(checkpoints_dir: Path) -> Path | None:
    """The newest checkpoint that verifies; corrupt or partial ones are reported and skipped."""
    for tmp in checkpoints_dir.glob(".tmp-*") if checkpoints_dir.is_dir() else []:
        shutil.rmtree(tmp, ignore_errors=True)
    for folder in reversed(list_checkpoints(checkpoints_dir)):
        problem = verify(folder)
        if problem is None:
            return folder
        console.warn(f"skipping checkpoint {folder.name}: {problem}")
    return None


def load_checkpoint(folder: Path) -> dict[str, Any]:
    best = folder / "best.safetensors"
    return {
        "weights": load_file(folder / "weights.safetensors"),
        "best_weights": load_file(best) if best.is_file() else None,
        "optimizer": torch.load(folder / "optimizer.pt", weights_only=True),
        "rng": torch.load(folder / "rng.pt", weights_only=True),
        "state": json.loads((folder / "state.json").read_text(encoding="utf-8")),
    }
