"""The local fine-tuning jobs API through the official openai client: upload, create, events, succeed,
chat with the result; cancel; a server killed (SIGKILL) mid-job whose job resumes and completes after
restart; and a server killed mid-upload that leaves no half-registered file. After each kill the SQLite
database passes PRAGMA integrity_check."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from .conftest import chat_rows, write_jsonl
from .serve_helpers import client, start_server, stop_server

DONE = ("succeeded", "failed", "cancelled")


def wait_for(what: str, check: Callable[[], Any], timeout: float = 180, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def upload(c: openai.OpenAI, path: Path) -> str:
    with open(path, "rb") as f:
        return c.files.create(file=f, purpose="fine-tune").id


def integrity(home: Path) -> str:
    with sqlite3.connect(home / "serve" / "state.db") as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def job_dir(home: Path, job_id: str) -> Path:
    return home / "serve" / "jobs" / job_id


def training_stopped(home: Path, job_id: str) -> bool:
    """True once no training process holds the job's lock (the lock dies with its process)."""
    lock = job_dir(home, job_id).with_suffix(".lock")
    if not lock.exists():
        return True
    with open(lock) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
        return True


def test_full_jobs_flow(jobs_server: tuple[str, Path], tmp_path: Path) -> None:
    url, home = jobs_server
    c = client(url, key="sk-unused")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "robot", "content": "hi"}]}\n', encoding="utf-8")
    with pytest.raises(openai.BadRequestError, match="unknown role 'robot'"):
        upload(c, bad)
    file_id = upload(c, write_jsonl(tmp_path / "train.jsonl", chat_rows(24)))
    assert c.files.retrieve(file_id).filename == "train.jsonl"
    assert file_id in [f.id for f in c.files.list()]
    with pytest.raises(openai.NotFoundError):
        c.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id)
    with pytest.raises(openai.BadRequestError):
        c.fine_tuning.jobs.create(model="tiny", training_file="file-" + "0" * 24)
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve("../../etc/passwd")

    job = c.fine_tuning.jobs.create(
        model="tiny",
        training_file=file_id,
        suffix="colours",
        seed=3,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 5}},
            "tunesmith": {"method": "lora", "lora_r": 4},
        },
    )
    assert job.status in ("queued", "running") and job.model == "tiny"
    assert job.id in [j.id for j in c.fine_tuning.jobs.list()]
    with pytest.raises(openai.BadRequestError, match="used by a job"):
        c.files.delete(file_id)

    job = wait_for("the job to finish", lambda: (j := c.fine_tuning.jobs.retrieve(job.id)).status in DONE and j)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:tiny:colours:{job.id[6:14]}"
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.learning_rate_multiplier == pytest.approx(5)
    assert (job_dir(home, job.id) / "run.json").is_file()

    events = c.fine_tuning.jobs.list_events(job.id, limit=100).data
    metrics = [e for e in events if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == list(range(12, 0, -1)), "12 steps, newest first"
    assert all(isinstance(e.data["train_loss"], float) for e in metrics)
    assert any("successfully completed" in e.message for e in events)
    page = c.fine_tuning.jobs.list_events(job.id, limit=2)
    assert len(page.data) == 2 and page.has_more
    assert c.fine_tuning.jobs.list_events(job.id, after=page.data[-1].id, limit=1).data[0].id == events[2].id
    checkpoints = c.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints and checkpoints[0].step_number == 12 and checkpoints[0].metrics.train_loss is not None

    # Servable at once, without a restart.
    assert job.fine_tuned_model in [m.id for m in c.models.list()]
    reply = c.chat.completions.create(
        model=job.fine_tuned_model, messages=[{"role": "user", "content": "Paint the car red"}], max_tokens=8
    )
    assert reply.model == job.fine_tuned_model and reply.choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.BadRequestError, match="already succeeded"):
        c.fine_tuning.jobs.cancel(job.id)


def test_a_dpo_job_through_the_official_client(jobs_server: tuple[str, Path], tmp_path: Path) -> None:
    """method.type dpo, exactly as the SDK sends it: the pairs train with DPO and the job says so."""
    url, home = jobs_server
    c = client(url, key="sk-unused")
    pairs = Path(__file__).resolve().parents[1] / "src/tunesmith/examples/support_triage_pairs/train.jsonl"
    rows = [json.loads(x) for x in pairs.read_text().splitlines()[:16]]
    file_id = upload(c, write_jsonl(tmp_path / "pairs.jsonl", rows))
    sft_file = upload(c, write_jsonl(tmp_path / "sft.jsonl", chat_rows(8)))
    dpo = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 1, "batch_size": 4}}}
    with pytest.raises(openai.BadRequestError, match="DPO trains on preference pairs"):
        c.fine_tuning.jobs.create(model="tiny", training_file=sft_file, method=dpo)
    job = c.fine_tuning.jobs.create(model="tiny", training_file=file_id, method={**dpo, "tunesmith": {"lora_r": 4}})
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2
    job = wait_for("the job to finish", lambda: (j := c.fine_tuning.jobs.retrieve(job.id)).status in DONE and j)
    assert job.status == "succeeded", job.error
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == pytest.approx(0.2)
    assert job.method.dpo.hyperparameters.n_epochs == 1 and job.hyperparameters.batch_size == 4
    run = json.loads((job_dir(home, job.id) / "run.json").read_text())
    assert run["objective"] == "dpo" and run["beta"] == 0.2 and run["steps"] == 4
    lines = [json.loads(x) for x in (job_dir(home, job.id) / "metrics.jsonl").read_text().splitlines()]
    assert all("preference_accuracy" in x for x in lines if "loss" in x)


def test_cancel_stops_training(jobs_server: tuple[str, Path], tmp_path: Path) -> None:
    url, home = jobs_server
    c = client(url, key="sk-unused")
    file_id = upload(c, write_jsonl(tmp_path / "train.jsonl", chat_rows(24)))
    job = c.fine_tuning.jobs.create(
        model="tiny", training_file=file_id, hyperparameters={"n_epochs": 100}, method={"tunesmith": {"lora_r": 4}}
    )
    wait_for("training to start", lambda: (job_dir(home, job.id) / "metrics.jsonl").is_file(), timeout=120)
    cancelled = c.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    wait_for("the training process to stop", lambda: training_stopped(home, job.id), timeout=30)
    time.sleep(1)
    after = c.fine_tuning.jobs.retrieve(job.id)
    assert after.status == "cancelled" and after.fine_tuned_model is None
    assert not (job_dir(home, job.id) / "run.json").exists()
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model=f"ft:tiny::{job.id[6:14]}", messages=[{"role": "user", "content": "hi"}])


def test_server_killed_mid_job_resumes(tmp_path: Path, tiny_model_dir: Path) -> None:
    home = tmp_path / "home"
    proc, url = start_server([f"tiny={tiny_model_dir}"], home, tmp_path / "server1.log")
    try:
        c = client(url, key="sk-unused")
        file_id = upload(c, write_jsonl(tmp_path / "train.jsonl", chat_rows(24)))
        job = c.fine_tuning.jobs.create(
            model="tiny",
            training_file=file_id,
            hyperparameters={"n_epochs": 8, "batch_size": 4},
            method={"tunesmith": {"lora_r": 4, "save_every": 4}},
        )
        run = job_dir(home, job.id)
        wait_for("a checkpoint", lambda: list(run.glob("checkpoints/step-*")), every=0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    wait_for("the orphaned training process to exit", lambda: training_stopped(home, job.id), timeout=30)
    assert not (run / "run.json").exists(), "killed mid-job: the run is not finished yet"
    assert integrity(home) == "ok"
    with sqlite3.connect(home / "serve" / "state.db") as db:
        assert db.execute("SELECT status FROM jobs WHERE id = ?", (job.id,)).fetchone() == ("running",)
    resume_step = max(int(p.name.split("-")[1]) for p in run.glob("checkpoints/step-*"))
    before = (run / "metrics.jsonl").read_text().splitlines()[:resume_step]

    proc, url = start_server([f"tiny={tiny_model_dir}"], home, tmp_path / "server2.log")
    try:
        c = client(url, key="sk-unused")
        done = wait_for("the job to finish", lambda: (j := c.fine_tuning.jobs.retrieve(job.id)).status in DONE and j)
        assert done.status == "succeeded", done.error
        messages = [e.message for e in c.fine_tuning.jobs.list_events(job.id, limit=100).data]
        assert any("resumed from its last checkpoint" in m for m in messages), messages
        steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(1, 49)), "the resumed run continues its metrics without gaps or repeats"
        after = (run / "metrics.jsonl").read_text().splitlines()[:resume_step]
        assert after == before, f"steps 1-{resume_step} come from before the kill: the job resumed, not restarted"
        reply = c.chat.completions.create(
            model=done.fine_tuned_model, messages=[{"role": "user", "content": "hi"}], max_tokens=8
        )
        assert reply.choices[0].message.role == "assistant"
    finally:
        stop_server(proc)
    assert integrity(home) == "ok"


def start_upload(url: str, line: bytes, total: int, sent: int) -> socket.socket:
    """A multipart upload announcing `total` bytes of which only the first `sent` are sent (then it stalls)."""
    boundary = "tunesmith-kill-test"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
            "Content-Type: application/jsonl\r\n\r\n").encode()  # fmt: skip
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(
        f"POST /v1/files HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer sk-unused\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {total}\r\n\r\n".encode()
        + head
    )
    body = line * (sent // len(line))
    sock.sendall(body)
    return sock


@pytest.mark.slow
def test_server_killed_mid_upload(tmp_path: Path, tiny_model_dir: Path) -> None:
    """SIGKILL while one large upload still streams in and another is being written to disk: after restart the
    database is intact, the upload that had completed is there byte for byte, and nothing of the two cut
    ones is registered or left on disk."""
    home = tmp_path / "home"
    files = home / "serve" / "files"
    data = write_jsonl(tmp_path / "train.jsonl", chat_rows(24))
    line = (json.dumps(chat_rows(1)[0]) + "\n").encode()
    big = line * ((24 << 20) // len(line))
    proc, url = start_server([f"tiny={tiny_model_dir}"], home, tmp_path / "server1.log")
    try:
        kept = upload(client(url, key="sk-unused"), data)
        stalled = start_upload(url, line, total=64 << 20, sent=8 << 20)  # 8 MB of 64 MB, then nothing

        def send_big() -> None:
            with contextlib.suppress(openai.APIConnectionError):
                client(url, key="sk-unused").files.create(file=("big.jsonl", big), purpose="fine-tune")

        sender = threading.Thread(target=send_big, daemon=True)
        sender.start()
        # The complete upload is being written to its temp file: kill now.
        wait_for("the upload's temp file", lambda: any(files.glob(".upload-*")), timeout=120, every=0.005)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    stalled.close()
    sender.join(timeout=30)
    assert any(files.glob(".upload-*")), "killed while the temp file was there"
    assert integrity(home) == "ok"
    with sqlite3.connect(home / "serve" / "state.db") as db:
        assert db.execute("SELECT id FROM files").fetchall() == [(kept,)]
    # The one moment too short to hit by timing (renamed into place, row not yet written) leaves this:
    orphan = files / f"file-{'ab' * 12}.jsonl"
    orphan.write_bytes(line * 1000)

    proc, url = start_server([f"tiny={tiny_model_dir}"], home, tmp_path / "server2.log")
    try:
        c = client(url, key="sk-unused")
        assert [f.id for f in c.files.list()] == [kept]
        assert c.files.content(kept).content == data.read_bytes()
        with pytest.raises(openai.NotFoundError):
            c.files.retrieve(orphan.stem)
        assert sorted(p.name for p in files.iterdir()) == sorted([f"{kept}.jsonl", ".lock"])
        assert upload(c, data) != kept, "uploads work after the restart"
    finally:
        stop_server(proc)
    assert integrity(home) == "ok"
