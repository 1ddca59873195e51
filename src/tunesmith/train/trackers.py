"""Experiment trackers a user already has (``--report-to tensorboard,mlflow``): each gets every line that goes to
metrics.jsonl, rank 0's alone.

What a tracker receives, for each metrics.jsonl line: every numeric field (not ``step``, not booleans) as a
scalar at the line's ``step``. A validation line's fields (``val_loss``, ...) are named ``val/loss``, ...; a
step line's fields ``train/loss``, ``train/lr``, ``train/tokens_per_s``, ... The resolved config is logged
once at the start, flattened to ``section.field`` keys (TensorBoard: hparams plus the YAML as text; MLflow:
params).

- TensorBoard: ``torch.utils.tensorboard.SummaryWriter`` into ``RUN/tensorboard`` (``tensorboard --logdir
  RUN/tensorboard``); needs the ``tensorboard`` package.
- MLflow: an ``MlflowClient`` run named after the run folder, in experiment ``tunesmith``, on
  ``MLFLOW_TRACKING_URI`` when set, else a file store in ``RUN/mlruns`` (``mlflow ui --backend-store-uri
  RUN/mlruns``); ``mlflow-skinny`` is enough. The client (not ``mlflow.start_run``) keeps no global active run,
  so the jobs worker can train several runs in one process.

Both packages come with ``pip install 'tunesmith[trackers]'`` and are imported only when asked for:
``check_trackers`` imports them at set-up, so a missing one stops the run before any compute is spent.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Protocol

from tunesmith.errors import UserError

TRACKERS = ("tensorboard", "mlflow")
_PACKAGE = {"tensorboard": "tensorboard", "mlflow": "mlflow-skinny"}
INSTALL = "pip install 'tunesmith[trackers]'"


class Tracker(Protocol):
    def log(self, line: dict[str, Any]) -> None: ...
    def close(self, ok: bool = True) -> None: ...


def check_trackers(names: list[str]) -> None:
    """Import each asked-for tracker's package now, so a missing one is one clear line before training."""
    for name in names:
        try:
            _import(name)
        except ImportError:
            raise UserError(f"--report-to {name} needs the {_PACKAGE[name]} package: {INSTALL}") from None


def _import(name: str) -> Any:
    if name == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter  # imports the tensorboard package

        return SummaryWriter
    from mlflow.tracking import MlflowClient

    return MlflowClient


def scalars(line: dict[str, Any]) -> dict[str, float]:
    """A metrics.jsonl line's numeric fields under their tracker names (see the module's docstring)."""
    val = any(k.startswith("val_") for k in line)
    out = {}
    for key, value in line.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        out[f"val/{key[4:]}" if val and key.startswith("val_") else f"train/{key}"] = float(value)
    return out


def flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """``{"train": {"seed": 42}}`` -> ``{"train.seed": 42}``; values that are not scalars become strings."""
    out: dict[str, Any] = {}
    for section, values in config.items():
        for key, value in values.items():
            ok = isinstance(value, bool | int | float | str)
            out[f"{section}.{key}"] = value if ok else str(value)
    return out


class _TensorBoard:
    def __init__(self, run_dir: Path, config: dict[str, Any], config_yaml: str, start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        # purge_step: on resume, TensorBoard hides what an earlier attempt logged after the checkpoint, as
        # metrics.jsonl is trimmed to it.
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step or None)
        # Written into this run's own event file (SummaryWriter.add_hparams would make a second run folder).
        for summary in hparams(flat_config(config), {}):
            self.writer.file_writer.add_summary(summary)
        self.writer.add_text("config", "```yaml\n" + config_yaml + "```", start_step)

    def log(self, line: dict[str, Any]) -> None:
        for tag, value in scalars(line).items():
            self.writer.add_scalar(tag, value, line["step"])

    def close(self, ok: bool = True) -> None:
        self.writer.close()


class _MLflow:
    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            # MLflow 3 keeps the file store in maintenance mode and refuses it unless told; it still is the
            # one backend that needs no server and no database package.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (run_dir / "mlruns").resolve().as_uri()
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name("tunesmith")
        exp_id = experiment.experiment_id if experiment else self.client.create_experiment("tunesmith")
        self.run_id = self.client.create_run(exp_id, run_name=run_dir.resolve().name).info.run_id
        params = [Param(k, str(v)) for k, v in flat_config(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def log(self, line: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, line["step"]) for k, v in scalars(line).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, ok: bool = True) -> None:
        # KILLED: an exception, a Ctrl-C or a graceful stop ended the loop (the run may be resumed).
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "KILLED")


def make_trackers(names: list[str], run_dir: Path, config: Any, start_step: int = 0) -> list[Tracker]:
    """The trackers ``names`` asks for, each with ``config`` (a RunConfig) logged. Rank 0 calls this alone."""
    check_trackers(names)
    made: list[Tracker] = []
    try:
        for name in names:
            if name == "tensorboard":
                made.append(_TensorBoard(run_dir, config.model_dump(mode="json"), config.to_yaml(), start_step))
            else:
                made.append(_MLflow(run_dir, config.model_dump(mode="json")))
    except BaseException:
        close_trackers(made, ok=False)
        raise
    return made


def close_trackers(trackers: list[Tracker], ok: bool = True) -> None:
    """Close every tracker, even when one fails to; ``ok``: the loop ended without an exception."""
    errors = []
    for tracker in trackers:
        try:
            tracker.close(ok)
        except Exception as e:  # the others still close; the first failure is raised after
            errors.append(e)
    if errors:
        raise errors[0]
