"""What the benchmarks against TRL share: peak RSS of the current process, and TRL's side set up the same way
for every trainer (CPU, bf16 where native, no saving or reporting, the same LoRA on every linear layer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
