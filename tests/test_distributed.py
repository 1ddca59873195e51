"""Training on several processes (CPU, gloo, 2 processes, the tiny model), through the real CLI and torchrun:
the same losses and weights as one process, resume across process counts, and a dead rank ends the job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from .conftest import chat_rows, write_jsonl

STEPS = 6  # checkpoints at 3 and 6; the equivalence is checked over 5 steps and more
TOL = 1e-4


def run(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "TUNESMITH_DIST_TIMEOUT": "60", "TUNESMITH_QUIET": "0"}
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def tunesmith(*args: str) -> subprocess.CompletedProcess:
    return run("-m", "tunesmith", "train", "--skip-check", *args)  # (the data check has tests of its own)


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    """The cluster way: torchrun starts the processes and `python -m tunesmith` runs in each."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc-per-node={nproc}"]
    return run(*launcher, "-m", "tunesmith", "train", "--skip-check", *args)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("dist")
    data = write_jsonl(tmp / "train.jsonl", chat_rows(40, seed=5))
    val = write_jsonl(tmp / "val.jsonl", chat_rows(10, seed=6))
    configs = {}
    for method, lr, packing in (("lora", 5e-3, False), ("full", 2e-3, True)):
        cfg = {
            "model": {"name": str(tiny_model_dir)},
            "data": {"train": str(data), "val": str(val), "max_len": 256},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "train": {
                "method": method,
                "batch_size": 8,  # one process: 2 micro-batches of 4; two processes: 4 rows each
                "micro_batch_size": 4,
                "learning_rate": lr,
                "epochs": 2,
                "max_steps": STEPS,
                "eval_every": 3,
                "save_every": 3,
                "keep_checkpoints": 3,
                "packing": packing,
                "precision": "fp32",
                "seed": 1,
                # the KL-to-base default runs in one process only: off, so one and two processes train alike
                "kl_to_base": 0.0,
            },
        }
        configs[method] = tmp / f"{method}.yaml"
        configs[method].write_text(yaml.safe_dump(cfg))
    return {"tmp": tmp, **configs}


_runs: dict[str, Path] = {}


def trained(setup: dict[str, Path], name: str) -> Path:
    """Each reference run once per module: lora-1 / lora-2 / full-1 / full-2 (method - processes)."""
    if name not in _runs:
        method, nproc = name.split("-")
        out = setup["tmp"] / name
        if name == "full-2":
            torchrun(2, "--config", str(setup[method]), "--out", str(out))
        else:
            tunesmith("--config", str(setup[method]), "--out", str(out), "--nproc", nproc)
        _runs[name] = out
    return _runs[name]


def losses(run_dir: Path) -> dict[int, float]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {x["step"]: x["loss"] for x in lines if "loss" in x}


def val_losses(run_dir: Path) -> dict[int, float]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {x["step"]: x["val_loss"] for x in lines if "val_loss" in x}


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    info = json.loads((run_dir / "run.json").read_text())
    folder = run_dir / info["weights_dir"]
    name = "adapter_model.safetensors" if info["method"] == "lora" else "model.safetensors"
    return load_file(folder / name)


def assert_same_run(a: Path, b: Path, steps: range) -> None:
    la, lb = losses(a), losses(b)
    assert sorted(la) == sorted(lb) == list(range(1, STEPS + 1))
    for step in steps:
        assert abs(la[step] - lb[step]) < TOL, (step, la[step], lb[step])
    va, vb = val_losses(a), val_losses(b)
    assert va.keys() == vb.keys() == {3, 6}
    assert all(abs(va[s] - vb[s]) < TOL for s in va), (va, vb)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and wa
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=TOL, rtol=0, msg=k)


@pytest.mark.slow
def test_ddp_lora_equals_one_process(setup: dict[str, Path]) -> None:
    one, two = trained(setup, "lora-1"), trained(setup, "lora-2")
    assert_same_run(one, two, range(1, STEPS + 1))
    info = json.loads((two / "run.json").read_text())
    assert "distributed: 2 processes (gloo" in " ".join(info["choices"])
    assert info["distributed"]["processes"] == 2 and info["distributed"]["backend"] == "gloo"  # a field too
    assert losses(one)[STEPS] < losses(one)[1], "it learned something, so the comparison means something"
    # The adapter actually moved (LoRA B starts at zero), so "equal" is not "both untouched".
    assert any(t.abs().max() > 1e-3 for k, t in weights(two).items() if "lora_B" in k)


@pytest.mark.slow
def test_fsdp2_full_finetune_equals_one_process(setup: dict[str, Path]) -> None:
    one, two = trained(setup, "full-1"), trained(setup, "full-2")
    assert_same_run(one, two, range(1, STEPS + 1))
    # Sharded checkpoints: one shard file per rank, and the consolidated model loads as a plain HF model.
    assert sorted(p.name for p in (two / "checkpoints" / "step-000006").glob("*.distcp")) == [
        "__0_0.distcp",
        "__1_0.distcp",
    ]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(two / "model")
    assert sum(p.numel() for p in model.parameters()) > 1e6


def crashed_copy(run_dir: Path, dest: Path) -> Path:
    """``run_dir`` as if the job had died between the step-3 and the step-6 checkpoints."""
    shutil.copytree(run_dir, dest)
    for gone in ("checkpoints/step-000006", "adapter", "model", "run.json"):
        path = dest / gone
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    assert (dest / "checkpoints" / "step-000003").is_dir()
    return dest


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "start", "resume"), [("lora", 2, 1), ("lora", 1, 2), ("full", 2, 1), ("full", 1, 2)]
)
def test_resume_with_another_process_count(setup: dict[str, Path], method: str, start: int, resume: int) -> None:
    reference = trained(setup, f"{method}-{start}")
    out = crashed_copy(reference, setup["tmp"] / f"{method}-{start}-then-{resume}")
    proc = tunesmith("--config", str(setup[method]), "--out", str(out), "--resume", "--nproc", str(resume))
    assert "Resuming from step-000003" in proc.stdout
    # The loss curve continues where it stopped, as the uninterrupted run had it, and ends in the same weights.
    assert_same_run(reference, out, range(4, STEPS + 1))


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(x) for x in text.split()]


def _rank_of(pid: int) -> str | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (FileNotFoundError, PermissionError):
        return None
    return next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"RANK=")), None)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the ranks through /proc")
def test_killing_one_rank_stops_the_job(setup: dict[str, Path]) -> None:
    cfg = yaml.safe_load(setup["lora"].read_text())
    cfg["train"].update(max_steps=5000, epochs=1000, eval_every=1000, save_every=1000)
    config = setup["tmp"] / "long.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = setup["tmp"] / "killed"
    env = {**os.environ, "TUNESMITH_DIST_TIMEOUT": "60"}
    cmd = [sys.executable, "-m", "tunesmith", "train", "--skip-check", "--config", str(config), "--out", str(out)]
    cmd += ["--nproc", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 120
        while not (out / "metrics.jsonl").is_file() or not (out / "metrics.jsonl").read_text():
            assert proc.poll() is None and time.time() < deadline, "training never started"
            time.sleep(0.2)
        ranks = {_rank_of(p): p for p in _children(proc.pid)}
        assert {"0", "1"} <= ranks.keys(), ranks
        os.kill(ranks["1"], signal.SIGKILL)
        t0 = time.time()
        _, err = proc.communicate(timeout=90)
        took = time.time() - t0
        print(f"the job stopped {took:.1f}s after rank 1 was killed")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert took < 60, f"the job took {took:.0f}s to stop after a rank died"
    assert "training failed: " in err and "rank 1 (signal SIGKILL)" in " ".join(err.split()), err[-2000:]
    assert not Path(f"/proc/{ranks['0']}").exists() or _rank_of(ranks["0"]) is None, "rank 0 was left running"
    assert not (out / "run.json").exists()


def test_launcher_reports_bad_input_before_starting_processes(setup: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "tunesmith", "train", "--config", str(setup["lora"]), "--out", str(tmp_path / "busy")]
    proc = subprocess.run([*cmd, "--nproc", "2"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "already holds files from an earlier, unfinished run" in " ".join(proc.stderr.split())


def test_estimate_per_process_memory(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tunesmith.config import load_config
    from tunesmith.train.estimate import estimate_training

    rows = chat_rows(16)
    f = write_jsonl(tmp_path / "e.jsonl", rows)
    cfg = load_config(
        None,
        {
            "model": {"name": str(tiny_model_dir)},
            "data": {"train": str(f), "max_len": 256},
            "train": {"precision": "fp32"},
        },
    )
    from tunesmith.data.formats import read_examples
    from tunesmith.data.render import Renderer
    from tunesmith.models.load import load_tokenizer

    kept = read_examples(f).examples
    lengths = [len(r.input_ids) for r in Renderer(load_tokenizer(str(tiny_model_dir))).render_all(kept)[0]]
    est = estimate_training(cfg, kept, lengths, [], nproc=4)
    full, lora = est.methods
    fr, lr = full.per_rank, lora.per_rank
    assert (fr["strategy"], lr["strategy"], fr["nproc"]) == ("fsdp2", "ddp", 4)
    # FSDP2 splits weights, gradients and AdamW state four ways; DDP replicates them.
    assert fr["weights"] == full.memory["weights"] // 4 and fr["optimizer"] == full.memory["optimizer"] // 4
    assert lr["weights"] == lora.memory["weights"] and lr["gradients"] == 2 * lora.memory["gradients"]
    assert fr["peak"] < full.memory["peak"] and lr["peak"] > lora.memory["peak"]
    assert fr["peak"] == sum(fr[k] for k in ("weights", "gradients", "optimizer", "unsharded", "activations"))


@pytest.mark.parametrize("pack", [False, True])
@pytest.mark.parametrize("world", [2, 3, 8])
def test_each_step_is_dealt_without_loss_or_duplication(pack: bool, world: int) -> None:
    """Every row of every step goes to exactly one rank, every rank makes the same number of forward passes,
    and none is larger than the step's largest single-process micro-batch."""
    import random

    from tunesmith.train.batches import plan_steps
    from tunesmith.train.distributed import PeerEngine

    rng = random.Random(world)
    lengths = [rng.randint(5, 120) for _ in range(37)]
    plan = plan_steps(lengths, 8, 2, 2, seed=3, pack=pack)
    engines = []
    for r in range(world):
        e = PeerEngine(torch.nn.Linear(1, 1))
        e.rank, e.world = r, world
        engines.append(e)

    def size(mb: list[list[int]]) -> int:
        return len(mb) * max(sum(lengths[i] for i in row) for row in mb)

    for step in plan:
        shares = [e.shard(step.micro_batches, lengths) for e in engines]
        assert len({len(mbs) for mbs, _ in shares}) == 1, "same number of forward passes on every rank"
        dealt = [row for mbs, live in shares for mb in mbs[:live] for row in mb]
        assert sorted(dealt) == sorted(row for mb in step.micro_batches for row in mb)
        budget = max(size(mb) for mb in step.micro_batches)
        assert all(size(mb) <= budget for mbs, _ in shares for mb in mbs)
        # Rows are dealt round-robin, so no rank holds more than its share (rounded up).
        n_rows = sum(len(mb) for mb in step.micro_batches)
        assert all(sum(len(mb) for mb in mbs[:live]) <= -(-n_rows // world) for mbs, live in shares)
