"""Whole-command timing: what a user times, from typing the command to its end.

tunesmith runs as `tunesmith train --data FILE --out DIR --epochs 1` with every other setting its default (the
data check, the validation split and its budget, the start-up probe, saving); TRL runs as a script a user
would write (import, load, SFTTrainer, train, save). Each is one fresh process; wall time and peak RSS are
measured from the outside (``os.wait4``), so imports and model loading count on both sides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def machine_record() -> dict[str, Any]:
    """The CPU, its matrix features and its measured GEMM peaks: every benchmark result says where it ran."""
    import torch

    from tunesmith import machine
    from tunesmith.models.load import bf16_supported
    from tunesmith.train.perf import measure_peak_flops

    peaks = {"fp32": measure_peak_flops(torch.float32, seconds=1.0)}
    if bf16_supported():
        peaks["bf16"] = measure_peak_flops(torch.bfloat16, seconds=1.0)
    return {
        **machine.cpu_info(),
        "torch_threads": torch.get_num_threads(),
        "gemm_peak_tflops": {k: round(v / 1e12, 3) for k, v in peaks.items()},
    }


def timed(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``cmd`` to its end; its wall time and its own peak RSS (the kernel's count, at exit)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[:4]} failed:\n{err[-3000:]}")
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def tunesmith_command(model: str, train: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "tunesmith", "train", "--model", model, "--data", str(train), "--out", str(out),
            "--epochs", "1"]  # fmt: skip


def trl_command(script: Path, model: str, train: Path, out: Path, max_len: int) -> list[str]:
    return [sys.executable, str(script), "--child", "trl-whole", "--model", model, "--train", str(train),
            "--val", str(train), "--out", str(out), "--max-len", str(max_len)]  # fmt: skip


def subset(source: Path, n: int, out: Path) -> Path:
    """The first ``n`` rows of ``source`` (the short-row set: 160 demo rows)."""
    lines = [x for x in source.read_text().splitlines() if x.strip()][:n]
    out.write_text("\n".join(lines) + "\n")
    return out


def describe(record: dict[str, Any]) -> str:
    peaks = ", ".join(f"{k} {v:.2f}" for k, v in record["gemm_peak_tflops"].items())
    flags = ", ".join(record["flags"]) or "no AVX-512/AMX"
    return f"{record['model']}, {record['cores']} cores ({flags}); GEMM peak TFLOP/s: {peaks}"


if __name__ == "__main__":
    print(json.dumps(machine_record(), indent=2))
