"""Ctrl-C and SIGTERM during training: stop at the next step boundary, with a checkpoint.

The first SIGINT or SIGTERM only sets a flag; the loop sees it after the step it is in, saves a checkpoint
and raises ``Interrupted``, which the CLI turns into the resume command and exit code 128 + signal
(130 for Ctrl-C, 143 for SIGTERM). A second signal aborts at once: the last checkpoint on disk is still
whole (they are written atomically), so nothing but the unsaved steps is lost.

Only a caller that asks (``graceful_stop()``, entered by ``tunesmith train``) changes signal handling;
library users and the jobs worker keep their own. Handlers are per process and can only be installed from
the main thread, so the flag is module state, like the signal itself.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from tunesmith import console
from tunesmith.errors import UserError

_requested: int | None = None  # the signal number of the first stop request, if any


class Interrupted(UserError):
    """Training stopped on request after saving a checkpoint; exit code 128 + the signal number."""

    def __init__(self, signum: int, step: int, total: int) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} after step {step} of {total}; a checkpoint was saved")
        self.signum, self.step, self.total = signum, step, total
        self.exit_code = 128 + signum


def requested() -> int | None:
    """The signal that asked training to stop, or None. The loop polls this at step boundaries."""
    return _requested


def _handle(signum: int, frame: FrameType | None) -> None:
    global _requested
    if _requested is not None:
        # Second signal: the user means it. Abort where we are; the last checkpoint on disk is intact.
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)
    _requested = signum
    key = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    console.warn(f"{key}: stopping after this step with a checkpoint ({key} again to abort now)")


@contextlib.contextmanager
def graceful_stop() -> Iterator[None]:
    """Within this block, SIGINT and SIGTERM ask training to stop at the next step boundary."""
    global _requested
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return
    previous = {s: signal.signal(s, _handle) for s in (signal.SIGINT, signal.SIGTERM)}
    _requested = None
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _requested = None
