"""The one table from a command-line flag to the config field it sets (``config.py``), with its --help line.

``cli/options.py`` makes the typer options from it, ``flag_overrides`` turns the flags a user gave into config
overrides (for `train`, `check`, and the jobs API's hyperparameters in ``serve/worker.py``), and a test checks
every row against ``RunConfig``'s fields. Plain data, no imports: the CLI reads it at start-up, and
``tunesmith --help`` must not wait for pydantic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TRUST_REMOTE_CODE_HELP = "Let the model run its own Python code (off by default)."


@dataclass(frozen=True)
class Flag:
    decl: str  # what typer declares: "--lr", or "--packing/--no-packing" for an on/off pair
    path: str  # the config field it sets: "section.field"
    help: str | None = None  # its line in --help

    @property
    def section(self) -> str:
        return self.path.split(".")[0]

    @property
    def key(self) -> str:
        return self.path.split(".")[1]


# Keyed by the flag as a Python parameter name (what typer passes: --batch-size -> batch_size).
FLAGS: dict[str, Flag] = {
    "model": Flag("--model", "model.name", "Alias, HF folder, .gguf file or hub id."),
    "trust_remote_code": Flag("--trust-remote-code", "model.trust_remote_code", TRUST_REMOTE_CODE_HELP),
    "chat_template": Flag(
        "--chat-template", "model.chat_template", "Chat template: a .jinja file, or fallback, chatml, llama3, gemma."
    ),
    "data": Flag("--data", "data.train", "Training data: JSONL, JSON, CSV/TSV, Parquet, Arrow or a datasets folder."),
    "val": Flag("--val", "data.val", "Validation data (any of the same kinds)."),
    "columns": Flag(
        "--columns", "data.columns", "Read row keys from other columns: prompt=question,completion=answer."
    ),
    "docs": Flag("--docs", "data.docs", "Docs folder: train on prompts that include the nearest doc chunks."),
    "docs_k": Flag("--docs-k", "data.docs_k", "Doc chunks per prompt with --docs (default 4)."),
    "stale_rows": Flag(
        "--stale-rows",
        "data.stale_rows",
        "mask | plain | drop: rows the --docs contradict (default mask: stale facts untrained).",
    ),
    "val_split": Flag("--val-split", "data.val_split", "Hold out this fraction instead."),
    "max_len": Flag("--max-len", "data.max_len", "Longest sequence in tokens."),
    "overlong": Flag("--overlong", "data.overlong", "drop | truncate | error"),
    "train_on": Flag("--train-on", "data.train_on", "all | last assistant turns"),
    "method": Flag(
        "--method", "train.method", "lora (default), full, dpo (DPO with LoRA) or rft (reinforcement, with LoRA)."
    ),
    "objective": Flag(
        "--objective", "train.objective", "sft, dpo or rft (default: dpo for preference pairs, else sft)."
    ),
    "beta": Flag("--beta", "train.beta", "Pull toward the starting model: DPO's beta (0.1), RFT's KL (off)."),
    "grader": Flag("--grader", "train.grader", "RFT: an OpenAI grader .json file (see `tunesmith grade`)."),
    "generations": Flag("--generations", "train.generations", "RFT: completions sampled per prompt (K)."),
    "temperature": Flag("--temperature", "train.temperature", "RFT: sampling temperature (default 1.0)."),
    "max_completion_len": Flag(
        "--max-completion-len", "train.max_completion_len", "RFT: most tokens per sampled completion (128)."
    ),
    "eval_samples": Flag("--eval-samples", "train.eval_samples", "RFT: held-out prompts graded per validation."),
    "epochs": Flag("--epochs", "train.epochs"),
    "lr": Flag("--lr", "train.learning_rate", "Peak learning rate."),
    "batch_size": Flag("--batch-size", "train.batch_size", "Examples per optimizer step."),
    "micro_batch_size": Flag("--micro-batch-size", "train.micro_batch_size", "Examples per forward."),
    "max_steps": Flag("--max-steps", "train.max_steps"),
    "eval_every": Flag("--eval-every", "train.eval_every"),
    "val_budget": Flag("--val-budget", "train.val_budget", "Most of the compute validation may take (0.1: 10%)."),
    "save_every": Flag("--save-every", "train.save_every"),
    "replay": Flag(
        "--replay", "train.replay", "Share of each step's trained tokens that are general English (0.1: 10%; 0: off)."
    ),
    "replay_source": Flag(
        "--replay-source",
        "train.replay_source",
        "What --replay mixes in: chat (the base model's answers to everyday prompts), text (prose) or both.",
    ),
    "kl_to_base": Flag(
        "--kl-to-base",
        "train.kl_to_base",
        "LoRA: weight of the KL-to-base term that holds everyday behaviour (default: 2 for LoRA SFT; 0 is off).",
    ),
    "kl_source": Flag(
        "--kl-source", "train.kl_source", "What --kl-to-base reads: chat (the base's own answers, default) or text."
    ),
    "forgetting_probe": Flag(
        "--forgetting-probe/--no-forgetting-probe",
        "train.forgetting_probe",
        "Measure general-English perplexity at every validation (default on).",
    ),
    "forgetting_budget": Flag(
        "--forgetting-budget",
        "train.forgetting_budget",
        "Best weights only among evaluations whose general-English perplexity rose by at most this (0.1: +10%).",
    ),
    "seed": Flag("--seed", "train.seed"),
    "lora_r": Flag("--lora-r", "lora.r"),
    "lora_alpha": Flag("--lora-alpha", "lora.alpha"),
    "lora_dropout": Flag("--lora-dropout", "lora.dropout"),
    "packing": Flag("--packing/--no-packing", "train.packing", "Pack examples into shared rows (default on)."),
    "compile": Flag(
        "--compile/--no-compile", "train.compile", "torch.compile the decoder layers (default: auto, on for long runs)."
    ),
    "report_to": Flag(
        "--report-to",
        "train.report_to",
        "Also log the metrics to tensorboard, mlflow or both (tensorboard,mlflow); needs the 'trackers' extra.",
    ),
}


def flag_overrides(**given: object) -> dict[str, dict[str, object]]:
    """Flags by name (``lr=1e-4``) as nested config overrides (``{"train": {"learning_rate": 1e-4}}``), of only
    the flags that were given (not None). Paths become strings, as YAML would hold them."""
    out: dict[str, dict[str, object]] = {}
    for name, value in given.items():
        if value is None:
            continue
        flag = FLAGS[name]
        out.setdefault(flag.section, {})[flag.key] = str(value) if isinstance(value, Path) else value
    return out
