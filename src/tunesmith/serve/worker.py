"""Fine-tuning jobs run one at a time, each in a training process of its own.

    server process                                   training process (python -m tunesmith.serve.worker JOB)
    Supervisor thread: picks the next job ──spawn──► lock the job, run_training(cfg, jobs/ID, resume=...)
                       copies metrics.jsonl to SQLite    exits 0 when run.json + weights are written,
                       cancel -> terminate the process    else writes jobs/ID.error and exits non-zero
                       pause -> SIGTERM ───────────────► checkpoint at the step boundary, exit 143
                       exit 0 + weights on disk -> succeeded, with the results CSV as a file

Training never shares the serving process (a crash or an out-of-memory there cannot take the API down),
and a cancel is a plain terminate. When the server dies, the training process notices its parent is gone
and exits; the restarted server finds the job still `running` and starts it again with resume, which
continues from the newest valid checkpoint. A job is marked succeeded only when run.json and the weights
are on disk. A home lock makes sure that only one server runs jobs for a $TUNESMITH_HOME.

Pausing is the same stop as Ctrl-C on `tunesmith train` (``train.signals``): the API sets the status
`paused` at once (so even a server killed now leaves the job paused), the supervisor sends SIGTERM, and
the training process saves a checkpoint after the step it is in and exits. Resuming puts the job back in
the queue; it continues from that checkpoint, the way a job interrupted by a server kill does.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tunesmith import runs
from tunesmith.serve import job_metrics
from tunesmith.serve.jobs import Store, new_id

MAX_ATTEMPTS = 3  # a job whose training process dies this often (not by our hand) is failed
PAUSED_EXIT = 143  # the training process stopped on SIGTERM with a checkpoint (128 + SIGTERM)


def weights_on_disk(run_dir: Path) -> bool:
    if not runs.is_run(run_dir):
        return False
    return any(runs.read_run(run_dir).weights_path(run_dir).glob("*.safetensors"))


# The OpenAI hyperparameters that are tunesmith flags under another name ("auto" leaves our default).
OPENAI_HYPERPARAMETERS = {
    "n_epochs": "epochs",
    "batch_size": "batch_size",
    "beta": "beta",
    "eval_interval": "eval_every",
    "eval_samples": "eval_samples",
}


def job_overrides(job: dict[str, Any], store: Store) -> dict[str, Any]:
    """The job as config overrides, through the CLI's table of flags (``flags.py``): the OpenAI
    hyperparameters, and tunesmith's options (``schemas.TunesmithOptions``, named as the flags are)."""
    from tunesmith.flags import flag_overrides
    from tunesmith.train.auto import default_learning_rate

    hp, opt = job["hyperparameters"], job["options"]
    method, objective = opt.get("method", "lora"), opt.get("objective")
    flags: dict[str, object] = {name: opt.get(name) for name in ("max_steps", "save_every", "lora_r", "lora_alpha")}
    flags.update({flag: hp[key] for key, flag in OPENAI_HYPERPARAMETERS.items() if hp.get(key, "auto") != "auto"})
    if hp.get("learning_rate_multiplier", "auto") != "auto":
        flags["lr"] = hp["learning_rate_multiplier"] * default_learning_rate(method, objective)
    if job.get("validation_file"):
        flags["val"] = store.file_path(job["validation_file"])
    if objective == "rft":
        flags.update(_rft_flags(job, store))
    return flag_overrides(
        **flags,
        model=job["base_source"],
        trust_remote_code=bool(opt.get("trust_remote_code")),
        data=store.file_path(job["training_file"]),
        method=method,
        objective=objective,
        seed=job["seed"],
        max_len=opt.get("max_len") or None,
    )


def _rft_flags(job: dict[str, Any], store: Store) -> dict[str, object]:
    """A reinforcement job's grader (written beside the job, as the CLI reads it) and its K: OpenAI's
    compute_multiplier times the K tunesmith would choose for the training file's size."""
    import json

    from tunesmith.train.auto import default_generations

    grader = store.job_path(job["id"], ".grader.json")
    if not grader.is_file():
        grader.write_text(json.dumps(job["options"]["grader"]), encoding="utf-8")
    flags: dict[str, object] = {"grader": grader}
    multiplier = job["hyperparameters"].get("compute_multiplier", "auto")
    if multiplier != "auto":
        f = store.get_file(job["training_file"]) or {}
        flags["generations"] = min(64, max(2, round(default_generations(int(f.get("rows") or 0)) * multiplier)))
    return flags


class Supervisor:
    def __init__(self, store: Store, poll_s: float = 0.5) -> None:
        self.store = store
        self.poll_s = poll_s
        self.proc: subprocess.Popen | None = None
        self.job_id: str | None = None
        self._metrics_seen: tuple[str, float] | None = None
        self._pausing = False  # SIGTERM sent to the training process because its job was paused
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tunesmith-jobs", daemon=True)
        self._home_lock: Any = None

    def start(self) -> bool:
        """Start supervising; False if another server already runs the jobs of this $TUNESMITH_HOME."""
        self._home_lock = open(self.store.root / "worker.lock", "w")  # noqa: SIM115 (held for the server's life)
        try:
            fcntl.flock(self._home_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        self._thread.start()
        return True

    def stop(self) -> None:
        """Stop supervising. A training process is stopped too; its job stays `running` and resumes later."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._terminate()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.proc is None:
                    job = self.store.next_job()
                    if job is not None:
                        self._launch(job)
                else:
                    self._watch()
            except Exception as e:  # the supervisor must outlive any one bad job
                print(f"tunesmith jobs: {e!r}", file=sys.stderr)
            self._stop.wait(self.poll_s)

    def _launch(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        from tunesmith.train.checkpoint import list_checkpoints

        run_dir = self.store.job_path(job_id)
        # Interrupted by a server kill (still `running`) or paused and resumed (back to `queued`): either
        # way, a checkpoint on disk is where it continues.
        interrupted = job["status"] == "running" and run_dir.exists()
        resumed = interrupted or bool(list_checkpoints(run_dir / runs.CHECKPOINTS))
        started = "Job resumed from its last checkpoint" if resumed else "Fine-tuning job started"
        if not self.store.update_job(
            job_id, only_if=("queued", "running"), status="running", events=[(started, "info")]
        ):
            return
        self.store.job_path(job_id, ".error").unlink(missing_ok=True)
        log = open(self.store.job_path(job_id, ".log"), "ab")  # noqa: SIM115 (handed to the child)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "tunesmith.serve.worker", str(self.store.root), job_id, str(os.getpid())]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        log.close()
        self.job_id, self._pausing = job_id, False

    def _sync_metrics(self, job_id: str) -> None:
        path = self.store.job_path(job_id) / runs.METRICS
        try:
            stamp = (str(path), path.stat().st_mtime)
        except OSError:
            return
        if stamp != self._metrics_seen:
            self._metrics_seen = stamp
            lines = job_metrics.read_lines(path)
            self.store.put_metrics(job_id, job_metrics.metric_points(lines))
            finish = job_metrics.estimate_finish(lines, time.time())
            if finish is not None:
                self.store.update_job(job_id, estimated_finish=finish)

    def _watch(self) -> None:
        assert self.proc is not None and self.job_id is not None
        job_id = self.job_id
        self._sync_metrics(job_id)
        job = self.store.get_job(job_id)
        if job is None or job["status"] == "cancelled":
            # The cancel itself recorded "Job cancelled" with the status; this later event only reports
            # that the process is gone (which necessarily happens after the client saw `cancelled`).
            self._terminate()
            self.store.add_event(job_id, "Job cancelled; the training process was stopped")
            return
        if job["status"] == "paused" and not self._pausing:
            self._pausing = True  # once: a second SIGTERM would abort without the checkpoint
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.poll()
        if rc is None:
            return
        self.proc, self.job_id = None, None
        run_dir = self.store.job_path(job_id)
        if rc == 0 and weights_on_disk(run_dir):  # finished, even if a pause came in after its last step
            self._succeed(job)
            return
        error = self._read_error(job_id)
        if self._pausing and error is None:
            self._pausing = False
            step = _last_checkpoint_step(run_dir)
            where = f"after step {step}; checkpoint saved" if step else "before its first checkpoint"
            self.store.add_event(job_id, f"Training paused {where}")
            return
        self._pausing = False
        if error is None and job["attempts"] + 1 < MAX_ATTEMPTS:  # died without a word (killed): try again
            self.store.update_job(
                job_id,
                only_if=("running",),
                attempts=job["attempts"] + 1,
                events=[(f"The training process exited with code {rc}; resuming", "warn")],
            )
            return
        if error is None:
            error = {"code": "training_interrupted", "message": f"the training process died {MAX_ATTEMPTS} times"}
        self._fail(job_id, error.get("code", "training_failed"), error.get("message", "training failed"))

    def _succeed(self, job: dict[str, Any]) -> None:
        """`succeeded`, with its events and its results CSV (a file of purpose fine-tune-results), all
        visible at once."""
        job_id, run_dir = job["id"], self.store.job_path(job["id"])
        info = runs.read_run(run_dir)
        name = f"ft:{job['model']}:{job['suffix'] or ''}:{job_id[6:14]}"
        points = job_metrics.read_metrics(run_dir / runs.METRICS)
        data = job_metrics.results_csv(points).encode()
        file_id = new_id("file")
        with self.store.uploading():  # the orphan clean-up leaves the file alone until its row is written
            size = self.store.write_file(file_id, data)
            done = self.store.update_job(
                job_id,
                only_if=("running", "paused", "queued"),  # a pause or resume may have come after the last step
                status="succeeded",
                fine_tuned_model=name,
                finished_at=int(time.time()),
                trained_tokens=info.trained_tokens_seen,
                estimated_finish=None,
                result_files=[file_id],
                files=[
                    {
                        "id": file_id,
                        "filename": job_metrics.RESULTS_FILENAME,
                        "purpose": job_metrics.RESULTS_PURPOSE,
                        "bytes": size,
                        "rows": len(points),
                        "format": "csv",
                    }
                ],
                events=[
                    (f"New fine-tuned model created: {name}", "info"),
                    ("The job has successfully completed", "info"),
                ],
            )
            if not done:  # cancelled meanwhile: the results have no job to belong to
                self.store.file_path(file_id).unlink(missing_ok=True)

    def _read_error(self, job_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.store.job_path(job_id, ".error").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _fail(self, job_id: str, code: str, message: str) -> None:
        error = {"code": code, "message": message, "param": None}
        self.store.update_job(
            job_id,
            only_if=("queued", "running", "paused"),
            status="failed",
            error=error,
            finished_at=int(time.time()),
            events=[(f"Job failed: {message}", "error")],
        )

    def _terminate(self) -> None:
        proc, self.proc, self.job_id = self.proc, None, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _last_checkpoint_step(run_dir: Path) -> int | None:
    from tunesmith.train.checkpoint import list_checkpoints

    found = list_checkpoints(run_dir / runs.CHECKPOINTS)
    return int(found[-1].name.split("-")[-1]) if found else None


# -- the training process -------------------------------------------------------------------------------


def _exit_with_parent(parent: int) -> None:
    """If the server dies (even by SIGKILL) the training stops too, so a restarted server can resume it.

    Linux delivers SIGKILL at once through PR_SET_PDEATHSIG; elsewhere a thread notices within half a second."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(75)

    threading.Thread(target=watch, daemon=True).start()


def train_job(root: Path, job_id: str) -> int:
    from tunesmith.config import load_config
    from tunesmith.errors import DataError, UserError
    from tunesmith.train.checkpoint import list_checkpoints
    from tunesmith.train.pipeline import run_training
    from tunesmith.train.signals import Interrupted, graceful_stop

    store = Store(root)
    job = store.get_job(job_id)
    if job is None:
        return 2
    with open(store.job_path(job_id, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # waits for an orphan of an earlier server to finish exiting
        run_dir = store.job_path(job_id)
        if weights_on_disk(run_dir):
            return 0  # finished before the last server could record it
        try:
            cfg = load_config(None, job_overrides(job, store))
            resume = (run_dir / runs.CONFIG_YAML).is_file() and bool(list_checkpoints(run_dir / runs.CHECKPOINTS))
            with graceful_stop():  # SIGTERM (a pause, a server stopping): checkpoint at the step boundary
                run_training(cfg, run_dir, resume=resume, force=not resume)
        except Interrupted:
            return PAUSED_EXIT
        except DataError as e:
            _write_error(store, job_id, "invalid_training_file", str(e))
            return 3
        except UserError as e:
            _write_error(store, job_id, "training_failed", str(e))
            return 3
        except Exception as e:
            _write_error(store, job_id, "internal_error", f"{type(e).__name__}: {e}")
            raise
    return 0


def _write_error(store: Store, job_id: str, code: str, message: str) -> None:
    runs.write_text_atomic(store.job_path(job_id, ".error"), json.dumps({"code": code, "message": message}))


if __name__ == "__main__":
    root_arg, job_arg, parent_arg = sys.argv[1], sys.argv[2], int(sys.argv[3])
    _exit_with_parent(parent_arg)
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(train_job(Path(root_arg), job_arg))
    sys.exit(130)
