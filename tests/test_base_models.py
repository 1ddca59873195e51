"""Base models (no chat template): the fallback template writes BOS when the tokenizer uses one, it is
announced once with what it looks like, --chat-template chooses another, and a run trains, generates and
exports with the template it recorded. A tiny random Gemma 3 with the real Gemma 3 270M tokenizer (from the
embedded ``gemma3-270m`` packages) stands in for the real base model."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith.data.chat_templates import FALLBACK_TEMPLATE, end_of_turn_id, uses_bos
from tunesmith.data.formats import Conversation, Message
from tunesmith.data.render import IGNORE, Renderer

from .conftest import chat_rows, save_tiny_model, write_jsonl

TEMPLATES = Path(__file__).parent / "templates"


@pytest.fixture(scope="session")
def gemma_tokenizer():
    from tunesmith.models.defaults import ensure_exported
    from tunesmith.models.load import _load_hf_tokenizer

    return _load_hf_tokenizer(str(ensure_exported("gemma3-270m")), local=True)


@pytest.fixture(scope="session")
def tiny_gemma_dir(tmp_path_factory: pytest.TempPathFactory, gemma_tokenizer) -> Path:
    """A 2-layer Gemma 3 (hidden 32) with the real, template-less Gemma 3 tokenizer: a base model."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=len(gemma_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=1024,
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
        bos_token_id=2,
        eos_token_id=1,
        pad_token_id=0,
    )
    tok = copy.deepcopy(gemma_tokenizer)
    tok.chat_template = None
    out = save_tiny_model(Gemma3ForCausalLM, config, tok, tmp_path_factory.mktemp("tiny-gemma3"), seed=0)
    assert not (out / "chat_template.jinja").exists()
    return out


def tunesmith(*args: str, quiet: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400", "TUNESMITH_QUIET": "1" if quiet else "0"}
    return subprocess.run([sys.executable, "-m", "tunesmith", *args], capture_output=True, text=True, env=env)


def one(role_texts: list[tuple[str, str]]) -> Conversation:
    return Conversation([Message(r, t) for r, t in role_texts], source="t:1")


def test_fallback_writes_bos_when_the_tokenizer_uses_one(gemma_tokenizer, tokenizer) -> None:
    gemma = copy.deepcopy(gemma_tokenizer)
    assert uses_bos(gemma) and gemma.chat_template is None
    r = Renderer(gemma).render(one([("user", "Hi"), ("assistant", "Hello")]))
    assert r.input_ids[0] == gemma.bos_token_id and r.input_ids.count(gemma.bos_token_id) == 1
    trained = [t for t, lab in zip(r.input_ids, r.labels, strict=True) if lab != IGNORE]
    assert gemma.decode(trained) == "Hello<eos>"
    assert Renderer(gemma).prompt_ids([{"role": "user", "content": "Hi"}])[0] == gemma.bos_token_id
    # SmolLM2's GPT-2 style tokenizer writes no BOS in front of text: neither does its fallback.
    smol = copy.deepcopy(tokenizer)
    smol.chat_template = None
    assert not uses_bos(smol)
    Renderer(smol)
    assert smol.chat_template == FALLBACK_TEMPLATE


def test_end_of_turn_of_each_kind_of_template(gemma_tokenizer, tokenizer) -> None:
    from tunesmith.data.chat_templates import apply_choice

    gemma = copy.deepcopy(gemma_tokenizer)
    apply_choice(gemma, "gemma")
    assert end_of_turn_id(gemma) == gemma.convert_tokens_to_ids("<end_of_turn>")
    apply_choice(gemma, "fallback")
    assert end_of_turn_id(gemma) == gemma.eos_token_id
    assert end_of_turn_id(tokenizer) == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_train_generate_and_export_use_the_recorded_fallback(tiny_gemma_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", chat_rows(8))
    run = tmp_path / "run"
    common = ["--data", str(data), "--max-steps", "2", "--batch-size", "4", "--no-packing"]
    proc = tunesmith("train", "--model", str(tiny_gemma_dir), "--out", str(run), *common)
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stdout.split())
    assert said.count("has no chat template: using tunesmith's fallback") == 1, said
    assert "'<bos>### user:\\nHello\\n\\n### assistant:\\nHi!<eos>\\n\\n'" in said
    info = json.loads((run / "run.json").read_text())
    assert info["chat_template"] == "fallback"
    assert (run / "adapter" / "chat_template.jinja").read_text().startswith("{{ bos_token }}")

    gen = tunesmith("generate", str(run), "--prompt", "Paint the car red", "--max-tokens", "4")
    assert gen.returncode == 0, gen.stderr
    assert "has no chat template: using tunesmith's fallback" in " ".join(gen.stdout.split())
    # A run is prompted with the template it trained with; naming another is refused in one line.
    wrong = tunesmith("generate", str(run), "--prompt", "hi", "--chat-template", "gemma")
    assert wrong.returncode == 2 and "trained with the chat template 'fallback'" in wrong.stderr, wrong.stderr
    assert "Traceback" not in wrong.stderr

    from tunesmith.models.load import load_tokenizer

    assert load_tokenizer(str(run)).chat_template == (run / "adapter" / "chat_template.jinja").read_text()


def test_chosen_template_is_trained_recorded_and_stops(tiny_gemma_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", chat_rows(8))
    run = tmp_path / "run"
    common = ["--data", str(data), "--max-steps", "1", "--batch-size", "4", "--no-packing"]
    proc = tunesmith("train", "--model", str(tiny_gemma_dir), "--chat-template", "gemma", "--out", str(run), *common)
    assert proc.returncode == 0, proc.stderr
    assert "fallback" not in proc.stdout
    assert json.loads((run / "run.json").read_text())["chat_template"] == "gemma"

    from tunesmith.generate import generate
    from tunesmith.models.load import load_model
    from tunesmith.models.stops import stop_token_ids

    model, tok, _ = load_model(str(run))
    end = tok.convert_tokens_to_ids("<end_of_turn>")
    # One list of stops: the template's end-of-turn is in it, and in the generation config written on export.
    assert end in stop_token_ids(model, tok) and end in model.generation_config.eos_token_id
    r = Renderer(tok, stop_token_ids=stop_token_ids(model, tok)).render(one([("user", "a"), ("assistant", "b")]))
    trained = [t for t, lab in zip(r.input_ids, r.labels, strict=True) if lab != IGNORE]
    assert tok.decode(trained) == "b<end_of_turn>"  # not <end_of_turn><eos>
    assert generate(model, tok, [[{"role": "user", "content": "x"}]], max_new_tokens=2)[0].text is not None


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("llama3", "needs the tokens <|start_header_id|>, <|end_header_id|>, <|eot_id|>"),
        ("nonsense", "not a file, and not one of fallback, chatml, llama3, gemma"),
    ],
)
def test_bad_template_choices_are_one_line(tiny_gemma_dir: Path, tmp_path: Path, choice: str, expected: str) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", chat_rows(4))
    proc = tunesmith("check", str(data), "--model", str(tiny_gemma_dir), "--chat-template", choice, quiet=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expected in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr
    if choice == "llama3":  # the advice names what fits, and it works
        assert "use --chat-template gemma or fallback" in " ".join(proc.stderr.split())
        ok = tunesmith("check", str(data), "--model", str(tiny_gemma_dir), "--chat-template", "gemma", quiet=True)
        assert ok.returncode == 0, ok.stderr


def test_template_from_a_file(tiny_gemma_dir: Path, tmp_path: Path) -> None:
    from tunesmith.models.load import load_tokenizer

    path = tmp_path / "t.jinja"
    path.write_text((TEMPLATES / "qwen2_5.jinja").read_text())
    tok = load_tokenizer(str(tiny_gemma_dir), chat_template=str(path))
    assert tok.chat_template == path.read_text()
