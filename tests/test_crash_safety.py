"""Nothing lost: real `tunesmith train` processes killed with SIGKILL, stopped with SIGINT/SIGTERM, or out of
disk space, then resumed with --resume and no manual clean-up. On the tiny model, so each run takes seconds."""

from __future__ import annotations

import errno
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from tunesmith import runs
from tunesmith.errors import UserError
from tunesmith.train import checkpoint
from tunesmith.train.checkpoint import list_checkpoints, verify
from tunesmith.train.pipeline import run_training

from .conftest import chat_rows, write_jsonl
from .test_train import make_cfg

STEPS = 12


def write_config(path: Path, model_dir: Path, data: Path, **train: object) -> Path:
    settings = {
        "batch_size": 4,
        "micro_batch_size": 2,
        "learning_rate": 5e-3,
        "epochs": 5,
        "max_steps": STEPS,
        "save_every": 1,
        "precision": "fp32",
        **train,
    }
    cfg = {
        "model": {"name": str(model_dir)},
        "data": {"train": str(data), "val_split": 0.0, "max_len": 256},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.1},  # dropout on, so the RNG state must survive too
        "train": settings,
    }
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def start(args: list[str], logs: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A real `tunesmith` process; output goes to files so a full pipe can never stall it."""
    logs.mkdir(parents=True, exist_ok=True)
    n = len(list(logs.glob("*.out")))
    out, err = open(logs / f"{n}.out", "w"), open(logs / f"{n}.err", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunesmith", *map(str, args)],
        stdout=out,
        stderr=err,
        env={**os.environ, "COLUMNS": "400", **(env or {})},
    )
    proc.out_path, proc.err_path = logs / f"{n}.out", logs / f"{n}.err"  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen, timeout: float = 180) -> tuple[int, str, str]:
    rc = proc.wait(timeout=timeout)
    return rc, proc.out_path.read_text(), proc.err_path.read_text()  # type: ignore[attr-defined]


def wait_for(proc: subprocess.Popen, ready, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            _, out, err = finish(proc)
            pytest.fail(f"the run ended (rc {proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def logged_steps(run: Path) -> list[int]:
    path = run / runs.METRICS
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue  # a line the kill tore in half
    return steps


def newest_step(run: Path) -> int:
    done = [c for c in list_checkpoints(run / runs.CHECKPOINTS) if verify(c) is None]
    return int(done[-1].name.split("-")[1]) if done else 0


def temp_dirs(run: Path, step: int | None = None) -> list[Path]:
    pattern = f".tmp-step-{step:06d}-*" if step is not None else ".tmp-*"
    return list((run / runs.CHECKPOINTS).glob(pattern))


def adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "adapter" / "adapter_model.safetensors")


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", chat_rows(24))
    cfg = write_config(tmp_path / "cfg.yaml", tiny_model_dir, data)
    logs = tmp_path / "logs"
    # The uninterrupted run, in this process: the same config through the same library call as the CLI's.
    run_training(yaml_cfg(cfg), tmp_path / "straight", skip_check=True)

    run, rng = tmp_path / "run", random.Random(1129)
    # Each kill lands at a seeded random moment of one kind; "checkpoint" kills land inside a checkpoint
    # write for sure, because the test hook holds each write open for 2 x 0.4 s. (--skip-check: the data
    # doctor has its own tests, and each process here should spend its time training.)
    landed = []
    for i, moment in enumerate(["startup", "checkpoint", "step", "checkpoint"]):
        # Targets are >= 2 steps past the newest checkpoint, so a line or temp folder the previous kill left
        # behind (which the new process removes as it starts) can never be mistaken for new progress.
        target = newest_step(run) + rng.randint(2, 3)
        hold = {"TUNESMITH_TEST_CHECKPOINT_DELAY": "0.4"} if moment == "checkpoint" else {}
        proc = start(["train", "--config", cfg, "--out", run, "--skip-check", *(["--resume"] if i else [])], logs, hold)
        if moment == "startup":
            wait_for(proc, run.is_dir, "the run folder exists")
            time.sleep(rng.uniform(0.0, 2.0))
        elif moment == "step":
            wait_for(proc, lambda t=target: t in logged_steps(run), f"step {target}")
            time.sleep(rng.uniform(0.0, 0.05))
        else:
            wait_for(proc, lambda t=target: bool(temp_dirs(run, t)), f"checkpoint {target} being written")
            time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        if moment == "checkpoint":
            assert temp_dirs(run, target), "the kill landed inside the checkpoint write"
        landed.append((moment, target, newest_step(run)))

    rc, out, err = finish(start(["train", "--config", cfg, "--out", run, "--skip-check", "--resume"], logs))
    assert rc == 0, out + err
    assert "Traceback" not in err
    a, b = adapter(tmp_path / "straight"), adapter(run)
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=k)
    assert logged_steps(run) == list(range(1, STEPS + 1)), "metrics continue without gaps or repeats"
    assert not temp_dirs(run) and not [p for p in run.iterdir() if p.name.startswith(runs.TEMP_PREFIXES)]
    assert len(list_checkpoints(run / runs.CHECKPOINTS)) <= 2  # keep_checkpoints
    assert runs.read_run(run).steps == STEPS
    assert landed[-1][2] >= 3, f"the kills reached well into the run: {landed}"


def resume_command(err: str) -> list[str]:
    lines = [ln for ln in err.splitlines() if "resume with:" in ln or "with: tunesmith" in ln]
    assert len(lines) == 1, err
    args = shlex.split(lines[0].split("with: ", 1)[1])
    assert args[:2] == ["tunesmith", "train"] and "--resume" in args
    return args[1:]


@pytest.mark.slow
def test_ctrl_c_and_sigterm_checkpoint_at_the_step_boundary_and_print_the_resume_command(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", chat_rows(24))
    # No scheduled checkpoint for 1000 steps: the one we find can only come from the signal.
    cfg = write_config(tmp_path / "cfg.yaml", tiny_model_dir, data, max_steps=400, epochs=100, save_every=1000)
    run, logs = tmp_path / "run", tmp_path / "logs"

    proc = start(["train", "--config", cfg, "--out", run], logs)
    wait_for(proc, lambda: len(logged_steps(run)) >= 2, "two steps")
    proc.send_signal(signal.SIGINT)
    rc, _, err = finish(proc, timeout=60)
    assert rc == 130, err
    assert "Traceback" not in err
    stopped = logged_steps(run)[-1]
    assert [c.name for c in list_checkpoints(run / runs.CHECKPOINTS)] == [f"step-{stopped:06d}"]
    assert verify(run / runs.CHECKPOINTS / f"step-{stopped:06d}") is None
    assert not runs.is_run(run), "an interrupted run does not look finished"

    # The printed command continues the run; SIGTERM stops it the same way, with exit code 143.
    proc = start(resume_command(err), logs, {"TUNESMITH_QUIET": "0"})  # so it says where it resumed from
    wait_for(proc, lambda: len(logged_steps(run)) >= stopped + 2, "two more steps")
    proc.send_signal(signal.SIGTERM)
    rc, out, err = finish(proc, timeout=60)
    assert rc == 143, err
    assert f"Resuming from step-{stopped:06d}" in out and "Traceback" not in err
    resume_command(err)
    steps = logged_steps(run)
    assert steps == list(range(1, steps[-1] + 1)) and steps[-1] > stopped
    assert list_checkpoints(run / runs.CHECKPOINTS)[-1].name == f"step-{steps[-1]:06d}"


@pytest.mark.slow
def test_a_second_ctrl_c_aborts_at_once(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", chat_rows(24))
    cfg = write_config(tmp_path / "cfg.yaml", tiny_model_dir, data, max_steps=400, epochs=100, save_every=1000)
    run = tmp_path / "run"
    # The hook holds the checkpoint the first Ctrl-C asks for open for 2 x 5 s; the second must not wait.
    proc = start(["train", "--config", cfg, "--out", run], tmp_path / "logs", {"TUNESMITH_TEST_CHECKPOINT_DELAY": "5"})
    wait_for(proc, lambda: len(logged_steps(run)) >= 1, "a step")
    proc.send_signal(signal.SIGINT)
    wait_for(proc, lambda: bool(temp_dirs(run)), "the checkpoint write")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    # Timed to the message, not to the process exit: the interpreter's own clean-up after it varies with load.
    wait_for(proc, lambda: "aborted" in proc.err_path.read_text(), "the abort", timeout=60)  # type: ignore[attr-defined]
    assert time.monotonic() - t0 < 4, "the second Ctrl-C waited for the checkpoint (held open for 10 s)"
    rc, _, err = finish(proc, timeout=60)
    assert rc == 130 and "Traceback" not in err, err
    assert not temp_dirs(run) and not list_checkpoints(run / runs.CHECKPOINTS), "no half-written checkpoint is left"


# -- disk space -----------------------------------------------------------------------------------------


def assert_checkpoints_intact(run: Path, steps: list[int]) -> None:
    found = list_checkpoints(run / runs.CHECKPOINTS)
    assert [c.name for c in found] == [f"step-{s:06d}" for s in steps]
    for c in found:
        assert verify(c) is None, c  # the manifest's SHA-256 covers every file, shards included
        if not checkpoint.is_sharded(c):  # (full fine-tuning: torch.distributed.checkpoint shards)
            checkpoint.load_checkpoint(c)
    assert not temp_dirs(run), "the failed save left its temporary folder behind"


def test_a_full_disk_mid_save_damages_nothing_and_the_run_resumes(
    tmp_path: Path, tiny_model_dir: Path, chat_file: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The disk fills up halfway through checkpoint 3 (injected ENOSPC after real bytes were written)."""
    from tunesmith.cli.main import main

    cfg = write_config(tmp_path / "cfg.yaml", tiny_model_dir, chat_file, max_steps=4)
    real_save, calls = torch.save, []

    def filling_save(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 5:  # optimizer.pt of the third checkpoint (two torch.save calls per checkpoint)
            Path(path).write_bytes(b"\0" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", filling_save)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(cfg), "--out", str(run)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "could not save checkpoint step-000003" in err and "No space left on device" in err and "intact" in err
    assert_checkpoints_intact(run, [1, 2])

    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    result = run_training(yaml_cfg(cfg), run, resume=True)
    assert result.loop.step == 4 and logged_steps(run) == [1, 2, 3, 4]


def yaml_cfg(path: Path):
    from tunesmith.config import load_config

    return load_config(path)


def test_free_space_is_checked_before_each_save(
    tmp_path: Path, tiny_model_dir: Path, chat_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_usage, calls = shutil.disk_usage, []

    def usage(path):  # the disk is full from the third checkpoint on
        calls.append(path)
        u = real_usage(path)
        return u._replace(free=1000) if len(calls) >= 3 else u

    monkeypatch.setattr(checkpoint.shutil, "disk_usage", usage)
    run = tmp_path / "run"
    with pytest.raises(UserError, match=r"not enough disk space for checkpoint step-000003 .* intact"):
        run_training(yaml_cfg(write_config(tmp_path / "c.yaml", tiny_model_dir, chat_file, max_steps=4)), run)
    assert_checkpoints_intact(run, [1, 2])


def can_mount_tmpfs(where: Path) -> bool:
    where.mkdir()
    probe = ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {shlex.quote(str(where))}"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.slow
def test_a_really_full_disk_stops_the_run_cleanly(tmp_path: Path, tiny_model_dir: Path, chat_file: Path) -> None:
    """A real 48 MB tmpfs (in a user + mount namespace, no root needed): full fine-tuning of the tiny model
    writes ~19 MB checkpoints, so the third one does not fit."""
    mnt = tmp_path / "mnt"
    if not can_mount_tmpfs(mnt):
        pytest.skip("cannot mount a tmpfs in a user namespace here")
    cfg = write_config(tmp_path / "cfg.yaml", tiny_model_dir, chat_file, method="full", max_steps=5)
    script = (
        'mount -t tmpfs -o size=48m tmpfs "$1" && "$2" -m tunesmith train --config "$3" --out "$1/run"; '
        'rc=$?; cp -a "$1/run" "$4"; exit $rc'
    )
    copy = tmp_path / "run"
    args = [str(mnt), sys.executable, str(cfg), str(copy)]
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", *args], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "not enough disk space for checkpoint step-000003" in proc.stderr
    assert_checkpoints_intact(copy, [1, 2])


# -- a run folder is never continued with other inputs --------------------------------------------------


def test_resume_refuses_other_config_data_or_model_without_force(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    data = write_jsonl(tmp_path / "d.jsonl", chat_rows(24))
    cfg = make_cfg(model, data, max_steps=4, save_every=2)
    run = tmp_path / "run"
    run_training(cfg, run, stop_after=2)

    with pytest.raises(UserError, match="was started with other settings"):
        run_training(make_cfg(model, data, max_steps=4, save_every=2, learning_rate=1e-3), run, resume=True)

    original = data.read_bytes()
    write_jsonl(data, chat_rows(24, seed=1))  # same file, same size of dataset, other rows
    with pytest.raises(UserError, match=r"was started with other training data \(see"):
        run_training(cfg, run, resume=True)
    data.write_bytes(original)

    weights = model / "model.safetensors"
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"was started with other model weights.*--force"):
        run_training(cfg, run, resume=True)

    result = run_training(cfg, run, resume=True, force=True)
    assert result.loop.step == 4 and runs.is_run(run)
    assert json.loads((run / runs.INPUTS_JSON).read_text())["model"] == runs.read_run(run).hashes.model


def test_non_finite_steps_are_skipped_then_the_run_stops_keeping_good_checkpoints(
    tmp_path: Path, tiny_model_dir: Path, chat_file: Path
) -> None:
    """A learning rate of 1e30 makes step 1's update overflow every later forward pass: steps 2-6 have a
    non-finite loss, are skipped and counted, and the fifth in a row stops the run with a clear message."""
    from tunesmith.train.loop import MAX_BAD_STEPS

    cfg = make_cfg(tiny_model_dir, chat_file, method="full", learning_rate=1e30, warmup_ratio=0.0, save_every=1)
    run = tmp_path / "run"
    with pytest.raises(UserError, match=f"training diverged: {MAX_BAD_STEPS} steps in a row had a non-finite"):
        run_training(cfg, run)
    assert logged_steps(run) == [1, 2, 3, 4, 5]
    newest = list_checkpoints(run / runs.CHECKPOINTS)[-1]
    assert newest.name == "step-000005" and verify(newest) is None
    # Full fine-tuning checkpoints are torch.distributed.checkpoint shards: read them back offline.
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    assert checkpoint.is_sharded(newest)
    loop = json.loads((newest / "state.json").read_text())["loop"]
    assert loop["skipped_steps"] == loop["bad_steps_in_row"] == 4
    dcp_to_torch_save(newest, tmp_path / "newest.pt")
    weights = torch.load(tmp_path / "newest.pt", weights_only=True)["weights"]
    assert weights and all(torch.isfinite(t).all() for t in weights.values()), "no NaN ever reaches the weights"
