"""Files, fine-tuning jobs, their events and metrics: one embedded SQLite database.

    $TUNESMITH_HOME/serve/
      state.db                 files, jobs, events, metrics (WAL: the server and the training process share it)
      files/file-<hex>.jsonl   uploaded data, or a job's results CSV (purpose fine-tune-results); the name
                               comes from the id we minted, never from the client
      files/.upload-*          an upload being received (renamed to file-<hex>.jsonl once complete and fsynced)
      files/.lock              held shared by uploads in progress, exclusively by the orphan clean-up
      jobs/ftjob-<hex>/        the job's run folder (a normal `tunesmith train` run: config, checkpoints, run.json)
      jobs/ftjob-<hex>.log     what the training process printed
      jobs/ftjob-<hex>.error   why it failed (one JSON object), written by the training process
      jobs/ftjob-<hex>.lock    held by the training process: two can never train the same job

Every path is built from an id that matched ``FILE_ID`` / ``JOB_ID`` first, so no request can name a path
outside this folder. Each call opens its own connection: simple, and safe across threads and processes.

An upload is registered only once its file is complete: temp file, fsync, rename, fsync of the folder, and
only then the row. A server killed at any moment leaves either a registered, complete file or an orphan
(a temp file, or a file without a row), which ``clean_orphans`` removes at the next start. Deleting goes the
other way round: the row first, then the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tunesmith.paths import home
from tunesmith.serve.schemas import FILE_ID, JOB_ID

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
  id TEXT PRIMARY KEY, filename TEXT NOT NULL, purpose TEXT NOT NULL, bytes INTEGER NOT NULL,
  created_at INTEGER NOT NULL, rows INTEGER NOT NULL, format TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, model TEXT NOT NULL, base_source TEXT NOT NULL,
  training_file TEXT NOT NULL, validation_file TEXT, hyperparameters TEXT NOT NULL, options TEXT NOT NULL,
  suffix TEXT, seed INTEGER NOT NULL, status TEXT NOT NULL, fine_tuned_model TEXT UNIQUE, error TEXT,
  finished_at INTEGER, trained_tokens INTEGER, attempts INTEGER NOT NULL DEFAULT 0,
  metadata TEXT, result_files TEXT, estimated_finish INTEGER
);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, job_id TEXT NOT NULL,
  created_at INTEGER NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
  job_id TEXT NOT NULL, step INTEGER NOT NULL, created_at INTEGER NOT NULL, data TEXT NOT NULL,
  PRIMARY KEY (job_id, step)
);
"""

# Columns added after the first release: a database made by an older version gains them on open.
ADDED_COLUMNS = {"metadata": "TEXT", "result_files": "TEXT", "estimated_finish": "INTEGER"}
JSON_COLUMNS = ("hyperparameters", "options", "error", "metadata", "result_files")

Events = Sequence[tuple[str, str]]  # (message, level) pairs
# A paused job is not finished: it can be resumed or cancelled, and its files stay in use.
ACTIVE = ("validating_files", "queued", "running", "paused")
TERMINAL = ("succeeded", "failed", "cancelled")


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def _row(cur: sqlite3.Cursor, row: tuple) -> dict[str, Any]:
    return {d[0]: v for d, v in zip(cur.description, row, strict=True)}


class Store:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else home() / "serve"
        self.files_dir = self.root / "files"
        self.jobs_dir = self.root / "jobs"
        for d in (self.files_dir, self.jobs_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.db = self.root / "state.db"
        with self._conn() as c:
            c.execute("PRAGMA journal_mode=WAL")
            c.executescript(SCHEMA)
            have = {r["name"] for r in c.execute("PRAGMA table_info(jobs)").fetchall()}
            for name, kind in ADDED_COLUMNS.items():
                if name not in have:
                    try:
                        c.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
                    except sqlite3.OperationalError as e:  # another process opening the store added it first
                        if "duplicate column" not in str(e):
                            raise

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.db, timeout=30, isolation_level=None)
        conn.row_factory = _row
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One connection in one write transaction: other readers see all of it or none of it.

        BEGIN IMMEDIATE takes the write lock at once, so two writers queue instead of failing midway."""
        with self._conn() as c:
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")

    # -- paths: only ever from a validated id -------------------------------------------------------------
    def file_path(self, file_id: str) -> Path:
        if not FILE_ID.match(file_id):
            raise ValueError("bad file id")
        return self.files_dir / f"{file_id}.jsonl"

    def job_path(self, job_id: str, ext: str = "") -> Path:
        if not JOB_ID.match(job_id) or ext not in ("", ".log", ".error", ".lock", ".grader.json"):
            raise ValueError("bad job id")
        return self.jobs_dir / f"{job_id}{ext}"

    # -- files ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def uploading(self) -> Iterator[None]:
        """Held from an upload's first byte on disk until its row is written: clean-up leaves it alone."""
        with open(self.files_dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            yield

    def clean_orphans(self) -> list[str]:
        """Remove what uploads cut short left behind; the names removed. Skipped while any upload runs."""
        with open(self.files_dir / ".lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return []  # an upload is in progress (in this or another server): its files are not orphans
            with self._conn() as c:
                known = {r["id"] for r in c.execute("SELECT id FROM files").fetchall()}
            removed = []
            for path in self.files_dir.iterdir():
                temp = path.name.startswith(".upload-")
                if temp or (path.suffix == ".jsonl" and FILE_ID.match(path.stem) and path.stem not in known):
                    path.unlink(missing_ok=True)
                    removed.append(path.name)
            return removed

    def write_file(self, file_id: str, data: bytes) -> int:
        """Durably write a file we produce (a job's results) under its id, as an upload is written: a temp
        file that ``clean_orphans`` recognises, fsync, rename, fsync of the folder. Register it afterwards,
        inside the same ``uploading()`` block. Returns its size."""
        final = self.file_path(file_id)
        fd, tmp = tempfile.mkstemp(dir=self.files_dir, prefix=".upload-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fd_dir = os.open(self.files_dir, os.O_RDONLY)
        try:
            os.fsync(fd_dir)
        finally:
            os.close(fd_dir)
        return len(data)

    def add_file(self, file_id: str, filename: str, purpose: str, size: int, rows: int, fmt: str | None) -> None:
        with self._conn() as c:
            c.execute(
                "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                (file_id, filename, purpose, size, int(time.time()), rows, fmt),
            )

    def get_file(self, file_id: str) -> dict[str, Any] | None:
        if not FILE_ID.match(file_id):
            return None
        with self._conn() as c:
            return c.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()

    def list_files(self, purpose: str | None = None) -> list[dict[str, Any]]:
        with self._conn() as c:
            if purpose:
                return c.execute(
                    "SELECT * FROM files WHERE purpose = ? ORDER BY created_at DESC", (purpose,)
                ).fetchall()
            return c.execute("SELECT * FROM files ORDER BY created_at DESC").fetchall()

    def delete_file(self, file_id: str) -> bool:
        with self._conn() as c:
            gone = c.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount > 0
        self.file_path(file_id).unlink(missing_ok=True)
        return gone

    def file_in_use(self, file_id: str) -> bool:
        marks = ",".join("?" * len(ACTIVE))
        with self._conn() as c:
            q = f"SELECT 1 FROM jobs WHERE status IN ({marks}) AND (training_file = ? OR validation_file = ?)"
            return c.execute(q, (*ACTIVE, file_id, file_id)).fetchone() is not None

    # -- jobs ----------------------------------------------------------------------------------------------
    def create_job(self, job: dict[str, Any], events: Events = ()) -> None:
        """Insert the job, with its first events in the same transaction."""
        row = {k: json.dumps(v) if k in JSON_COLUMNS and v is not None else v for k, v in job.items()}
        keys = ", ".join(row)
        with self._transaction() as c:
            c.execute(f"INSERT INTO jobs ({keys}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
            _insert_events(c, job["id"], events)

    @staticmethod
    def _decode(row: dict[str, Any] | None) -> dict[str, Any] | None:
        if row is None:
            return None
        for key in JSON_COLUMNS:
            if row.get(key) is not None:
                row[key] = json.loads(row[key])
        return row

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        if not JOB_ID.match(job_id):
            return None
        with self._conn() as c:
            return self._decode(c.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def list_jobs(self, metadata: dict[str, str] | None = None, *, null_metadata: bool = False) -> list[dict[str, Any]]:
        """Newest first. ``metadata``: only jobs whose metadata holds every one of these pairs;
        ``null_metadata``: only jobs created without metadata (OpenAI's ``metadata=null`` filter)."""
        with self._conn() as c:
            rows = c.execute("SELECT * FROM jobs ORDER BY created_at DESC, rowid DESC").fetchall()
        jobs = [self._decode(r) for r in rows]
        if null_metadata:
            return [j for j in jobs if not j["metadata"]]
        wanted = (metadata or {}).items()
        return [j for j in jobs if all((j["metadata"] or {}).get(k) == v for k, v in wanted)]

    def update_job(
        self,
        job_id: str,
        *,
        only_if: tuple[str, ...] | None = None,
        events: Events = (),
        files: Sequence[dict[str, Any]] = (),
        **fields: Any,
    ) -> bool:
        """Set fields; with ``only_if``, only while the job's status is one of those (a compare-and-set).

        ``events`` ((message, level) pairs) and ``files`` (rows for ``files``: a job's results, already
        written with ``write_file``) are added in the same transaction, and only if the update happened:
        a client never sees a status without the events that announce it (a job `succeeded` whose
        "successfully completed" event is not there yet) or the result files it names, nor those without
        the status."""
        fields = {k: json.dumps(v) if k in JSON_COLUMNS and v is not None else v for k, v in fields.items()}
        sets = ", ".join(f"{k} = ?" for k in fields)
        where, args = "id = ?", [*fields.values(), job_id]
        if only_if:
            where += f" AND status IN ({','.join('?' * len(only_if))})"
            args += list(only_if)
        with self._transaction() as c:
            done = c.execute(f"UPDATE jobs SET {sets} WHERE {where}", args).rowcount > 0
            if done:
                _insert_events(c, job_id, events)
                now = int(time.time())
                c.executemany(
                    "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(f["id"], f["filename"], f["purpose"], f["bytes"], now, f["rows"], f["format"]) for f in files],
                )
            return done

    def next_job(self) -> dict[str, Any] | None:
        """The job to run next: an interrupted one first (it resumes), then the oldest queued."""
        with self._conn() as c:
            row = c.execute(
                "SELECT * FROM jobs WHERE status IN ('running', 'queued') "
                "ORDER BY status = 'running' DESC, created_at, rowid LIMIT 1"
            ).fetchone()
        return self._decode(row)

    def find_fine_tuned(self, model: str) -> dict[str, Any] | None:
        with self._conn() as c:
            row = c.execute(
                "SELECT * FROM jobs WHERE fine_tuned_model = ? AND status = 'succeeded'", (model,)
            ).fetchone()
        return self._decode(row)

    # -- events and metrics --------------------------------------------------------------------------------
    def add_event(self, job_id: str, message: str, level: str = "info") -> None:
        """An event on its own; one that goes with a status change is passed to ``update_job`` instead."""
        with self._conn() as c:
            _insert_events(c, job_id, [(message, level)])

    def put_metrics(self, job_id: str, points: dict[int, dict[str, Any]]) -> None:
        # A resumed run recomputes the steps after its checkpoint: new values replace old ones, and points
        # that did not change keep their time (so events stay in the order they happened).
        now = int(time.time())
        with self._conn() as c:
            c.executemany(
                "INSERT INTO metrics VALUES (?, ?, ?, ?) ON CONFLICT (job_id, step) DO UPDATE SET "
                "data = excluded.data, created_at = excluded.created_at WHERE data != excluded.data",
                [(job_id, step, now, json.dumps(data, sort_keys=True)) for step, data in points.items()],
            )

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """Message and metrics events, newest first (the order OpenAI's API lists them in)."""
        with self._conn() as c:
            msgs = c.execute("SELECT * FROM events WHERE job_id = ?", (job_id,)).fetchall()
            points = c.execute("SELECT * FROM metrics WHERE job_id = ?", (job_id,)).fetchall()
        out = [{**m, "type": "message", "data": None, "_order": (m["created_at"], 1, m["seq"])} for m in msgs] + [
            {
                "id": f"ftevent-{job_id[6:]}-step{p['step']}",
                "created_at": p["created_at"],
                "level": "info",
                "message": _metrics_message(json.loads(p["data"])),
                "type": "metrics",
                "data": json.loads(p["data"]),
                "_order": (p["created_at"], 0, p["step"]),
            }
            for p in points
        ]
        out.sort(key=lambda e: e["_order"], reverse=True)
        return out

    def metrics(self, job_id: str) -> dict[int, dict[str, Any]]:
        with self._conn() as c:
            rows = c.execute("SELECT step, data FROM metrics WHERE job_id = ?", (job_id,)).fetchall()
        return {r["step"]: json.loads(r["data"]) for r in rows}


def _insert_events(c: sqlite3.Connection, job_id: str, events: Events) -> None:
    now = int(time.time())
    c.executemany(
        "INSERT INTO events (id, job_id, created_at, level, message) VALUES (?, ?, ?, ?, ?)",
        [(new_id("ftevent"), job_id, now, level, message) for message, level in events],
    )


def _metrics_message(d: dict[str, Any]) -> str:
    parts = [f"Step {d['step']}" + (f"/{d['total_steps']}" if d.get("total_steps") else "")]
    if d.get("train_loss") is not None:
        parts.append(f"training loss={d['train_loss']:.4f}")
    if d.get("valid_loss") is not None:
        parts.append(f"validation loss={d['valid_loss']:.4f}")
    return ", ".join(parts[:1]) + (": " + ", ".join(parts[1:]) if parts[1:] else "")
