"""`--report-to tensorboard,mlflow`: a real run on the tiny model, read back with each tracker's own reader, logs
exactly what metrics.jsonl holds; a missing tracker package is one clear line before any training."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tunesmith import runs
from tunesmith.cli.main import main
from tunesmith.config import load_config
from tunesmith.train.trackers import scalars

from .conftest import chat_rows, write_jsonl


def cli(argv: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`tunesmith ARGS` in this process, through main(): its error handling and exit codes."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
        raise SystemExit(0)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def expected(run: Path) -> dict[str, dict[int, float]]:
    """metrics.jsonl as tracker series: {"train/loss": {step: value}, "val/loss": {...}, ...}."""
    series: dict[str, dict[int, float]] = {}
    for line in (run / runs.METRICS).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        for tag, value in scalars(record).items():
            series.setdefault(tag, {})[record["step"]] = value
    return series


def tensorboard_series(run: Path) -> tuple[dict[str, dict[int, float]], set[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars_ = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    return scalars_, set(acc.Tags()["tensors"])


def mlflow_series(run: Path) -> tuple[dict[str, dict[int, float]], dict[str, str], str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient((run / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("tunesmith")
    (found,) = client.search_runs([experiment.experiment_id])
    history = {
        tag: {m.step: m.value for m in client.get_metric_history(found.info.run_id, tag)} for tag in found.data.metrics
    }
    return history, found.data.params, found.info.status


def test_report_to_both_logs_what_metrics_jsonl_holds(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # (set by the tracker too; scoped to this test here)
    data = write_jsonl(tmp_path / "train.jsonl", chat_rows(24))
    val = write_jsonl(tmp_path / "val.jsonl", chat_rows(6, seed=1))
    run = tmp_path / "run"
    args = ["--data", data, "--val", val, "--max-steps", 4, "--batch-size", 4, "--micro-batch-size", 2]
    args += ["--eval-every", 2, "--max-len", 256, "--no-compile", "--report-to", "tensorboard,mlflow"]
    code, out, err = cli(["train", "--out", run, "--model", tiny_model_dir, *args], capsys)
    assert code == 0, out + err
    want = expected(run)
    assert {"train/loss", "train/lr", "val/loss"} <= set(want)
    assert sorted(want["train/loss"]) == [1, 2, 3, 4] and sorted(want["val/loss"]) == [2, 4]

    tb, tensors = tensorboard_series(run)
    assert set(tb) == set(want)
    for tag, points in want.items():
        assert tb[tag] == pytest.approx(points, rel=1e-6), tag  # TensorBoard stores float32
    assert "config/text_summary" in tensors  # the resolved config, as YAML

    ml, params, status = mlflow_series(run)
    assert ml == want  # MLflow keeps the float64 exactly
    cfg = load_config(run / runs.CONFIG_YAML)
    assert params["train.max_steps"] == "4" and params["model.name"] == str(tiny_model_dir)
    assert params["train.learning_rate"] == str(cfg.train.learning_rate)  # the resolved value, not None
    assert params["train.report_to"] == "['tensorboard', 'mlflow']"
    assert status == "FINISHED"


def test_a_ctrl_c_still_closes_the_trackers(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in the first validation (after step 2): what was logged is on disk, and MLflow's run is KILLED."""
    import tunesmith.train.validation as validation

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(validation, "validate", interrupted)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    data = write_jsonl(tmp_path / "train.jsonl", chat_rows(24))
    val = write_jsonl(tmp_path / "val.jsonl", chat_rows(6, seed=1))
    run = tmp_path / "run"
    args = ["--data", data, "--val", val, "--max-steps", 4, "--batch-size", 4, "--micro-batch-size", 2]
    args += ["--eval-every", 2, "--max-len", 256, "--no-compile", "--report-to", "mlflow", "--report-to", "tensorboard"]
    code, out, err = cli(["train", "--out", run, "--model", tiny_model_dir, *args], capsys)
    assert code == 130, out + err
    want = expected(run)
    assert sorted(want["train/loss"]) == [1, 2] and "val/loss" not in want
    ml, _, status = mlflow_series(run)
    assert ml == want and status == "KILLED"
    tb, _ = tensorboard_series(run)
    assert tb["train/loss"] == pytest.approx(want["train/loss"], rel=1e-6)  # flushed by the close


def test_a_missing_tracker_package_stops_the_run_before_training(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    data = write_jsonl(tmp_path / "train.jsonl", chat_rows(8))
    run = tmp_path / "run"
    code, out, err = cli(
        ["train", "--out", run, "--model", tiny_model_dir, "--data", data, "--report-to", "mlflow"], capsys
    )
    assert code == 2
    lines = [ln for ln in (out + err).splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert "--report-to mlflow needs the mlflow-skinny package: pip install 'tunesmith[trackers]'" in lines[0]
    assert not run.exists()  # refused before the run folder was made, let alone a step trained


def test_report_to_accepts_one_list_several_flags_and_yaml() -> None:
    both = ["tensorboard", "mlflow"]
    assert load_config(None, {"train": {"report_to": ["tensorboard,mlflow"]}}).train.report_to == both
    assert load_config(None, {"train": {"report_to": ["tensorboard", "mlflow", "tensorboard"]}}).train.report_to == both
    assert load_config(None, {"train": {"report_to": "mlflow"}}).train.report_to == ["mlflow"]
    assert load_config(None).train.report_to == []
    with pytest.raises(Exception, match="report_to"):
        load_config(None, {"train": {"report_to": ["wandb"]}})


def test_scalars_names_train_and_validation_fields() -> None:
    assert scalars({"step": 3, "epoch": 1, "loss": 2.5, "lr": 1e-3, "skipped": True, "note": "x"}) == {
        "train/epoch": 1.0,
        "train/loss": 2.5,
        "train/lr": 1e-3,
    }
    assert scalars({"step": 4, "val_loss": 1.25, "val_tokens": 100}) == {"val/loss": 1.25, "val/tokens": 100.0}
