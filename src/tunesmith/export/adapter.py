"""Adapter export: the PEFT files as trained, the tokenizer and chat template, and a model card.

The adapter files are copied byte for byte (PEFT, transformers and vLLM read them as they are); the card
says what the adapter needs and where it came from: the base model, the data hash, the settings, and
the evaluation headline when the run was evaluated.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from tunesmith.config import RunConfig
from tunesmith.models.load import ModelSource
from tunesmith.runs import RunInfo

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
EVAL_FILES = ("eval.json", "eval/eval.json")  # `tunesmith eval` writes eval.json into the run or a subfolder


def estimate_bytes(weights_dir: Path) -> int:
    return sum((weights_dir / f).stat().st_size for f in ADAPTER_FILES if (weights_dir / f).is_file()) + (32 << 20)


def write_adapter(weights_dir: Path, tokenizer: Any, out: Path) -> None:
    """The adapter files byte for byte, and the training tokenizer (its chat template travels with it).
    The model card is written after the checks, which it quotes."""
    for name in ADAPTER_FILES:
        shutil.copyfile(weights_dir / name, out / name)
    tokenizer.save_pretrained(out)


def read_adapter(out: Path, base: ModelSource, *, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """Load the export with plain transformers + PEFT, on a fresh copy of the base model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.models.gguf import load_gguf
    from tunesmith.models.lora import quiet_peft

    if base.kind == "gguf":  # transformers needs its GGUF reader (and its quantized marker cleared)
        base_model = load_gguf(Path(base.path))[0]
    else:
        base_model = AutoModelForCausalLM.from_pretrained(
            base.path, dtype=torch.float32, trust_remote_code=trust_remote_code
        )
    with quiet_peft():
        model = PeftModel.from_pretrained(base_model, str(out)).eval()
    return model, AutoTokenizer.from_pretrained(out, trust_remote_code=trust_remote_code)


def _eval_headline(run_dir: Path) -> list[str]:
    """The headline of the run's evaluation: `tunesmith eval`'s rows (label, one value per condition,
    verdict), or, for another layout, its top-level numbers."""
    for name in EVAL_FILES:
        path = run_dir / name
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return [f"`{name}` exists but could not be read."]
            headline = data.get("headline") if isinstance(data, dict) else None
            if isinstance(headline, list):
                return [f"From `{name}`:", "", *_headline_rows(headline, data.get("conditions") or {})]
            return [f"From `{name}`:", "", *_numbers(data)]
    return []


def _headline_rows(rows: list[Any], conditions: dict[str, Any]) -> list[str]:
    out = []
    for row in rows[:12]:
        if not isinstance(row, dict) or "label" not in row:
            continue
        values = [
            f"{(conditions.get(n) or {}).get('label', n)} {row[n]:.4g}"
            for n in conditions
            if isinstance(row.get(n), int | float) and not isinstance(row.get(n), bool)
        ]
        verdict = f" ({row['verdict']})" if row.get("verdict") else ""
        out.append(f"- {row['label']}: {', '.join(values)}{verdict}")
    return out


def _numbers(data: Any, prefix: str = "", limit: int = 12) -> list[str]:
    rows: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if len(rows) >= limit:
                break
            if isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                rows.append(f"- {prefix}{key}: {value:.4g}")
            elif isinstance(value, dict) and not prefix:  # one level down: base / tuned / ...
                rows += _numbers(value, f"{key}.", limit - len(rows))
    return rows


def _or_unknown(value: str | None) -> str:
    return "?" if value is None else value


def _validation_line(info: RunInfo) -> str:
    if info.hashes.val_data:
        return f"- validation data sha256: `{info.hashes.val_data}`"
    if info.counts.val.get("kept"):
        return "- validation: a seeded share held out from the training data"
    return "- validation: none"


def _base_line(base_path: str) -> str:
    """The one line that loads the base in plain transformers. A .gguf needs its folder and ``gguf_file=`` (the
    adapter_config.json's base_model_name_or_path names the folder, which alone does not load)."""
    if base_path.endswith(".gguf"):
        path = Path(base_path).resolve()
        return f'base = AutoModelForCausalLM.from_pretrained("{path.parent}", gguf_file="{path.name}")'
    return f'base = AutoModelForCausalLM.from_pretrained("{base_path}")'


def model_card(run_dir: Path, info: RunInfo, cfg: RunConfig, base_path: str, checks: list[str]) -> str:
    hashes = info.hashes
    t, lora = cfg.train, cfg.lora
    hub_base = info.base_model.count("/") == 1 and not Path(info.base_model).exists()
    front = ["---", "library_name: peft", "tags: [tunesmith, lora]"]
    if hub_base:
        front.append(f"base_model: {info.base_model}")
    front.append("---")
    val_loss = info.best_val_loss
    lines = [
        *front,
        f"# LoRA adapter: {run_dir.name}",
        "",
        f"Trained with tunesmith {info.versions.get('tunesmith', '')} on {_or_unknown(info.created)}.",
        "",
        "## Base model",
        f"- `{info.base_model}` (loaded from `{base_path}`)",
        f"- weights sha256 (first 16 hex digits): `{_or_unknown(hashes.model)}`",
        "- The adapter was trained on exactly these weights; on other copies of the model it may behave "
        "differently (the default `smollm2-135m` alias is SmolLM2-135M-Instruct dequantized from Q4_1).",
        "",
        "## Data",
        f"- training data: `{cfg.data.train}`, sha256 `{_or_unknown(hashes.train_data)}`",
        _validation_line(info),
        f"- chat template sha256: `{_or_unknown(hashes.chat_template)}`; rows kept: "
        f"{info.counts.train.get('kept', '?')}",
        "",
        "## Training settings",
        f"- LoRA r={lora.r}, alpha={lora.alpha}, dropout={lora.dropout}, target modules: {lora.target_modules}",
        f"- {info.steps} steps ({t.epochs} epochs max), batch {t.batch_size} (micro {t.micro_batch_size}), "
        f"learning rate {t.learning_rate}, warmup {t.warmup_ratio}, weight decay {t.weight_decay}, seed {t.seed}",
        f"- max_len {cfg.data.max_len}, train_on {cfg.data.train_on}, precision {info.precision}",
        f"- final train loss {info.final_train_loss}"
        + (f", best validation loss {val_loss:.4f} at step {info.best_step}" if val_loss else ""),
        "",
        "## Evaluation",
        *(_eval_headline(run_dir) or ["Not evaluated (no eval.json in the run)."]),
        "",
        "## Use",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        _base_line(base_path),
        'model = PeftModel.from_pretrained(base, "THIS_FOLDER")',
        'tokenizer = AutoTokenizer.from_pretrained("THIS_FOLDER")  # the chat template used in training',
        "```",
        "",
        "## Parity checks (from export.json)",
        *[f"- {c}" for c in checks],
        "",
    ]
    return "\n".join(lines)
