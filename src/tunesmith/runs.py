"""The run folder: what a finished `tunesmith train` leaves behind.

runs/NAME/
  config.yaml        the resolved config (every default filled in); its presence marks a started run
  inputs.json        SHA-256 of the training data, validation data and model weights it started with
  run.json           written last: hashes, versions, counts, summary; its presence marks a finished run
  adapter/           PEFT adapter + tokenizer              (method: lora)
  model/             full weights (safetensors) + tokenizer (method: full)
  metrics.jsonl      one line per optimizer step, plus validation lines
  checkpoints/       step-N/ folders for --resume
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

RUN_JSON = "run.json"
CONFIG_YAML = "config.yaml"
ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
INPUTS_JSON = "inputs.json"  # SHA-256 of the data and model a run started with; --resume compares them
# write_text_atomic's temporary names: what a kill in the middle of one leaves behind.
TEMP_PREFIXES = tuple(f".{name}." for name in (RUN_JSON, CONFIG_YAML, INPUTS_JSON, METRICS))


def is_run(path: Path) -> bool:
    return (Path(path) / RUN_JSON).is_file()


def read_run(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / RUN_JSON).read_text(encoding="utf-8"))


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file + fsync + rename, so readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
