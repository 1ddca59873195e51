"""The dashboard's one reader of run folders: a run folder in, plain JSON-ready dicts out.

Everything the UI knows about a run comes through ``read_run_folder`` (and ``metrics_points`` for the
curves), so that a change in what `tunesmith train` writes (run.json becoming a typed ``RunInfo``, say)
is absorbed here. Paths reach this module only after ``resolve_run`` validated the name and proved the
folder lies inside the runs folder (symlinks included), so no request names a file outside it.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import Any

import yaml

from tunesmith import runs

# A run name: one or two folder names (a bakeoff keeps its runs one level down), never starting with a dot,
# so "..", hidden folders and absolute paths are impossible by construction.
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127})?$")
LIVE_S = 120  # a started run whose metrics moved this recently is shown as running
REPORTS = {"eval": ("eval/report.html",), "bakeoff": ("bakeoff.html", "../bakeoff.html")}


def inside(path: Path, root: Path) -> bool:
    """True if ``path`` (symlinks resolved) is ``root`` or lies under it."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


def resolve_run(root: Path, name: str) -> Path | None:
    """The folder of run ``name`` under ``root``, or None when the name is not a run there."""
    if not RUN_NAME.match(name):
        return None
    path = root / name
    if not inside(path, root) or not (path / runs.CONFIG_YAML).is_file():
        return None
    return path


def list_runs(root: Path) -> list[tuple[str, Path]]:
    """Every started run (a folder with config.yaml) directly under ``root`` or one level down."""
    found: list[tuple[str, Path]] = []
    if not root.is_dir():
        return found
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or not child.is_dir():
            continue
        candidates = [child, *sorted(c for c in child.iterdir() if c.is_dir() and not c.name.startswith("."))]
        for folder in candidates:
            name = folder.relative_to(root).as_posix()
            if resolve_run(root, name) is not None:
                found.append((name, folder))
    return found


def _stamp(path: Path) -> float | None:
    with contextlib.suppress(OSError):
        return path.stat().st_mtime
    return None


def _yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _finished(path: Path) -> dict[str, Any] | None:
    """run.json as a dict (read in one place: it is becoming a typed RunInfo), None while unfinished."""
    try:
        data = json.loads((path / runs.RUN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if hasattr(data, "model_dump"):  # pragma: no cover - a typed RunInfo
        data = data.model_dump()
    return data if isinstance(data, dict) else None


_BEST_CACHE: dict[Path, tuple[tuple[float, int], float | None]] = {}


def best_val_loss(metrics: Path) -> float | None:
    """The lowest validation loss in metrics.jsonl so far (cached by mtime and size: the list asks often)."""
    try:
        st = metrics.stat()
    except OSError:
        return None
    key = (st.st_mtime, st.st_size)
    cached = _BEST_CACHE.get(metrics)
    if cached and cached[0] == key:
        return cached[1]
    best = None
    for point in metrics_points(metrics)[0]:
        v = point.get("val_loss")
        if isinstance(v, (int, float)) and (best is None or v < best):
            best = float(v)
    _BEST_CACHE[metrics] = (key, best)
    return best


def metrics_points(metrics: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete JSON lines of metrics.jsonl from byte ``offset`` on, and the offset after the last of them.

    A line being written (no newline yet) is left for the next call. Only numbers are kept: a line is data,
    never markup."""
    try:
        with open(metrics, "rb") as f:
            f.seek(offset)
            chunk = f.read(8 << 20)
    except OSError:
        return [], offset
    end = chunk.rfind(b"\n") + 1
    points = []
    for line in chunk[:end].splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            points.append({k: v for k, v in rec.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return points, offset + end


def checkpoints(path: Path) -> list[dict[str, Any]]:
    from tunesmith.train.checkpoint import list_checkpoints

    out = []
    for folder in list_checkpoints(path / runs.CHECKPOINTS):
        step = folder.name.rsplit("-", 1)[-1]
        out.append({"name": folder.name, "step": int(step) if step.isdigit() else None, "time": _stamp(folder)})
    return out


def reports(path: Path, root: Path) -> list[str]:
    """Which reports exist for this run (each looked up only at its fixed names, inside ``root``)."""
    return [kind for kind in REPORTS if report_path(path, root, kind) is not None]


def report_path(path: Path, root: Path, kind: str) -> Path | None:
    for rel in REPORTS.get(kind, ()):
        candidate = path / rel
        if candidate.is_file() and inside(candidate, root):
            return candidate
    return None


def read_run_folder(path: Path) -> dict[str, Any]:
    """What the dashboard shows of a run folder: summary fields for the list, and the details for its page."""
    config = _yaml(path / runs.CONFIG_YAML)
    info = _finished(path)
    metrics = path / runs.METRICS
    touched = _stamp(metrics) or _stamp(path / runs.CONFIG_YAML)
    if info is not None:
        status = "failed" if info.get("status") not in (None, "completed") else "succeeded"
    elif touched and time.time() - touched < LIVE_S:
        status = "running"
    else:
        status = "stopped"
    section = lambda k: config.get(k) if isinstance(config.get(k), dict) else {}  # noqa: E731
    info = info or {}
    best = info.get("best_val_loss")
    return {
        "status": status,
        "model": info.get("base_model") or section("model").get("name"),
        "method": info.get("method") or section("train").get("method"),
        "data": _label(section("data").get("train")),
        "best_val_loss": best if isinstance(best, (int, float)) else best_val_loss(metrics),
        "created": _stamp(path / runs.CONFIG_YAML),
        "updated": touched,
        "steps": info.get("steps"),
        "total_steps": info.get("total_steps"),
        "choices": [str(c) for c in info.get("choices") or []],
        "config": config,
        "summary": {k: v for k, v in info.items() if k not in ("choices", "counts", "hashes", "versions")},
        "checkpoints": checkpoints(path),
    }


def _label(data: Any) -> str | None:
    """A data path as a label: its file name (the UI never needs, or shows, where it lives)."""
    return Path(str(data)).name if data else None
