"""Where the time before the first training step goes: a stopwatch with named phases.

A short run spends a large share of its wall time before the loop (imports, loading the model, checking and
rendering the data, measuring the machine); run.json keeps the breakdown and the summary prints it, so a
slow start is seen and can be attacked phase by phase."""

from __future__ import annotations

import time

# Set by the command line (``count_from_process_start``): only then is the process's age this run's start-up.
# A run started inside a long-lived process (a test, the jobs worker) counts from the training call.
_FROM_PROCESS_START = False


def count_from_process_start() -> None:
    global _FROM_PROCESS_START
    _FROM_PROCESS_START = True


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
        age = process_age_s() if _FROM_PROCESS_START else None
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
