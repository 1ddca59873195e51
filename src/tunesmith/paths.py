"""Where tunesmith keeps its own files ($TUNESMITH_HOME, default ~/.cache/tunesmith)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("TUNESMITH_HOME") or Path.home() / ".cache" / "tunesmith").expanduser()


def models_dir() -> Path:
    return home() / "models"
