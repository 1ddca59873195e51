"""What the benchmarks against TRL share: each measured run in a fresh child process, the runs interleaved
A/B then B/A, peak RSS of the current process, and TRL's side set up the same way for every trainer (CPU,
bf16 where native, no saving or reporting, the same LoRA on every linear layer)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def benchmark_parser(doc: str | None, *child_inputs: str) -> argparse.ArgumentParser:
    """The options every benchmark against TRL takes, and the hidden ones its child processes get
    (``--child TOOL``, ``--out DIR`` and the input files named in ``child_inputs``)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="Write the medians here.")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--child", choices=["tunesmith", "trl"], help=argparse.SUPPRESS)
    for name in (*child_inputs, "--out"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    return parser


def child_result(tool: str, cmd: list[str]) -> dict:
    """Run one measured child (a fresh process, so that its peak RSS is its own) with ``--out DIR`` added;
    the result.json it writes there."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([*cmd, "--out", tmp], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} run failed:\n{proc.stderr[-3000:]}")
        return json.loads((Path(tmp) / "result.json").read_text())


def interleaved(
    repeats: int,
    run: Callable[[str], dict],
    rate: Callable[[dict], str],
    tools: tuple[str, ...] = ("tunesmith", "trl"),
    name: str = "",
) -> dict[str, list[dict]]:
    """``repeats`` runs of each tool, in the order A/B, then B/A, ... so that neither always goes first (a
    warm page cache or a throttled CPU favours one side otherwise); ``rate`` says each run's speed on stderr."""
    runs: dict[str, list[dict]] = {tool: [] for tool in tools}
    for rep in range(repeats):
        for tool in tools if rep % 2 == 0 else tools[::-1]:
            runs[tool].append(run(tool))
            print(f"{name}#{rep + 1} {tool}: {rate(runs[tool][-1])}", file=sys.stderr)
    return runs


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def trl_cpu_args(seed: int) -> dict[str, Any]:
    """The TrainingArguments every TRL run of the benchmarks shares."""
    from tunesmith.models.load import bf16_supported

    return {
        "bf16": bf16_supported(),
        "use_cpu": True,
        "save_strategy": "no",
        "report_to": [],
        "logging_steps": 10,
        "dataloader_num_workers": 0,
        "seed": seed,
        "disable_tqdm": True,
    }


def lora_config(r: int, alpha: int) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
