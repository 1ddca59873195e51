from pathlib import Path

import pytest

from tunesmith.config import load_config
from tunesmith.errors import ConfigError


def test_flags_beat_file_beat_defaults(tmp_path: Path) -> None:
    f = tmp_path / "run.yaml"
    f.write_text("train:\n  epochs: 5\n  learning_rate: 0.01\nlora:\n  r: 4\n", encoding="utf-8")
    cfg = load_config(f, {"train": {"epochs": 2}})
    assert cfg.train.epochs == 2  # flag
    assert cfg.train.learning_rate == 0.01  # file
    assert cfg.lora.r == 4 and cfg.lora.alpha == 32  # file, default
    assert cfg.model.name == "smollm2-135m"


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("train:\n  epochs: lots\n", "train.epochs"),
        ("train:\n  epochz: 3\n", "train.epochz: unknown setting"),
        ("lora:\n  r: 0\n", "lora.r"),
        ("data:\n  overlong: sometimes\n", "data.overlong"),
        ("- a\n- b\n", "must be a mapping"),
        ("train: [\n", "not valid YAML"),
        ("train:\n  batch_size: 6\n  micro_batch_size: 4\n", "multiple of"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, yaml_text: str, expected: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(yaml_text, encoding="utf-8")
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[")):
        load_config(f)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_resolved_config_round_trips_through_yaml(tmp_path: Path) -> None:
    cfg = load_config(None, {"train": {"epochs": 4}, "data": {"train": "x.jsonl"}})
    f = tmp_path / "config.yaml"
    f.write_text(cfg.to_yaml(), encoding="utf-8")
    assert load_config(f) == cfg
