"""Python graders: untrusted code, run in worker processes that are reused across a batch.

Each worker is a fresh ``python -I`` running ``sandbox_worker.py`` (it inherits nothing: an empty
environment, no tunesmith imports, no open files but its pipes), inside the namespaces ``isolation.py``
finds, in an empty temporary working directory, with rlimits on memory, file size, open files and CPU,
and an audit hook that refuses sockets, processes and files outside that directory. The parent enforces a
wall-clock timeout per sample and kills the worker's whole process group when it passes; a worker that
died or was killed is replaced for the next sample. Nothing here raises for what a grader does: a failing
sample becomes ``Grade(0.0, error=...)``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith import paths
from tunesmith.graders import isolation
from tunesmith.graders.types import Grade, Sample

WORKER = Path(__file__).with_name("sandbox_worker.py")
MAX_ANSWER = 1 << 16  # bytes: an answer is one small JSON object


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0  # wall time for one sample; past it the worker is killed and the sample scores 0
    memory_bytes: int = 2 << 30  # address space of a worker (RLIMIT_AS)
    cpu_total_s: int = 600  # CPU seconds over a worker's life (RLIMIT_CPU), a backstop behind timeout_s
    file_bytes: int = 16 << 20  # largest file a grader may write in its working directory
    workers: int = 0  # processes per grader; 0 = min(4, CPUs)
    start_timeout_s: float = 30.0  # for a worker to start and run the source's top level


DEFAULT_LIMITS = SandboxLimits()


class WorkerGone(Exception):
    """The worker exited, was killed, or answered something that is not the protocol."""


class Worker:
    def __init__(self, source: str, limits: SandboxLimits) -> None:
        self.limits = limits
        self.workdir = tempfile.mkdtemp(prefix="tunesmith-grader-")
        home = os.path.realpath(paths.home())
        command = isolation.wrap([sys.executable, "-I", "-B", str(WORKER)], home)
        env = {"PATH": os.defpath, "LANG": "C.UTF-8", "HOME": self.workdir, "TMPDIR": self.workdir}
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=self.workdir,
            env=env,
            close_fds=True,
            start_new_session=True,  # its own process group, so a kill takes any child with it
        )
        self.buffer = b""
        setup = {
            "source": source,
            "workdir": self.workdir,
            "denied": [home, os.path.realpath(paths.home().parent / "tunesmith")],
            "memory_bytes": limits.memory_bytes,
            "cpu_total_s": limits.cpu_total_s,
            "file_bytes": limits.file_bytes,
        }
        self.ready = self._exchange(setup, limits.start_timeout_s)

    def _exchange(self, message: dict, timeout: float) -> dict:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps(message, default=str) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerGone(self._death()) from None
        return self._read(time.monotonic() + timeout)

    def _read(self, deadline: float) -> dict:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise WorkerGone(f"timed out after {self.limits.timeout_s:g} s; the worker was killed")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise WorkerGone(self._death())
            self.buffer += chunk
            if len(self.buffer) > MAX_ANSWER:
                self.kill()
                raise WorkerGone("the grader's process wrote more than an answer; it was killed")
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            answer = json.loads(line)
        except ValueError:
            self.kill()
            raise WorkerGone("the grader's process answered something that is not JSON; it was killed") from None
        if not isinstance(answer, dict):
            self.kill()
            raise WorkerGone("the grader's process answered something unexpected; it was killed")
        return answer

    def _death(self) -> str:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            return "the grader's process stopped answering; it was killed"
        self.cleanup()
        if code == 97:
            return "the sandbox could not hide the tunesmith home; the grader did not run"
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            why = {"SIGKILL": " (killed: over a limit, or by the system)", "SIGXCPU": " (over its CPU time)"}
            return f"the grader's process died from {name}{why.get(name, '')}"
        return f"the grader's process exited with code {code}"

    def grade(self, sample: Sample, item: Any) -> Grade:
        answer = self._exchange({"sample": sample.namespace(), "item": item}, self.limits.timeout_s)
        if "score" in answer and isinstance(answer["score"], int | float):
            return Grade(float(answer["score"]))
        return Grade(0.0, error=str(answer.get("error", "the grader gave no score"))[:500])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.cleanup()

    def cleanup(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        shutil.rmtree(self.workdir, ignore_errors=True)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()  # EOF: the worker's loop ends on its own
                self.proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()


class PythonScorer:
    """A python grader: a few workers, started on first use and kept for later batches."""

    def __init__(self, spec: dict, limits: SandboxLimits | None = None) -> None:
        self.source = spec["source"]
        self.limits = limits or DEFAULT_LIMITS
        self.size = self.limits.workers or min(4, os.cpu_count() or 1)
        self.workers: list[Worker | None] = []
        self.broken: str | None = None  # the source failed at its top level: no worker can run it
        self.lock = threading.Lock()

    def _worker(self, slot: int) -> Worker:
        current = self.workers[slot]
        if current is not None and current.alive():
            return current
        worker = Worker(self.source, self.limits)
        if not worker.ready.get("ready"):
            worker.close()
            self.broken = f"the grader's source failed to load: {worker.ready.get('error', 'unknown error')}"
            raise WorkerGone(self.broken)
        self.workers[slot] = worker
        return worker

    def _run_slot(self, slot: int, todo: queue.Queue, samples: list[Sample], items: list[Any], out: list) -> None:
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            if self.broken:
                out[i] = Grade(0.0, error=self.broken)
                continue
            try:
                out[i] = self._worker(slot).grade(samples[i], items[i])
            except WorkerGone as e:
                out[i] = Grade(0.0, error=str(e))
                self.workers[slot] = None
            except Exception as e:  # e.g. the OS refused to start a process: still a grade, not a crash
                out[i] = Grade(0.0, error=f"the sandbox failed: {type(e).__name__}: {e}")
                self.workers[slot] = None

    def grade(self, samples: list[Sample], items: list[Any]) -> list[Grade]:
        with self.lock:  # one batch at a time per grader: the workers are not shared between batches
            out: list[Grade | None] = [None] * len(samples)
            todo: queue.Queue = queue.Queue()
            for i in range(len(samples)):
                todo.put(i)
            slots = min(self.size, len(samples))
            self.workers += [None] * (slots - len(self.workers))
            with ThreadPoolExecutor(slots, thread_name_prefix="grader") as pool:
                for f in [pool.submit(self._run_slot, s, todo, samples, items, out) for s in range(slots)]:
                    f.result()
            return [g or Grade(0.0, error="not graded") for g in out]

    def close(self) -> None:
        for worker in self.workers:
            if worker is not None:
                worker.close()
        self.workers = []
