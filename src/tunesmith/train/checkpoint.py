"""Checkpoints that survive crashes: everything needed for an exact resume, written atomically.

    checkpoints/step-000010/
      weights.safetensors   trainable parameters (LoRA tensors, or every weight for full fine-tuning)
      best.safetensors      trainable parameters at the best validation loss so far (if not this step)
      optimizer.pt          AdamW state (tensors and numbers only: loads with weights_only=True)
      rng.pt                torch RNG state (dropout); python's is in state.json
      state.json            step, scheduler, early-stopping state, elapsed time
      manifest.json         SHA-256 of every file above; a checkpoint that fails it is skipped

Full fine-tuning writes its weights, best weights and AdamW state with torch.distributed.checkpoint instead
(``.metadata`` + one ``__R_0.distcp`` shard file per rank, keyed by parameter name), from one process or
many alike; a later run with any number of processes loads it, resharding as needed (``save_sharded``).

A checkpoint is written to a temporary folder, fsynced, then renamed into place; the rename is the
commit point, so a crash mid-write leaves only a temporary folder that resume ignores and removes. Free
space is checked before each save, and a failed save removes only its own temporary folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tunesmith import console
from tunesmith.errors import UserError
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
    """Write checkpoint ``step`` atomically, then prune to the newest ``keep``.

    A full disk (or any other write error) removes only this checkpoint's temporary folder and raises a
    one-line UserError: every checkpoint already saved stays whole, so the run can be resumed later."""
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoints_dir / f"{PREFIX}{step:06d}"
    tmp = checkpoints_dir / f".tmp-{PREFIX}{step:06d}-{os.getpid()}"
    _check_space(checkpoints_dir, final.name, estimate_bytes(weights, best_weights, optimizer))
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _write_files(tmp, weights, best_weights, optimizer, state)
        return _commit(checkpoints_dir, tmp, final, step, keep)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _save_failed(final, e.strerror or str(e)) from None
    except BaseException:  # a second Ctrl-C: leave no half-written folder behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _save_failed(final: Path, why: str) -> UserError:
    return UserError(
        f"could not save checkpoint {final.name} in {final.parent}: {why}; the checkpoints saved "
        "before it are intact (free some space, then run the same command with --resume)"
    )


def _write_files(
    tmp: Path,
    weights: dict[str, torch.Tensor],
    best_weights: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> None:
    save_file(_tensors(weights), tmp / "weights.safetensors")
    _test_delay()
    if best_weights is not None:
        save_file(_tensors(best_weights), tmp / "best.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    _test_delay()
    torch.save({"torch": torch.get_rng_state()}, tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")


def _commit(checkpoints_dir: Path, tmp: Path, final: Path, step: int, keep: int) -> Path:
    """Manifest, fsync, rename into place (the commit point), prune."""
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


def _test_delay() -> None:
    """Test hook: widen the window inside a checkpoint write so a kill test can land in it for sure."""
    delay = os.environ.get("TUNESMITH_TEST_CHECKPOINT_DELAY")
    if delay:
        time.sleep(float(delay))


def _nbytes(tensors: dict[str, torch.Tensor] | None) -> int:
    return sum(t.numel() * t.element_size() for t in (tensors or {}).values())


def estimate_bytes(
    weights: dict[str, torch.Tensor], best_weights: dict[str, torch.Tensor] | None, optimizer: torch.optim.Optimizer
) -> int:
    """Bytes a checkpoint will take: the tensors it holds (AdamW keeps two per weight) plus small files."""
    moments = sum(
        t.numel() * t.element_size() for st in optimizer.state.values() for t in st.values() if torch.is_tensor(t)
    )
    return _nbytes(weights) + _nbytes(best_weights) + moments + (64 << 10)


def _check_space(folder: Path, name: str, need: int) -> None:
    # A margin for file-system overhead; the check is what lets us fail before writing anything at all.
    need = int(need * 1.05) + (1 << 20)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise UserError(
            f"not enough disk space for checkpoint {name} in {folder}: it needs about {_mb(need)}, "
            f"{_mb(free)} is free; the checkpoints saved before it are intact (free some space, then run "
            "the same command with --resume)"
        )


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


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


# ---- sharded checkpoints (full fine-tuning) -----------------------------------------------------------


@contextlib.contextmanager
def _one_process_is_fine() -> Iterator[None]:
    """torch.distributed.checkpoint warns when no process group exists; one process is a supported case."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def is_sharded(folder: Path) -> bool:
    return (folder / ".metadata").is_file()


def save_sharded(
    checkpoints_dir: Path,
    step: int,
    *,
    model: Any,
    weights: dict[str, torch.Tensor],
    best_weights: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    keep: int,
) -> Path | None:
    """Every rank writes its own shard into one temporary folder; rank 0 then adds state.json, rng.pt and
    the manifest and commits, as ``save_checkpoint`` does. Called by every rank (it is a collective)."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    peers = dist.is_available() and dist.is_initialized()
    main = not peers or dist.get_rank() == 0
    final = checkpoints_dir / f"{PREFIX}{step:06d}"
    tmp = checkpoints_dir / f".tmp-{PREFIX}{step:06d}-sharded"  # the same name on every rank
    if main:
        checkpoints_dir.mkdir(parents=True, exist_ok=True)
        # The whole checkpoint (every rank's shard lands in this folder): numel counts a sharded tensor whole.
        _check_space(checkpoints_dir, final.name, estimate_bytes(weights, best_weights, optimizer))
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    if peers:
        dist.barrier()  # nobody writes into the folder before it is fresh
    content: dict[str, Any] = {
        "weights": {n: p.detach() for n, p in weights.items()},
        "optimizer": get_optimizer_state_dict(model, optimizer),  # keyed by parameter name, not position
    }
    if best_weights is not None:
        content["best"] = best_weights
    try:
        with _one_process_is_fine():
            dcp.save(content, checkpoint_id=tmp)  # returns once every rank's shard and the metadata are written
        if not main:
            return None
        torch.save({"torch": torch.get_rng_state()}, tmp / "rng.pt")
        state = {**state, "has_best": best_weights is not None}
        (tmp / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
        return _commit(checkpoints_dir, tmp, final, step, keep)
    except (OSError, RuntimeError) as e:  # dcp and torch.save report a failed write as RuntimeError too
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise _save_failed(final, str(e).splitlines()[0] if str(e) else repr(e)) from None
    except BaseException:  # a second Ctrl-C: leave no half-written folder behind
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_sharded(
    folder: Path, model: Any, weights: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Load a sharded checkpoint in place into ``weights`` (this process's shards of them) and the optimizer;
    returns the rest in ``load_checkpoint``'s shape, with "weights" and "optimizer" None."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    content: dict[str, Any] = {
        "weights": {n: p.detach() for n, p in weights.items()},
        "optimizer": get_optimizer_state_dict(model, optimizer),  # allocates the AdamW state to load into
    }
    best = {n: torch.empty_like(p.detach()) for n, p in weights.items()} if state.get("has_best") else None
    if best is not None:
        content["best"] = best
    with _one_process_is_fine():
        dcp.load(content, checkpoint_id=folder)
    set_optimizer_state_dict(model, optimizer, content["optimizer"])
    return {
        "weights": None,
        "optimizer": None,
        "best_weights": best,
        "rng": torch.load(folder / "rng.pt", weights_only=True),
        "state": state,
    }
