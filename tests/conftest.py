"""Shared fixtures. Unit tests run on a tiny randomly initialised Llama that uses the real SmolLM2
tokenizer and chat template; a few tests (marked slow) use the real default model."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
# Tests share one tunesmith home (the exported default model lives there) but never touch the user's.
os.environ.setdefault("TUNESMITH_HOME", str(REPO / ".pytest-home"))
os.environ["TUNESMITH_QUIET"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    from tunesmith.models.defaults import ensure_exported

    return ensure_exported("smollm2-135m")


@pytest.fixture(scope="session")
def tokenizer(default_model_dir: Path):
    from tunesmith.models.load import load_tokenizer

    return load_tokenizer(str(default_model_dir))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    """A 2-layer Llama with hidden size 32, saved as a plain HF folder with the real tokenizer."""
    return save_tiny_llama(tokenizer, tmp_path_factory.mktemp("tiny-llama"), hidden=32)


def save_tiny_llama(tokenizer, out: Path, hidden: int) -> Path:
    """A 2-layer random Llama (seed 0) of this hidden size, saved with ``tokenizer`` at ``out``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    return save_tiny_model(LlamaForCausalLM, config, tokenizer, out, seed=0)


def tiny_sizes(tokenizer, **overrides: Any) -> dict[str, Any]:
    """The config fields most tiny test models share (2 layers, hidden 64), with the tokenizer's ids."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "max_position_embeddings": 512,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **overrides,
    }


def save_tiny_model(
    model_cls: Any,
    config: Any,
    tokenizer: Any,
    out: Path,
    *,
    seed: int,
    redraw: tuple[Callable[[str], bool], float, float] | None = None,
) -> Path:
    """A random ``model_cls(config)`` (seeded), saved with ``tokenizer`` as a plain HF folder at ``out``.
    ``redraw`` = (which parameter names, mean, std): parameters that start at a constant (norms, biases) drawn
    at random instead, so that a conversion that loses them shows."""
    import torch

    torch.manual_seed(seed)
    model = model_cls(config)
    if redraw is not None:
        which, mean, std = redraw
        with torch.no_grad():
            for name, p in model.named_parameters():
                if which(name):
                    p.normal_(mean, std)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def chat_rows(n: int, seed: int = 0) -> list[dict]:
    """Small, varied, learnable chat rows: a colour question -> a JSON answer."""
    import random

    rng = random.Random(seed)
    colours = ["red", "green", "blue", "amber", "violet", "teal"]
    things = ["car", "house", "kite", "door", "scarf", "boat", "lamp"]
    rows = []
    for _ in range(n):
        c, t = rng.choice(colours), rng.choice(things)
        words = " ".join(rng.choice(["please", "quickly", "today", "now", "kindly"]) for _ in range(rng.randint(0, 12)))
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"Paint the {t} {c} {words}".strip()},
                    {"role": "assistant", "content": json.dumps({"object": t, "colour": c})},
                ]
            }
        )
    return rows


@pytest.fixture(scope="module")
def jobs_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[tuple[str, Path]]:
    """A real `tunesmith serve` of the tiny model (as "tiny"), jobs API on: (url, its TUNESMITH_HOME).
    One per test module, so that each module's jobs and files start from an empty store."""
    from .serve_helpers import start_server, stop_server

    tmp = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    proc, url = start_server([f"tiny={tiny_model_dir}"], tmp / "home", tmp / "server.log")
    yield url, tmp / "home"
    stop_server(proc)


@pytest.fixture
def chat_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", chat_rows(24))


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in-process: the same main() as the installed command, without a new interpreter."""
    from tunesmith.cli.main import main

    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err
