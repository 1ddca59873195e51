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
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError

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


@dataclass
class PeakFlops:
    """The peak the MFU is measured against."""

    value: float
    dtype: str  # "bf16" | "fp32"
    source: str  # how it was found: "GEMM probe at start-up"


@dataclass
class Counts:
    """Rows and tokens of each split, as ``RenderStats.as_dict()`` counts them."""

    train: dict[str, int] = field(default_factory=dict)  # examples, kept, dropped_overlong, truncated, tokens, ...
    val: dict[str, int] = field(default_factory=dict)
    dropped_rows: list[str] = field(default_factory=list)  # where the first 50 dropped rows came from


@dataclass
class Hashes:
    """What the run was trained on; ``--resume`` and export compare against these."""

    train_data: str | None = None  # SHA-256 of the training file
    val_data: str | None = None  # of the --val file; None when validation was split off the training data
    model: str | None = None  # of the base weights (first 16 hex digits), or the hub id
    chat_template: str | None = None
    masking: str | None = None  # of train_on, max_len, overlong and the stop ids


@dataclass
class DistributedInfo:
    """How a torchrun run was spread; absent (None) for a run in one process."""

    processes: int
    backend: str  # "gloo" (CPU) | "nccl" (one GPU each)
    threads_per_process: int | None = None  # gloo only

    def describe(self) -> str:
        """The line ``train/distributed.py::describe`` writes into ``choices``."""
        per = f", {self.threads_per_process} threads each" if self.backend == "gloo" else ", one GPU each"
        return f"distributed: {self.processes} processes ({self.backend}{per})"


# Runs written before ``distributed`` was a field say it only in ``choices``.
_DISTRIBUTED_LINE = re.compile(r"^distributed: (\d+) processes \((\w+)(?:, (\d+) threads each)?")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass(kw_only=True)
class RunInfo:
    """run.json: what a finished run was, read and written only through ``read_run`` / ``write_run``.

    Build one with keyword arguments at the end of training, for example
    ``RunInfo(method="lora", base_model=cfg.model.name, weights_dir="adapter", wall_time_s=..., steps=...,
    counts=Counts(train=..., val=..., dropped_rows=...), hashes=Hashes(...), peak_flops=PeakFlops(...),
    distributed=DistributedInfo(processes=2, backend="gloo", threads_per_process=1) or None, ...)``;
    ``to_dict()`` gives the JSON document, with the keys in this order and the same names and nesting as
    every run.json written before. Fields a run.json may lack (older runs, runs in one process) default to
    None or empty, so every run folder ever written still reads.
    """

    status: str = "completed"
    method: str  # "lora" | "full"
    base_model: str  # what --model named: alias, folder, .gguf or hub id
    weights_dir: str  # "adapter" (lora) or "model" (full), inside the run folder
    created: str | None = field(default_factory=_now)
    wall_time_s: float | None = None  # the whole run_training call
    train_time_s: float | None = None  # the loop's own clock (excludes evals, checkpoints)
    loop_wall_s: float | None = None  # the loop by the wall clock
    steps: int | None = None
    total_steps: int | None = None
    stopped_early: bool = False
    best_val_loss: float | None = None
    best_step: int | None = None
    final_train_loss: float | None = None
    skipped_steps: int = 0  # non-finite steps skipped
    tokens_seen: int | None = None
    trained_tokens_seen: int | None = None
    tokens_per_s: float | None = None
    mfu: float | None = None
    peak_flops: PeakFlops | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    precision: str | None = None  # "bf16-autocast" | "fp32"
    choices: list[str] = field(default_factory=list)  # why each automatic choice went the way it did
    counts: Counts = field(default_factory=Counts)
    hashes: Hashes = field(default_factory=Hashes)
    versions: dict[str, str] = field(default_factory=dict)  # python, tunesmith, torch, transformers, ...
    objective: str = "sft"  # what the loss rewarded: "sft" | "dpo" (runs before DPO existed were all sft)
    started_from: str | None = None  # a LoRA run whose adapter this run trained further (base_model is its base)
    beta: float | None = None  # DPO's beta
    distributed: DistributedInfo | None = None  # written only for a run in several processes
    startup: dict[str, float] = field(default_factory=dict)  # seconds per phase before the first step
    # The chat template it trained with (saved with its tokenizer): "model" (the tokenizer's own or a file),
    # "fallback", "chatml", "llama3" or "gemma" (data/chat_templates.py). None: a run from before it was recorded.
    chat_template: str | None = None
    # LoRA: the modules it wrapped by kind ({"wrapped": {"attention": {"modules", "params", "names"}, ...}},
    # plus "frozen_experts" where 3-D expert weights stay frozen); models/coverage.py. None: full, or older runs.
    lora_coverage: dict[str, Any] | None = None
    # The forgetting probe during training (train/general.py): general-English perplexity at the start, at the
    # kept weights, and at each validation. None: the probe was off, or older runs.
    forgetting_probe: dict[str, Any] | None = None

    def weights_path(self, run_dir: Path) -> Path:
        return Path(run_dir) / self.weights_dir

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (``distributed`` only when set, so a one-process run.json keeps its keys)."""
        out = asdict(self)
        for key in (
            "distributed",
            "chat_template",
            "lora_coverage",
            "forgetting_probe",
        ):  # absent when unset: older run.json files keep their keys
            if out[key] is None:
                del out[key]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = RUN_JSON) -> RunInfo:
        missing = [k for k in ("method", "base_model", "weights_dir") if not isinstance(data.get(k), str)]
        if missing:
            raise UserError(f"{where}: not a tunesmith run record (no {', '.join(missing)})")
        known = {f.name for f in fields(cls)} - {"peak_flops", "counts", "hashes", "distributed"}
        info = cls(**{k: v for k, v in data.items() if k in known})
        info.created = data.get("created")
        if isinstance(data.get("peak_flops"), dict):
            info.peak_flops = PeakFlops(**data["peak_flops"])
        info.counts = Counts(**_known(Counts, data.get("counts")))
        info.hashes = Hashes(**_known(Hashes, data.get("hashes")))
        if isinstance(data.get("distributed"), dict):
            info.distributed = DistributedInfo(**_known(DistributedInfo, data["distributed"]))
        else:
            info.distributed = _distributed_from_choices(info.choices)
        return info


def _known(kind: type, data: Any) -> dict[str, Any]:
    names = {f.name for f in fields(kind)}
    return {k: v for k, v in data.items() if k in names} if isinstance(data, dict) else {}


def _distributed_from_choices(choices: list[str]) -> DistributedInfo | None:
    for line in choices:
        m = _DISTRIBUTED_LINE.match(line)
        if m:
            threads = int(m.group(3)) if m.group(3) else None
            return DistributedInfo(processes=int(m.group(1)), backend=m.group(2), threads_per_process=threads)
    return None


def read_run(path: Path) -> RunInfo:
    """The run.json of a finished run folder, typed. A file that is not a run record is a UserError."""
    where = Path(path) / RUN_JSON
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{where}: not a readable run record (invalid JSON)") from None
    if not isinstance(data, dict):
        raise UserError(f"{where}: not a tunesmith run record")
    return RunInfo.from_dict(data, str(where))


def training_curves(path: Path) -> dict[str, list[list[float]]]:
    """[step, loss] and [step, val_loss] points of a run's metrics.jsonl (the eval report's loss chart)."""
    train, val = [], []
    metrics = path / METRICS
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line) if line.strip() else {}
            if "loss" in rec:
                train.append([rec["step"], rec["loss"]])
            if "val_loss" in rec:
                val.append([rec["step"], rec["val_loss"]])
    return {"train_loss": train, "val_loss": val}


def write_run(path: Path, info: RunInfo) -> None:
    """Write run.json into the run folder ``path``, atomically: its presence marks a finished run."""
    write_text_atomic(Path(path) / RUN_JSON, json.dumps(info.to_dict(), indent=2))


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
