"""The benchmarks run in smoke mode inside the suite, so they cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_smoke(script: str, out: Path, *args: str) -> subprocess.CompletedProcess:
    """``benchmarks/SCRIPT [ARGS] --smoke --json OUT`` in a fresh interpreter, as a user runs it; it must exit 0."""
    cmd = [sys.executable, str(REPO / "benchmarks" / script), *args, "--smoke", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_train_benchmark_smoke(tmp_path: Path, default_model_dir: Path) -> None:
    out = tmp_path / "bench.json"
    proc = run_smoke("train_vs_trl.py", out)
    assert "| non-pad tokens/s |" in proc.stdout
    results = json.loads(out.read_text())["results"]
    for tool in ("tunesmith", "trl"):
        med = next(iter(results.values()))[tool]
        assert med["tokens_per_s"] > 0 and med["peak_rss_mb"] > 0 and 0 <= med["padding_fraction"] < 1
        assert med["val_loss"] > 0
    machine = json.loads(out.read_text())["machine"]
    assert machine["model"] and machine["gemm_peak_tflops"]["fp32"] > 0, "a result says where it ran"


@pytest.mark.slow
def test_whole_command_benchmark_smoke(tmp_path: Path, default_model_dir: Path) -> None:
    """`tunesmith train` with its defaults and the TRL script both run as whole processes, timed from outside."""
    out = tmp_path / "whole.json"
    proc = run_smoke("train_vs_trl.py", out, "--whole")
    assert "| wall time (s) |" in proc.stdout and "machine:" in proc.stderr
    record = json.loads(out.read_text())
    assert record["mode"] == "whole" and record["machine"]["cores"] >= 1
    for tool in ("tunesmith", "trl"):
        med = next(iter(record["results"].values()))[tool]
        assert med["wall_s"] > 0 and med["peak_rss_mb"] > 100, "a whole process, torch imported"


@pytest.mark.slow
def test_generate_benchmark_smoke(tmp_path: Path, default_model_dir: Path) -> None:
    out = tmp_path / "gen.json"
    run_smoke("generate_vs_hf.py", out)
    result = json.loads(out.read_text())
    assert result["tunesmith"]["decode_tokens_per_s"] > 0 and result["hf"]["ttft_s"] > 0 and result["ratio"] > 0
    ab = result["cache_ab"]  # the growing KV cache against HF's default: same tokens, both timed
    assert ab["identical_tokens"] is True and ab["growing"]["decode_tokens_per_s"] > 0 and ab["ratio"] > 0


def test_dpo_benchmark_smoke(tmp_path: Path, default_model_dir: Path) -> None:
    out = tmp_path / "dpo.json"
    proc = run_smoke("dpo_vs_trl.py", out)
    result = json.loads(out.read_text())
    for tool in ("tunesmith", "trl"):
        m = result["medians"][tool]
        assert m["pairs_per_s"] > 0 and m["peak_rss_mb"] > 0 and 0 <= m["preference_accuracy"] <= 1
    assert "pairs/s" in proc.stdout


def test_grpo_benchmark_smoke(tmp_path: Path, default_model_dir: Path) -> None:
    out = tmp_path / "grpo.json"
    proc = run_smoke("grpo_vs_trl.py", out)
    result = json.loads(out.read_text())
    for tool in ("tunesmith", "trl"):
        m = result["medians"][tool]
        assert m["steps_per_s"] > 0 and m["sampling_s"] > 0 and m["training_s"] > 0 and m["peak_rss_mb"] > 0
    assert "steps/s" in proc.stdout and "sampling s/step" in proc.stdout
    assert result["machine"]["model"] and result["machine"]["gemm_peak_tflops"]  # where it ran, recorded


def test_forgetting_frontier_quick_grid(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The frontier sweep end to end on the tiny model: a run, its scores and forgetting, the JSON and the plot."""
    out = tmp_path / "frontier.json"
    args = ["--grid", "quick", "--only", "lr2e-4", "--model", str(tiny_model_dir), "--max-steps", "2"]
    args += ["--test-rows", "2", "--json", str(out), "--runs", str(tmp_path / "runs")]
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "forgetting_frontier.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    (run,) = data["runs"]
    assert run["config"] == "lr2e-4" and run["settings"]["learning_rate"] == 2e-4 and run["steps"] == 2
    assert run["perplexity_change"] == pytest.approx(run["perplexity"] / data["base"]["demo"]["perplexity"] - 1)
    assert 0 <= run["field_accuracy"] <= 1 and len(run["probe_during_training"]) >= 1
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert "| demo | lr2e-4 |" in proc.stdout
