"""Every setting of a run, in one place.

The pydantic models here are the single source of truth: a YAML file fills them, CLI flags override the
file (``flags.py`` maps each flag to its field here), and the defaults below fill the rest. ``None`` on a
hyperparameter means "choose for the data" (see ``train/auto.py``); the resolved values are written back to
the run's ``config.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tunesmith.errors import ConfigError

DEFAULT_MODEL = "smollm2-135m"


class _Strict(BaseModel):
    # Unknown keys are mistakes (a typo in YAML silently ignored is a lost afternoon).
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSettings(_Strict):
    name: str = Field(DEFAULT_MODEL, description="Alias, local HF folder, local .gguf file, or hub id.")
    trust_remote_code: bool = Field(False, description="Allow model code from the model folder to run.")
    chat_template: str | None = Field(
        None,
        description="The chat template: a .jinja file, or fallback, chatml, llama3 or gemma. None: the model's own, "
        "or tunesmith's fallback for a model without one (a base model).",
    )


class DataSettings(_Strict):
    train: Path | None = Field(
        None, description="Training data: a JSONL, JSON, CSV/TSV, Parquet or Arrow file, or a `datasets` folder."
    )
    val: Path | None = Field(
        None, description="Validation data, in any of train's kinds; if absent, val_split is held out."
    )
    columns: dict[str, str] | None = Field(
        None,
        description="Row keys read from differently named columns: {prompt: question, completion: answer}, or "
        "'prompt=question,completion=answer' (--columns).",
    )
    val_split: float | None = Field(
        None,
        ge=0.0,
        lt=0.5,
        description="Fraction of train held out for validation (seeded). None: 10% when there are "
        ">= 100 rows and no --val, else 0.",
    )
    docs: Path | None = Field(
        None,
        description="Documents (.txt/.md folder): each training prompt gets its docs_k nearest chunks, in the "
        "context format eval, serve and the bakeoff use, so the model learns to take facts from the context.",
    )
    docs_k: int = Field(4, ge=1, description="Doc chunks retrieved into each prompt (with docs).")
    stale_rows: Literal["mask", "plain", "drop"] = Field(
        "mask",
        description="With docs: rows whose replies state facts the docs do not train with context, their stale "
        "facts untrained (mask), whole without context (plain), or are left out (drop).",
    )
    max_len: int = Field(1024, ge=16, description="Longest sequence in tokens.")
    overlong: Literal["drop", "truncate", "error"] = Field(
        "drop", description="What happens to rows longer than max_len; counted in the run summary."
    )
    train_on: Literal["all", "last"] = Field(
        "all", description="Train on every assistant turn with weight 1, or on the last assistant turn only."
    )

    @field_validator("columns", mode="before")
    @classmethod
    def _parse_columns(cls, value: Any) -> Any:
        from tunesmith.data.sources import parse_columns

        return parse_columns(value) if isinstance(value, str | dict) else value


class LoraSettings(_Strict):
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Dropout on the LoRA input. 0 by default: PEFT's dropout path made CPU steps ~1.5x "
        "slower in our measurements, and early stopping on validation loss already guards against overfitting.",
    )
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt; 'all-linear' is every linear projection."
    )


class TrainSettings(_Strict):
    method: Literal["lora", "full"] = Field(
        "lora",
        description="LoRA adapters or full fine-tuning. 'dpo' and 'rft' are short for that objective with LoRA.",
    )
    objective: Literal["sft", "dpo", "rft"] | None = Field(
        None,
        description="What the loss rewards: sft (the reference replies), dpo (the preferred reply of each "
        "pair over the other) or rft (high grades from a grader, by GRPO). None: dpo for a file of preference "
        "pairs, sft otherwise.",
    )
    beta: float | None = Field(
        None,
        gt=0,
        description="How strongly the policy is held near the starting model. DPO's beta (None: 0.1); RFT's KL "
        "coefficient (None: no KL term, TRL's default).",
    )
    grader: str | None = Field(
        None, description="RFT: an OpenAI grader, as a .json file (string_check, text_similarity, python, multi...)."
    )
    generations: int | None = Field(
        None, ge=2, le=64, description="RFT: completions sampled per prompt (K, a group); None chooses."
    )
    temperature: float | None = Field(None, gt=0, le=2, description="RFT: sampling temperature; None: 1.0.")
    max_completion_len: int | None = Field(
        None, ge=1, description="RFT: most tokens a sampled completion may have; None: 128."
    )
    eval_samples: int | None = Field(
        None, ge=1, description="RFT: held-out prompts graded at each validation (a fixed sample); None: all."
    )
    dpo_nll: float | None = Field(
        None,
        ge=0,
        description="Weight of the preferred reply's own loss (negative log-likelihood per token) added to DPO's, "
        "as in RPO (Pang et al. 2024); it keeps the preferred reply likely while the pair is pulled apart. "
        "None chooses (1.0); 0 is plain DPO.",
    )
    epochs: int | None = Field(None, ge=1, description="Passes over the data; None chooses for the data size.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    learning_rate: float | None = Field(None, gt=0, description="Peak learning rate; None chooses per method.")
    batch_size: int | None = Field(None, ge=1, description="Examples per optimizer step; None chooses.")
    micro_batch_size: int | None = Field(
        None, ge=1, description="Examples per forward pass; batch_size / micro_batch_size is accumulation."
    )
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0, description="Share of steps spent warming up.")
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="Cosine decays to this share of the peak.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    eval_every: int | None = Field(
        None, ge=1, description="Validate every N steps; None: ~10 times a run, within val_budget."
    )
    val_budget: float = Field(
        0.1,
        gt=0.0,
        le=1.0,
        description="Most of the run's compute that validation may take (a validation token costs a third of a "
        "trained one). Beyond it the run validates less often, then on a fixed sample of the validation rows.",
    )
    save_every: int | None = Field(None, ge=1, description="Checkpoint every N steps; None: at each eval.")
    early_stopping_patience: int | None = Field(
        3, ge=1, description="Stop after this many evals without a better validation loss; None: never."
    )
    keep_checkpoints: int = Field(2, ge=1, description="How many recent checkpoints to keep.")
    replay: float | None = Field(
        None,
        ge=0.0,
        le=0.5,
        description="SFT: share of each step's trained tokens that are general English (a shipped text, not the "
        "one the forgetting check reads), trained with a plain language-model loss to hold on to general "
        "ability. None chooses (see train/auto.py); 0 is off.",
    )
    replay_source: Literal["chat", "text", "both"] = Field(
        "chat",
        description="What replay mixes in. chat: the run's base model's own answers to shipped everyday prompts "
        "(train/chat_replay.py), which keeps its habit of answering them; text: plain English prose; both: half "
        "each. chat falls back to text where the base finishes too few answers (a base model without a chat "
        "habit).",
    )
    kl_to_base: float | None = Field(
        None,
        ge=0.0,
        description="LoRA: weight of a KL(base || tuned) term on one general row a step (the base is the adapter "
        "disabled; the row is what kl_source names). None chooses (see train/auto.py: on for LoRA SFT); 0 is off.",
    )
    kl_rows: int = Field(
        1, ge=1, le=64, description="Rows the KL-to-base term reads a step (each costs two forwards and a backward)."
    )
    kl_source: Literal["text", "chat"] = Field(
        "chat",
        description="What the KL-to-base term reads. text: general English prose (the replay text); chat: the base "
        "model's own answers to the everyday prompts of chat replay, prompt and reply (falls back to text where "
        "the base finishes too few).",
    )
    forgetting_probe: bool = Field(
        True,
        description="Measure the forgetting check's general-English perplexity before training and at every "
        "validation (metrics.jsonl: probe_perplexity, probe_change; run.json: forgetting_probe).",
    )
    forgetting_budget: float | None = Field(
        None,
        gt=0.0,
        description="Best weights: the lowest validation loss among the evaluations whose general-English "
        "perplexity rose by at most this share (0.1: +10%, the check's threshold); a run past it stops early. "
        "None: the probe is only logged.",
    )
    packing: bool = Field(
        True,
        description="Pack several examples into one sequence (each attends only to itself, positions restart "
        "at 0) instead of padding them. Changes the layout of a step, never its examples or its update.",
    )
    pack_len: int | None = Field(
        None, ge=16, description="Tokens per packed row; None: the longest example of each step."
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in the backward pass: less memory, ~30% more compute. Off by default: "
        "a small model's LoRA activations fit easily.",
    )
    compile: bool | Literal["auto"] = Field(
        "auto",
        description="torch.compile each decoder layer (dynamic shapes). auto: on for a single-process run of at "
        "least 30 steps on a model of 50M+ parameters where inductor finds a C++ compiler, so its warm-up "
        "(about 30 s on a 2-core CPU) pays for itself; off otherwise. See BENCHMARKS.md.",
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="auto: bf16 where the hardware supports it (checked at run time), else fp32. bf16 means "
        "autocast with fp32 trainable weights; for LoRA the frozen base is stored in bf16 too.",
    )
    seed: int = Field(42, description="Seeds data order, splits, dropout and initialisation.")
    report_to: list[Literal["tensorboard", "mlflow"]] = Field(
        default_factory=list,
        description="Experiment trackers that also get every metrics.jsonl line (train/trackers.py): tensorboard, "
        "mlflow, or both; 'tensorboard,mlflow' is split. Needs pip install 'tunesmith[trackers]'.",
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _split_report_to(cls, value: Any) -> Any:
        """``--report-to tensorboard,mlflow`` (one flag, or several) and ``report_to: mlflow`` in YAML."""
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            return value
        names = [n.strip() for item in items for n in (item.split(",") if isinstance(item, str) else [item])]
        return list(dict.fromkeys(n for n in names if n != ""))

    @model_validator(mode="before")
    @classmethod
    def _method_dpo(cls, data: Any) -> Any:
        """``method: dpo`` / ``method: rft`` (the jobs API's and the CLI's words) are that objective with LoRA."""
        if isinstance(data, dict) and data.get("method") in ("dpo", "rft"):
            name = data["method"]
            if data.get("objective") not in (None, name):
                raise ValueError(f"method {name} contradicts objective {data['objective']}")
            data = {**data, "method": "lora", "objective": name}
        return data


class RunConfig(_Strict):
    model: ModelSettings = Field(default_factory=ModelSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)

    @model_validator(mode="after")
    def _batch_divides(self) -> RunConfig:
        t = self.train
        # (RFT's micro-batch counts sampled completions, K per prompt of a batch: no relation to check)
        if t.batch_size and t.micro_batch_size and t.batch_size % t.micro_batch_size and t.objective != "rft":
            raise ValueError(
                f"train.batch_size ({t.batch_size}) must be a multiple of train.micro_batch_size ({t.micro_batch_size})"
            )
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` on top of ``base``, section by section (neither is changed)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "config"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown setting"
    extra = f" (and {len(err.errors()) - 1} more problems)" if len(err.errors()) > 1 else ""
    return f"{field}: {msg}{extra}"


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults < YAML file < overrides (CLI flags). Raises ConfigError naming the bad field."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (UnicodeDecodeError, IsADirectoryError):
            raise ConfigError(f"config file is not a UTF-8 text file: {path}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the config must be a mapping of sections (model, data, lora, train)")
        data = loaded
    data = deep_merge(data, overrides or {})
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{_describe(e)}") from None
