"""What a training run shows and logs, rank 0's alone: the progress bar (interactive terminals), plain
progress lines (logs, CI), and metrics.jsonl (one line per optimizer step, one per validation), which
the dashboard and the reports read while and after the run trains."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as Bar

from tunesmith import console, runs
from tunesmith.train.trackers import Tracker, close_trackers


def trim_metrics(path: Path, upto_step: int) -> None:
    """On resume, drop metric lines written after the checkpoint we resume from (and a line torn in half
    by a kill), so the log continues without gaps or repeats."""
    if not path.is_file():
        return
    keep = []
    for ln in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            if json.loads(ln)["step"] <= upto_step:
                keep.append(ln)
        except (ValueError, KeyError, TypeError):
            continue
    runs.write_text_atomic(path, "".join(ln + "\n" for ln in keep))


class Progress:
    """The progress bar (interactive terminals), the plain progress lines (elsewhere), metrics.jsonl and the
    trackers of ``--report-to`` (``open_trackers(start_step)`` makes them), all rank 0's."""

    def __init__(
        self,
        total_steps: int,
        done: int,
        main: bool,
        metrics_path: Path,
        open_trackers: Callable[[int], list[Tracker]] | None = None,
    ) -> None:
        self.show = console.is_interactive()
        columns = [
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("val {task.fields[val]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            TimeRemainingColumn(),
        ]
        self.bar = Bar(*columns, console=console.console, disable=not self.show, transient=False)
        self.total, self.done, self.path = total_steps, done, metrics_path if main else Path(os.devnull)
        self.last_tps = 0.0
        self.open_trackers = open_trackers if main else None
        self.trackers: list[Tracker] = []

    def __enter__(self) -> Progress:
        # The trackers first: they may fail (a tracking server down), and nothing else is open yet.
        if self.open_trackers is not None:
            self.trackers = self.open_trackers(self.done)
        try:
            self.log_file = open(self.path, "a", encoding="utf-8")
        except BaseException:
            close_trackers(self.trackers, ok=False)
            raise
        self.bar.__enter__()
        self.task = self.bar.add_task("train", total=self.total, completed=self.done, loss="-", val="-", tps="-")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            close_trackers(self.trackers, ok=exc[0] is None)  # also on an exception or Ctrl-C
        finally:
            self.log_file.close()
            self.bar.__exit__(*exc)

    def log(self, line: dict[str, Any]) -> None:
        self.log_file.write(json.dumps(line) + "\n")
        for tracker in self.trackers:
            tracker.log(line)
        if "tokens_per_s" in line:
            self.last_tps = line["tokens_per_s"]

    def say(self, text: str) -> None:
        """A progress line where no bar is shown (logs, CI), with the step's tokens/s."""
        if not self.show:
            console.info(f"{text}  {self.last_tps:.0f} tok/s" if self.last_tps else text)  # (none before a step)

    def update(self, step: int, loss: float, val: float | None, tokens_per_s: float) -> None:
        self.log_file.flush()
        self.bar.update(
            self.task,
            completed=step,
            loss=f"{loss:.4f}",
            tps=f"{tokens_per_s:.0f}",
            val=f"{val:.4f}" if val is not None else "-",
        )
