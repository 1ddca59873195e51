"""GGUF export of Gemma 3, Qwen3 and Mistral, each a tiny random model, read back with transformers' GGUF reader
(the export's own parity check, plus the class and metadata checked here).

Gemma 3 uses a tiny tokenizer of its kind (a SentencePiece-style BPE with byte fallback, built as a
``GemmaTokenizer``) so its GGUF reads back in a second; the others the shared ~400-token byte-level one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tunesmith.export import export_run, parity

from .conftest import chat_rows, save_tiny_model, tiny_sizes, write_jsonl
from .test_export import checks_by_name, data_file, small_model, small_tokenizer, train_lora  # noqa: F401 (fixtures)

GEMMA_CHAT = (
    "{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + m['content'] + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


@pytest.fixture(autouse=True)
def short_continuations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parity, "MAX_NEW_TOKENS", 8)


@pytest.fixture(scope="module")
def gemma_style_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import GemmaTokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    texts = [m["content"] for row in chat_rows(200) for m in row["messages"]]
    texts += [m["content"] for conv in parity.FIXED_CONVERSATIONS for m in conv] + ["model user system"]
    bpe = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    bpe.normalizer = normalizers.Replace(" ", "\u2581")
    bpe.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=specials + [f"<0x{i:02X}>" for i in range(256)], initial_alphabet=[]
    )
    bpe.train_from_iterator(texts, trainer)
    spec = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in spec["merges"]]
    tok = GemmaTokenizer(
        vocab=spec["vocab"], merges=merges, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    tok.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    tok.chat_template = GEMMA_CHAT
    return tok


def tiny_gemma3(tokenizer, out: Path) -> Path:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        **tiny_sizes(tokenizer, num_attention_heads=4, num_key_value_heads=1, head_dim=16),
        sliding_window=32,
        bos_token_id=tokenizer.bos_token_id,
    )
    # Norms start at 0 (scale 1 + w): make them count, so a lost "+ 1" shows.
    return save_tiny_model(Gemma3ForCausalLM, config, tokenizer, out, seed=2, redraw=(lambda n: "norm" in n, 0, 0.3))


def tiny_qwen3(tokenizer, out: Path) -> Path:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        **tiny_sizes(tokenizer, num_attention_heads=2, num_key_value_heads=1),
        head_dim=128,  # what transformers' reader assumes for Qwen3 (the GGUF does not say)
        tie_word_embeddings=True,
    )
    return save_tiny_model(Qwen3ForCausalLM, config, tokenizer, out, seed=3, redraw=(lambda n: "norm" in n, 1, 0.3))


def export_f32(run: Path, out: Path):
    result = export_run(run, "gguf", dtype="f32", out=out)
    checks = checks_by_name(result)
    assert all(c.passed for c in result.checks), [c.summary() for c in result.checks]
    readback = checks["gguf_readback"].detail
    assert readback["tensor_max_abs_diff"] == 0.0 and readback["logits_max_abs_diff"] < 1e-4
    assert readback["greedy_identical"] == "8/8"
    return out / "model-f32.gguf"


def test_gemma3_gguf_reads_back(gemma_style_tokenizer, tmp_path: Path) -> None:
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = write_jsonl(tmp_path / "train.jsonl", chat_rows(16))
    base = tiny_gemma3(gemma_style_tokenizer, tmp_path / "base")
    path = export_f32(train_lora(base, tmp_path / "run", data), tmp_path / "g")
    reader = gguf.GGUFReader(path)
    field = lambda k: reader.fields[k].contents()  # noqa: E731
    assert field("general.architecture") == "gemma3" and field("tokenizer.ggml.model") == "llama"
    end = gemma_style_tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert field("tokenizer.ggml.eot_token_id") == end  # the template's end-of-turn, for llama.cpp
    assert field("tokenizer.ggml.token_type")[gemma_style_tokenizer.convert_tokens_to_ids("<0x41>")] == 6  # BYTE
    modelfile = (tmp_path / "g" / "Modelfile").read_text()
    assert 'PARAMETER stop "<end_of_turn>"' in modelfile

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    assert type(model).__name__ == "Gemma3ForCausalLM"
    back_tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    text = 'Paint the kite teal, é ü 12345 {"a": 1}'
    assert (
        back_tok(text, add_special_tokens=False)["input_ids"]
        == gemma_style_tokenizer(text, add_special_tokens=False)["input_ids"]
    )


def test_qwen3_gguf_reads_back(small_tokenizer, data_file: Path, tmp_path: Path) -> None:  # noqa: F811
    import gguf
    from transformers import AutoModelForCausalLM

    base = tiny_qwen3(small_tokenizer, tmp_path / "base")
    path = export_f32(train_lora(base, tmp_path / "run", data_file), tmp_path / "g")
    names = {t.name for t in gguf.GGUFReader(path).tensors}
    assert {"blk.0.attn_q_norm.weight", "blk.0.attn_k_norm.weight"} <= names
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    assert type(model).__name__ == "Qwen3ForCausalLM"


def test_mistral_gguf_reads_back_as_the_same_llama(small_tokenizer, data_file: Path, tmp_path: Path) -> None:  # noqa: F811
    from transformers import AutoModelForCausalLM

    base = small_model("mistral", small_tokenizer, tmp_path / "base")
    path = export_f32(train_lora(base, tmp_path / "run", data_file), tmp_path / "g")
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    assert type(model).__name__ == "LlamaForCausalLM"  # llama.cpp's architecture for it; same outputs (above)


def test_adapter_on_a_gguf_base_loads_with_the_cards_own_lines(
    small_tokenizer,  # noqa: F811
    data_file: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """An adapter trained on a .gguf base: its model card's "Use" code, run as written, loads it in plain PEFT."""
    import re

    from transformers import AutoModelForCausalLM

    from tunesmith.export.gguf import write_gguf

    folder = tiny_qwen3(small_tokenizer, tmp_path / "hf")
    gguf_dir = tmp_path / "gguf-base"
    gguf_dir.mkdir()
    write_gguf(AutoModelForCausalLM.from_pretrained(folder), small_tokenizer, gguf_dir / "base.gguf", "f32", name="b")
    run = train_lora(gguf_dir / "base.gguf", tmp_path / "run", data_file, steps=1)
    export_run(run, "adapter", out=tmp_path / "adapter")
    card = (tmp_path / "adapter" / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1).replace("THIS_FOLDER", str(tmp_path / "adapter"))
    assert 'gguf_file="base.gguf"' in code
    scope: dict = {}
    exec(code, scope)  # the card's lines, as a user would paste them
    ids = torch.tensor([small_tokenizer("Paint the car red")["input_ids"]])
    with torch.no_grad():
        assert torch.isfinite(scope["model"](ids).logits).all()
