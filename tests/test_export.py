"""`tunesmith export` on tiny models: each format read back by its reference loader, checks that can fail.

Two tiny families: the shared tiny Llama with the real SmolLM2 tokenizer (49k tokens; reading its GGUF
back takes ~20 s, so only one test does), and models built here with a ~400-token byte-level BPE
tokenizer, whose GGUF files read back in about a second.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tunesmith.config import load_config
from tunesmith.errors import UserError
from tunesmith.export import ParityFailure, export_run, parity
from tunesmith.export.merge import refuse_quantized
from tunesmith.export.template import TemplateShapeError, chat_shape, go_template, mismatches, render
from tunesmith.train.pipeline import run_training

from .conftest import chat_rows, save_tiny_model, tiny_sizes, write_jsonl
from .test_cli import assert_user_error, tunesmith

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(autouse=True)
def short_continuations(monkeypatch: pytest.MonkeyPatch) -> None:
    # 8 greedy tokens per probe are enough to see a divergence and keep each export a few seconds.
    monkeypatch.setattr(parity, "MAX_NEW_TOKENS", 8)


def train_lora(model_dir: Path, out: Path, data: Path, steps: int = 4) -> Path:
    cfg = load_config(
        None,
        {
            "model": {"name": str(model_dir)},
            "data": {"train": str(data), "val_split": 0.0, "max_len": 256},
            "lora": {"r": 4, "alpha": 8},
            "train": {"batch_size": 4, "micro_batch_size": 4, "learning_rate": 1e-2, "max_steps": steps},
        },
    )
    run_training(cfg, out)
    return out


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", chat_rows(24))


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, data_file: Path) -> Path:
    return train_lora(tiny_model_dir, tmp_path_factory.mktemp("llama") / "run", data_file)


@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    """A ~400-token byte-level BPE with ChatML special tokens and, like Qwen2, a regex Split pre-tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    texts = [m["content"] for row in chat_rows(200) for m in row["messages"]]
    texts += [m["content"] for conv in parity.FIXED_CONVERSATIONS for m in conv]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>", unk_token="<|endoftext|>"
    )
    hf.chat_template = CHATML
    return hf


def small_model(kind: str, tokenizer, out: Path) -> Path:
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Phi3Config,
        Phi3ForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
    classes["mistral"] = (MistralConfig, MistralForCausalLM)
    classes["phi3"] = (Phi3Config, Phi3ForCausalLM)
    config_cls, model_cls = classes[kind]
    config = config_cls(
        **tiny_sizes(tokenizer, num_attention_heads=4, num_key_value_heads=2),
        tie_word_embeddings=kind != "qwen2",  # both layouts: tied (no output.weight) and untied
    )
    # Qwen2's q/k/v biases start at zero; make them count
    return save_tiny_model(model_cls, config, tokenizer, out, seed=1, redraw=(lambda n: n.endswith("bias"), 0, 0.2))


@pytest.fixture(scope="module")
def qwen2_run(tmp_path_factory: pytest.TempPathFactory, small_tokenizer, data_file: Path) -> Path:
    root = tmp_path_factory.mktemp("qwen2")
    return train_lora(small_model("qwen2", small_tokenizer, root / "base"), root / "run", data_file)


def checks_by_name(result) -> dict:
    return {c.name: c for c in result.checks}


def peft_logits(run: Path, base_dir: Path, ids: torch.Tensor) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir)
    with torch.no_grad():
        return PeftModel.from_pretrained(base, str(run / "adapter")).eval()(ids).logits


def test_merged_export_loads_in_plain_transformers(lora_run: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    result = export_run(lora_run, "merged", out=out)
    checks = checks_by_name(result)
    assert set(checks) == {
        "training_template",
        "adapter_vs_merged",
        "merged_readback",
        "generation_config",
        "template_merged",
    }
    assert all(c.passed for c in result.checks)
    assert checks["adapter_vs_merged"].detail["logits_max_abs_diff"] < 1e-4
    assert checks["merged_readback"].detail["tensor_max_abs_diff"] == 0.0
    report = json.loads((out / "export.json").read_text())
    assert report["status"] == "passed" and report["dtype"] == "f32" and "model.safetensors" in report["files"]
    assert any("train.jsonl:" in p for p in report["probes"]), "some probes come from the training data"
    assert not list(tmp_path.glob(".merged.staging-*")), "no staging folder left behind"

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    ids = torch.tensor([tok("Paint the kite teal")["input_ids"]])
    reference = peft_logits(lora_run, tiny_model_dir, ids)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference, atol=1e-4, rtol=0)
        untouched = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(ids).logits
    assert (reference - untouched).abs().max() > 1e-3, "the adapter must matter, or this test proves nothing"
    eos = model.generation_config.eos_token_id
    assert tok.eos_token_id in ([eos] if isinstance(eos, int) else eos)
    assert tok.chat_template == AutoTokenizer.from_pretrained(lora_run / "adapter").chat_template

    with pytest.raises(UserError, match="already exists; pass --force"):
        export_run(lora_run, "merged", out=out)


def test_merged_f16_is_an_fp32_merge_cast_afterwards(lora_run: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    export_run(lora_run, "merged", dtype="f16", out=tmp_path / "m16")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    fp32_merge = PeftModel.from_pretrained(base, str(lora_run / "adapter")).merge_and_unload().state_dict()
    with safe_open(tmp_path / "m16" / "model.safetensors", "pt") as f:
        names = list(f.keys())
        assert names and all(f.get_tensor(k).dtype == torch.float16 for k in names)
        # Merging in f16 would round B·A against W first and differ from this in some elements.
        for k in names:
            assert torch.equal(f.get_tensor(k), fp32_merge[k].half()), k


def test_adapter_export_has_a_model_card_and_loads_in_peft(lora_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    # What `tunesmith eval` writes (RUN/eval/eval.json): headline rows with one value per condition.
    (run / "eval").mkdir()
    headline = [{"key": "json_valid", "label": "JSON valid", "base": 0.1, "tuned": 0.93, "verdict": "better"}]
    conditions = {"base": {"label": "base"}, "tuned": {"label": "tuned, no instructions"}}
    (run / "eval" / "eval.json").write_text(json.dumps({"headline": headline, "conditions": conditions}))
    result = export_run(run, "adapter")
    out = run / "exports" / "adapter"
    assert result.out == out and all(c.passed for c in result.checks)
    assert checks_by_name(result)["adapter_readback"].detail["tensors_compared"] > 0
    assert (out / "adapter_model.safetensors").read_bytes() == (
        run / "adapter" / "adapter_model.safetensors"
    ).read_bytes()
    card = (out / "README.md").read_text()
    info = json.loads((run / "run.json").read_text())
    for needed in (
        info["base_model"],
        info["hashes"]["train_data"],
        "r=4, alpha=8",
        "JSON valid: base 0.1, tuned, no instructions 0.93 (better)",
    ):
        assert needed in card, needed
    assert "adapter_readback: pass" in card and "adapter_vs_merged: pass" in card


def test_gguf_llama_reads_back_in_transformers(lora_run: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "gguf"
    result = export_run(lora_run, "gguf", out=out)  # f16 by default
    checks = checks_by_name(result)
    assert all(c.passed for c in result.checks), [c.summary() for c in result.checks]
    assert checks["gguf_readback"].detail["greedy_identical"] == "8/8"
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "export.json", "model-f16.gguf"]

    reader = gguf.GGUFReader(out / "model-f16.gguf")
    field = lambda k: reader.fields[k].contents()  # noqa: E731
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert field("general.architecture") == "llama" and field("tokenizer.ggml.model") == "gpt2"
    assert field("tokenizer.ggml.eos_token_id") == tok.eos_token_id and field("tokenizer.ggml.add_bos_token") is False
    assert field("tokenizer.chat_template") == tok.chat_template
    assert field("tokenizer.ggml.token_type")[tok.convert_tokens_to_ids("<|im_end|>")] == gguf.TokenType.CONTROL
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "F16" and types["blk.0.attn_norm.weight"] == "F32"
    assert "output.weight" not in types, "tied embeddings are written once"

    model = AutoModelForCausalLM.from_pretrained(out, gguf_file="model-f16.gguf", dtype=torch.float32)
    ids = torch.tensor([tok("Paint the kite teal")["input_ids"]])
    with torch.no_grad():
        diff = (model(ids).logits - peft_logits(lora_run, tiny_model_dir, ids)).abs().max()
    assert diff < 0.05, "f16 rounding only"

    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./model-f16.gguf" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "<|im_start|>assistant\n{{ .Content }}" in modelfile


@pytest.mark.parametrize("dtype", ["f32", "q8_0"])
def test_qwen2_gguf_reads_back(qwen2_run: Path, tmp_path: Path, dtype: str) -> None:
    import gguf
    from transformers import AutoModelForCausalLM

    result = export_run(qwen2_run, "gguf", dtype=dtype, out=tmp_path / "g")
    checks = checks_by_name(result)
    assert all(c.passed for c in result.checks), [c.summary() for c in result.checks]
    readback = checks["gguf_readback"].detail
    assert readback["tensor_max_abs_diff"] == 0.0 and readback["tensors_compared"] > 20
    if dtype == "f32":
        assert readback["logits_max_abs_diff"] < 1e-4
    else:
        assert readback["tensor_types"].get("Q8_0", 0) > 0 and readback["token_agreement"] >= parity.MIN_AGREEMENT
    path = tmp_path / "g" / f"model-{dtype}.gguf"
    reader = gguf.GGUFReader(path)
    assert reader.fields["tokenizer.ggml.pre"].contents() == "qwen2"
    assert {"output.weight", "blk.0.attn_q.bias"} <= {t.name for t in reader.tensors}
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.model.layers[0].self_attn.q_proj.bias.abs().max() > 0.1


def test_a_broken_gguf_writer_is_caught_and_leaves_nothing(
    small_tokenizer, data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tunesmith.export import gguf as gguf_export

    run = train_lora(small_model("llama", small_tokenizer, tmp_path / "base"), tmp_path / "run", data_file, steps=2)
    # Forget llama.cpp's rotary row order: the file still loads, but it is no longer the same model.
    monkeypatch.setattr(gguf_export, "_permute_qk", lambda w, n_head: w)
    out = tmp_path / "gguf"
    with pytest.raises(ParityFailure, match="gguf_readback: FAIL"):
        export_run(run, "gguf", dtype="f32", out=out)
    assert not out.exists() and not list(tmp_path.glob(".gguf.staging-*"))
    failed = json.loads((tmp_path / "gguf.failed.json").read_text())
    assert failed["status"] == "failed"


def test_a_nan_in_the_adapter_is_refused(lora_run: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    path = run / "adapter" / "adapter_model.safetensors"
    tensors = load_file(path)
    name = next(k for k in tensors if "lora_B" in k)
    tensors[name][0, 0] = float("nan")
    save_file(tensors, path, metadata={"format": "pt"})
    for fmt in ("merged", "adapter"):
        with pytest.raises(UserError, match="NaN or infinite values in 1 tensor"):
            export_run(run, fmt, out=tmp_path / fmt)
        assert not (tmp_path / fmt).exists()


def test_quantized_weights_are_refused(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    refuse_quantized(model)  # dense: fine
    model.config.quantization_config = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    with pytest.raises(UserError, match=r"quantized \(bitsandbytes\).*Dequantize"):
        refuse_quantized(model)


def test_ollama_template_is_measured_and_checked(tokenizer, small_tokenizer) -> None:
    convs = [
        [{"role": "user", "content": "Hi"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Again"},
            {"role": "assistant", "content": "Hello again"},
        ],
    ]
    for tok in (tokenizer, small_tokenizer):  # SmolLM2's template adds a default system block; plain ChatML not
        shape = chat_shape(tok)
        assert mismatches(tok, shape, convs) == []
        text = render(shape, convs[0], add_generation_prompt=True)
        assert text == tok.apply_chat_template(convs[0], tokenize=False, add_generation_prompt=True)
    assert "You are a helpful AI assistant named SmolLM" in chat_shape(tokenizer).default_system
    assert chat_shape(small_tokenizer).default_system == ""
    assert go_template(chat_shape(small_tokenizer)).startswith("{{ range $i, $_ := .Messages }}")

    # A template whose wrapping depends on the position of a message cannot be restated per role...
    small_tokenizer.chat_template = CHATML.replace("message['content']", "message['content'] + loop.index|string")
    try:
        with pytest.raises(TemplateShapeError):
            chat_shape(small_tokenizer)
        # ...and one that raises on a system message cannot be measured at all.
        small_tokenizer.chat_template = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no') }}{% endif %}"
        with pytest.raises(TemplateShapeError, match="cannot be measured"):
            chat_shape(small_tokenizer)
    finally:
        small_tokenizer.chat_template = CHATML


def test_bad_input_exits_2_with_one_line(lora_run: Path, small_tokenizer, data_file: Path, tmp_path: Path) -> None:
    phi3 = small_model("phi3", small_tokenizer, tmp_path / "phi3")
    cfg = load_config(
        None,
        {
            "model": {"name": str(phi3)},
            "data": {"train": str(data_file), "val_split": 0.0, "max_len": 256},
            "train": {"method": "full", "batch_size": 4, "micro_batch_size": 4, "max_steps": 1},
        },
    )
    run_training(cfg, tmp_path / "phi3-run")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    cases = [
        (["export", str(tmp_path), "--format", "merged"], "is not a finished tunesmith run (no run.json)"),
        (["export", str(lora_run), "--format", "zip"], "unknown export format 'zip'"),
        (["export", str(lora_run), "--format", "merged", "--dtype", "q8_0"], "--dtype q8_0 does not apply"),
        (["export", str(lora_run), "--format", "merged", "--out", str(taken)], "already exists; pass --force"),
        (
            ["export", str(tmp_path / "phi3-run"), "--format", "gguf", "--out", str(tmp_path / "g")],
            "GGUF export supports the llama, mistral, qwen2, qwen3, gemma3_text architectures; this model is 'phi3'",
        ),
    ]
    for args, expected in cases:
        proc = tunesmith(*args)
        assert_user_error(proc, expected)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert (taken / "keep.txt").read_text() == "mine" and not (tmp_path / "g").exists()

    # Too little disk: the real CLI, with the free space the OS reports made small.
    script = (
        "import shutil, sys; from collections import namedtuple\n"
        "shutil.disk_usage = lambda p: namedtuple('u', 'total used free')(10**9, 10**9 - 1000, 1000)\n"
        "from tunesmith.cli.main import main; main(sys.argv[1:])\n"
    )
    out = tmp_path / "full-disk"
    proc = subprocess.run(
        [sys.executable, "-c", script, "export", str(lora_run), "--format", "merged", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert_user_error(proc, "not enough disk space")
    assert not out.exists()
