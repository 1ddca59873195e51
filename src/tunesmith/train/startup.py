"""Where the time before the first training step goes: a stopwatch with named phases.

A short run spends a large share of its wall time before the loop (imports, loading the model, checking and
rendering the data, measuring the machine); run.json keeps the breakdown and the summary prints it, so a
slow start is seen and can be attacked phase by phase."""

from __future__ import annotations

import os
import sys
import time

# Set by the command line (``count_from_process_start``): only then is the process's age this run's start-up.
# A run started inside a long-lived process (a test, the jobs worker) counts from the training call.
_FROM_PROCESS_START = False


def _started_as_the_command() -> bool:
    """Whether this process is the ``tunesmith`` command itself (its console script or ``python -m
    tunesmith``), not a test runner or a server that calls the command's code."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and (spec.name or "").startswith("tunesmith"):
        return True
    return os.path.basename(sys.argv[0] if sys.argv else "") == "tunesmith"


def count_from_process_start() -> None:
    """The next run's start-up includes the process's own start, when this process is the command."""
    global _FROM_PROCESS_START
    _FROM_PROCESS_START = _started_as_the_command()


def _take_process_start() -> bool:
    """Once only: a second run in the same process did not pay for the interpreter again."""
    global _FROM_PROCESS_START
    taken, _FROM_PROCESS_START = _FROM_PROCESS_START, False
    return taken


def process_age_s() -> float | None:
    """Seconds since this process started (interpreter start-up, imports, argument parsing), or None where
    the OS does not say."""
    try:
        import psutil

        return max(0.0, time.time() - psutil.Process().create_time())
    except Exception:  # no psutil, or a platform that hides it: the breakdown just lacks the line
        return None


class Stopwatch:
    def __init__(self) -> None:
        age = process_age_s() if _take_process_start() else None
        self.phases: dict[str, float] = {"interpreter, imports, arguments": round(age, 2)} if age is not None else {}
        self._last = time.perf_counter()

    def mark(self, phase: str) -> None:
        """The time since the previous mark is ``phase``'s (added to it, if the phase is marked twice)."""
        now = time.perf_counter()
        self.phases[phase] = round(self.phases.get(phase, 0.0) + now - self._last, 2)
        self._last = now

    def total(self) -> float:
        return round(sum(self.phases.values()), 2)

    def line(self) -> str:
        parts = ", ".join(f"{name} {s:.1f} s" for name, s in sorted(self.phases.items(), key=lambda kv: -kv[1]))
        return f"start-up: {self.total():.1f} s before the first step ({parts})"
