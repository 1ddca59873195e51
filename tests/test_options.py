"""One table from flag to config field (tunesmith/flags.py): checked against RunConfig, and used by the CLI,
`check`, the bakeoff's training and the jobs API alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer.main
from pydantic import BaseModel

from tunesmith.cli.main import app
from tunesmith.config import RunConfig, load_config
from tunesmith.flags import FLAGS, TRUST_REMOTE_CODE_HELP, flag_overrides

# A value each flag accepts, different from its default: every row is proven to reach its field.
SAMPLES: dict[str, Any] = {
    "model": "some/model",
    "trust_remote_code": True,
    "chat_template": "chatml",
    "data": Path("train.jsonl"),
    "val": Path("val.jsonl"),
    "columns": {"prompt": "question", "completion": "answer"},
    "docs": Path("docs"),
    "docs_k": 2,
    "stale_rows": "drop",
    "val_split": 0.2,
    "max_len": 256,
    "overlong": "truncate",
    "train_on": "last",
    "method": "full",
    "objective": "dpo",
    "beta": 0.5,
    "grader": Path("grader.json"),
    "generations": 6,
    "temperature": 0.8,
    "max_completion_len": 64,
    "eval_samples": 5,
    "epochs": 2,
    "lr": 1e-3,
    "batch_size": 8,
    "micro_batch_size": 2,
    "max_steps": 5,
    "eval_every": 3,
    "val_budget": 0.25,
    "save_every": 4,
    "replay": 0.2,
    "kl_to_base": 0.3,
    "kl_source": "text",
    "replay_source": "both",
    "forgetting_probe": False,
    "forgetting_budget": 0.1,
    "seed": 7,
    "lora_r": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.1,
    "packing": False,
    "compile": True,
    "report_to": ["tensorboard", "mlflow"],  # what typer passes (--report-to tensorboard --report-to mlflow)
}


def commands() -> dict[str, Any]:
    return typer.main.get_command(app).commands  # type: ignore[attr-defined]


def test_every_flag_sets_its_config_field() -> None:
    assert set(SAMPLES) == set(FLAGS)
    cfg = load_config(None, flag_overrides(**SAMPLES))
    for name, flag in FLAGS.items():
        section, key = flag.path.split(".")
        assert key in type(getattr(cfg, section)).model_fields, flag.path
        want = str(SAMPLES[name]) if isinstance(SAMPLES[name], Path) else SAMPLES[name]
        got = getattr(getattr(cfg, section), key)
        assert (str(got) if isinstance(got, Path) else got) == want, name
        assert getattr(getattr(RunConfig(), section), key) != got, f"{name}: the sample must differ from the default"
    assert flag_overrides(lr=None, seed=1) == {"train": {"seed": 1}}, "flags not given are left out"


def test_train_declares_every_flag_from_the_table() -> None:
    params = {p.name: p for p in commands()["train"].params}
    for name, flag in FLAGS.items():
        p = params[name]
        assert [*p.opts, *p.secondary_opts] == flag.decl.split("/"), name
        assert p.help == flag.help and p.default is None, name  # None: not given, the YAML's value stays


def test_check_uses_the_table_with_its_own_help() -> None:
    params = {p.name: p for p in commands()["check"].params}
    assert params["max_len"].opts == ["--max-len"] and params["max_len"].help.endswith("(as in train).")
    assert flag_overrides(data=Path("x.jsonl"))["data"] == {"train": "x.jsonl"}  # check's argument is --data's field


def test_trust_remote_code_is_one_option_with_one_help_text() -> None:
    found = {name: p for name, command in commands().items() for p in command.params if p.name == "trust_remote_code"}
    assert set(found) == {"train", "generate", "chat", "eval", "export", "serve", "bakeoff"}
    assert {p.help for p in found.values()} == {TRUST_REMOTE_CODE_HELP}
    assert {p.opts[0] for p in found.values()} == {"--trust-remote-code"}


def test_the_jobs_api_options_are_named_as_the_flags() -> None:
    from tunesmith.serve.schemas import TunesmithOptions

    options: type[BaseModel] = TunesmithOptions
    assert set(options.model_fields) <= set(FLAGS)


def test_job_overrides_go_through_the_table(tmp_path: Path) -> None:
    from tunesmith.serve.jobs import Store
    from tunesmith.serve.worker import job_overrides
    from tunesmith.train.auto import FULL_LR

    store = Store(tmp_path)
    train_id, val_id = "file-" + "a" * 24, "file-" + "b" * 24
    job = {
        "base_source": "some/model",
        "training_file": train_id,
        "validation_file": val_id,
        "hyperparameters": {"n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": 2.0},
        "options": {"method": "full", "lora_r": 8, "max_len": 256, "max_steps": 9, "trust_remote_code": False},
        "seed": 11,
    }
    assert job_overrides(job, store) == {
        "model": {"name": "some/model", "trust_remote_code": False},
        "data": {
            "train": str(store.file_path(train_id)),
            "val": str(store.file_path(val_id)),
            "max_len": 256,
        },
        "train": {"method": "full", "seed": 11, "epochs": 3, "learning_rate": 2.0 * FULL_LR, "max_steps": 9},
        "lora": {"r": 8},
    }
    bare = {**job, "validation_file": None, "hyperparameters": {}, "options": {}}
    cfg = load_config(None, job_overrides(bare, store))
    assert cfg.train.method == "lora" and cfg.train.epochs is None and cfg.data.val is None
    assert cfg.model.trust_remote_code is False and cfg.lora.r == RunConfig().lora.r


@pytest.mark.parametrize("name", sorted(FLAGS))
def test_flag_names_are_the_parameter_names(name: str) -> None:
    assert FLAGS[name].decl.split("/")[0] == "--" + name.replace("_", "-")
