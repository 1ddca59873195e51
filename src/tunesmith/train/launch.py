"""``tunesmith train --nproc N``: re-run the same command in N local processes through torchrun's own agent.

Each process then joins the process group (distributed.session) and trains with its peers; a rank's own
one-line error keeps exit code 2, and an interrupt stops every rank.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import torch

from tunesmith.train.distributed import cpu_cores


def launch(config_yaml: str, train_args: list[str], nproc: int) -> int:
    """Run ``tunesmith train --config <config_yaml> <train_args>`` in ``nproc`` local processes through
    torchrun's own agent (in this process, as the ``torchrun`` command does); returns the exit code."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from tunesmith import console

    if torch.cuda.is_available() and nproc > torch.cuda.device_count():
        from tunesmith.errors import UserError

        raise UserError(f"--nproc {nproc}: this machine has {torch.cuda.device_count()} GPUs (one process per GPU)")
    # torchrun would set 1 thread per process (and warn); give each its share of the cores instead.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cpu_cores() // nproc)))
    fd, path = tempfile.mkstemp(prefix="tunesmith-launch-", suffix=".yaml")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(config_yaml)
    args = ["--standalone", "--nnodes=1", f"--nproc-per-node={nproc}", "-m", "tunesmith", "train"]
    args += ["--config", path, *train_args]
    try:
        run(get_args_parser().parse_args(args))
        return 0
    except ChildFailedError as e:
        first, failure = e.get_first_failure()
        order = [first, *sorted(r for r in e.failures if r != first)]
        what = ", ".join(f"rank {r} ({_how(e.failures[r].exitcode)})" for r in order)
        console.error(f"training failed: {what}; torchrun stopped every other rank")
        # A rank's own one-line error (bad input: exit code 2) keeps its exit code; anything else is 1.
        return 2 if failure.exitcode == 2 else 1
    except SignalException as e:
        console.error(f"interrupted ({signal.Signals(e.sigval).name}); every rank was stopped")
        return 128 + int(e.sigval)
    finally:
        Path(path).unlink(missing_ok=True)


def _how(exitcode: int) -> str:
    if exitcode >= 0:
        return f"exit code {exitcode}"
    try:
        return f"signal {signal.Signals(-exitcode).name}"
    except ValueError:
        return f"signal {-exitcode}"
