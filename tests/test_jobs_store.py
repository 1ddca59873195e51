"""The jobs store never lets a reader see a status without the events that announce it.

A client that sees `succeeded` reads the events next and expects "successfully completed" there (a fresh
clone's test_full_jobs_flow once failed on exactly this on a busy machine). These tests make the race
deterministic: every statement the store executes is followed by a read, from a separate connection, of
what any other client could see at that moment, and the invariant is checked there. Written as separate
statements (status, then events) the check fails right after the status update; in one transaction the
reader sees the old state until the commit, then all of it."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tunesmith.serve.job_metrics import estimate_finish
from tunesmith.serve.jobs import ACTIVE, Store, new_id
from tunesmith.serve.worker import MAX_ATTEMPTS, PAUSED_EXIT, Supervisor

# What must be among a job's events whenever a reader sees it in that status.
ANNOUNCED = {
    "succeeded": ("New fine-tuned model created", "The job has successfully completed"),
    "failed": ("Job failed:",),
    "cancelled": ("Job cancelled",),
}


def visible_violations(db: Path) -> list[str]:
    """Jobs whose status is visible to other connections without its announcing events."""
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as c:
        jobs = c.execute("SELECT id, status FROM jobs").fetchall()
        bad = []
        for job_id, status in jobs:
            messages = [m for (m,) in c.execute("SELECT message FROM events WHERE job_id = ?", (job_id,))]
            for needed in ANNOUNCED.get(status, ()):
                if not any(m.startswith(needed) for m in messages):
                    bad.append(f"{job_id} is {status} but has no {needed!r} event (events: {messages})")
        # A job's result files are registered files whenever the job names them.
        named = c.execute("SELECT id, result_files FROM jobs WHERE result_files IS NOT NULL").fetchall()
        for job_id, files in named:
            for file_id in json.loads(files):
                if c.execute("SELECT 1 FROM files WHERE id = ?", (file_id,)).fetchone() is None:
                    bad.append(f"{job_id} names result file {file_id}, which is not registered")
        return bad


class _Watched:
    """A connection that, after each statement, checks what other readers can see."""

    def __init__(self, conn: sqlite3.Connection, db: Path, seen: list[str]) -> None:
        self._conn, self._db, self._seen = conn, db, seen

    def execute(self, *args: Any) -> sqlite3.Cursor:
        cur = self._conn.execute(*args)
        self._seen.extend(visible_violations(self._db))
        return cur

    def executemany(self, *args: Any) -> sqlite3.Cursor:
        cur = self._conn.executemany(*args)
        self._seen.extend(visible_violations(self._db))
        return cur

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class CheckedStore(Store):
    def __init__(self, root: Path) -> None:
        self.violations: list[str] = []
        self.checking = False
        super().__init__(root)  # creates the schema, unchecked
        self.checking = True

    @contextlib.contextmanager
    def _conn(self) -> Iterator[Any]:
        with super()._conn() as c:
            yield _Watched(c, self.db, self.violations) if self.checking else c


def make_job(store: Store, status: str = "running", attempts: int = 0) -> str:
    job_id = new_id("ftjob")
    store.create_job(
        {
            "id": job_id,
            "created_at": int(time.time()),
            "model": "tiny",
            "base_source": "tiny",
            "training_file": "file-" + "0" * 24,
            "validation_file": None,
            "hyperparameters": {},
            "options": {},
            "suffix": None,
            "seed": 0,
            "status": status,
            "attempts": attempts,
        },
        events=[(f"Created fine-tuning job: {job_id}", "info")],
    )
    return job_id


def finished_process(code: int) -> subprocess.Popen:
    """A process that has exited with ``code`` (a negative code: killed by that signal)."""
    script = f"import os; os.kill(os.getpid(), {-code})" if code < 0 else f"raise SystemExit({code})"
    proc = subprocess.Popen([sys.executable, "-c", script])
    proc.wait(timeout=60)
    return proc


def watch_exit(store: Store, job_id: str, code: int) -> dict[str, Any]:
    """What the supervisor does when the training process of ``job_id`` has exited with ``code``."""
    sup = Supervisor(store)
    sup.proc, sup.job_id = finished_process(code), job_id
    sup._watch()
    job = store.get_job(job_id)
    assert job is not None
    return job


def messages(store: Store, job_id: str) -> list[str]:
    return [e["message"] for e in store.events(job_id)]


def test_succeeded_is_never_seen_before_its_events(tmp_path: Path) -> None:
    store = CheckedStore(tmp_path / "serve")
    job_id = make_job(store)
    run_dir = store.job_path(job_id)
    (run_dir / "weights").mkdir(parents=True)
    (run_dir / "weights" / "model.safetensors").write_bytes(b"")
    record = {"method": "lora", "base_model": "tiny", "weights_dir": "weights", "trained_tokens_seen": 123}
    (run_dir / "run.json").write_text(json.dumps(record))
    (run_dir / "metrics.jsonl").write_text(
        '{"step": 1, "loss": 2.123456789, "token_accuracy": 0.5, "elapsed_s": 1.0, "total_steps": 2}\n'
        '{"step": 2, "loss": 1.5, "token_accuracy": 0.75, "elapsed_s": 2.0, "total_steps": 2}\n'
        '{"step": 2, "val_loss": 1.25, "val_token_accuracy": 0.6}\n'
    )
    job = watch_exit(store, job_id, 0)
    assert job["status"] == "succeeded" and job["trained_tokens"] == 123
    assert store.violations == []
    assert "The job has successfully completed" in messages(store, job_id)
    # Its results CSV, registered with the status: OpenAI's columns, five decimals, empty cells for no value.
    [file_id] = job["result_files"]
    assert store.get_file(file_id)["purpose"] == "fine-tune-results"
    assert store.file_path(file_id).read_text() == (
        "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n1,2.12346,0.5,,\n2,1.5,0.75,1.25,0.6\n"
    )


def test_failed_is_never_seen_before_its_event(tmp_path: Path) -> None:
    store = CheckedStore(tmp_path / "serve")
    job_id = make_job(store)
    store.job_path(job_id, ".error").write_text(json.dumps({"code": "invalid_training_file", "message": "bad row"}))
    job = watch_exit(store, job_id, 3)
    assert job["status"] == "failed" and job["error"]["code"] == "invalid_training_file"
    assert store.violations == []
    assert "Job failed: bad row" in messages(store, job_id)


def test_retry_then_fail_after_max_attempts(tmp_path: Path) -> None:
    store = CheckedStore(tmp_path / "serve")
    job_id = make_job(store)
    job = watch_exit(store, job_id, -9)  # killed without a word: tried again
    assert job["status"] == "running" and job["attempts"] == 1
    assert any("exited with code -9; resuming" in m for m in messages(store, job_id))
    job = make_job(store, attempts=MAX_ATTEMPTS - 1)
    job = watch_exit(store, job, -9)
    assert job["status"] == "failed" and job["error"]["code"] == "training_interrupted"
    assert store.violations == []


def test_cancel_and_its_event_are_one_change(tmp_path: Path) -> None:
    store = CheckedStore(tmp_path / "serve")
    job_id = make_job(store, status="queued")
    # What POST /fine_tuning/jobs/{id}/cancel does.
    assert store.update_job(
        job_id, only_if=ACTIVE, status="cancelled", finished_at=int(time.time()), events=[("Job cancelled", "info")]
    )
    assert store.violations == []
    # A second cancel (or a late success) changes nothing and adds no event.
    assert not store.update_job(job_id, only_if=ACTIVE, status="cancelled", events=[("Job cancelled", "info")])
    assert messages(store, job_id).count("Job cancelled") == 1
    # The supervisor of a job that finishes after its cancel does not overwrite the status.
    assert watch_exit(store, job_id, 0)["status"] == "cancelled"


def test_events_roll_back_with_a_failed_update(tmp_path: Path) -> None:
    store = Store(tmp_path / "serve")
    job_id = make_job(store)
    with pytest.raises(sqlite3.OperationalError):
        store.update_job(job_id, status="succeeded", no_such_column=1, events=[("should not exist", "info")])
    assert store.get_job(job_id)["status"] == "running"
    assert "should not exist" not in messages(store, job_id)


def test_checker_catches_the_old_two_step_write(tmp_path: Path) -> None:
    """The check itself can fail: status first and events after, as the supervisor once did."""
    store = CheckedStore(tmp_path / "serve")
    job_id = make_job(store)
    store.update_job(job_id, status="succeeded")
    store.add_event(job_id, "New fine-tuned model created: x")
    store.add_event(job_id, "The job has successfully completed")
    assert store.violations and "succeeded but has no" in store.violations[0]


def test_a_paused_stop_is_neither_a_failure_nor_an_attempt(tmp_path: Path) -> None:
    """The training process of a paused job exits 143 (SIGTERM, checkpoint saved): the job stays paused."""
    store = CheckedStore(tmp_path / "serve")
    job_id = make_job(store, status="paused")
    (store.job_path(job_id) / "checkpoints" / "step-000007").mkdir(parents=True)
    sup = Supervisor(store)
    sup.proc, sup.job_id, sup._pausing = finished_process(PAUSED_EXIT), job_id, True
    sup._watch()
    job = store.get_job(job_id)
    assert job["status"] == "paused" and job["attempts"] == 0 and job["error"] is None
    assert "Training paused after step 7; checkpoint saved" in messages(store, job_id)
    assert sup.proc is None and not sup._pausing
    assert store.next_job() is None, "a paused job is not picked to run"
    assert store.update_job(job_id, only_if=("paused",), status="queued", events=[("Job resumed", "info")])
    assert store.next_job()["id"] == job_id


def test_metadata_filters_and_an_older_database(tmp_path: Path) -> None:
    root = tmp_path / "serve"
    root.mkdir()
    with contextlib.closing(sqlite3.connect(root / "state.db")) as c:  # the jobs table before these columns
        c.execute(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, model TEXT NOT NULL, "
            "base_source TEXT NOT NULL, training_file TEXT NOT NULL, validation_file TEXT, hyperparameters TEXT "
            "NOT NULL, options TEXT NOT NULL, suffix TEXT, seed INTEGER NOT NULL, status TEXT NOT NULL, "
            "fine_tuned_model TEXT UNIQUE, error TEXT, finished_at INTEGER, trained_tokens INTEGER, "
            "attempts INTEGER NOT NULL DEFAULT 0)"
        )
        c.execute("INSERT INTO jobs VALUES ('ftjob-" + "1" * 24 + "', 1, 'tiny', 'tiny', 'f', NULL, '{}', '{}', "
                  "NULL, 0, 'succeeded', NULL, NULL, NULL, NULL, 0)")  # fmt: skip
        c.commit()
    store = Store(root)
    old = store.get_job("ftjob-" + "1" * 24)
    assert old["metadata"] is None and old["result_files"] is None and old["estimated_finish"] is None
    a, b = make_job(store), make_job(store)
    store.update_job(a, metadata={"team": "x", "run": "1"})
    store.update_job(b, metadata={"team": "x", "run": "2"})
    ids = lambda *args, **kw: [j["id"] for j in store.list_jobs(*args, **kw)]  # noqa: E731
    assert ids({"team": "x"}) == [b, a]
    assert ids({"team": "x", "run": "1"}) == [a]
    assert ids({"team": "y"}) == []
    assert ids(null_metadata=True) == ["ftjob-" + "1" * 24]


def test_estimated_finish() -> None:
    step = {"step": 10, "elapsed_s": 5.0, "total_steps": 30}
    assert estimate_finish([step], now=1000.0) == 1010  # 20 steps left at 0.5 s each
    assert estimate_finish([step, {"step": 10, "val_loss": 1.0}], now=1000.0) == 1010  # a validation line
    assert estimate_finish([], now=1000.0) is None  # before the first step
    assert estimate_finish([{"step": 3, "elapsed_s": 1.0}], now=1000.0) is None  # an older run's line
    assert estimate_finish([{**step, "step": 30}], now=1000.0) == 1000
