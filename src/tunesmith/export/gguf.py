"""GGUF export: a merged model -> one ``.gguf`` file for llama.cpp and Ollama, plus an Ollama ``Modelfile``.

Everything llama.cpp-specific comes from the ``gguf`` package rather than from llama.cpp's convert script:
the architecture names and HF->GGUF tensor names (``gguf.get_tensor_name_map``), the writer
(``GGUFWriter``), the block quantizers (``gguf.quants``) and the special-token/merges reader
(``gguf.vocab.SpecialVocab``). What is left here is the part of the format that is a convention rather
than a table: which hyperparameters each architecture needs, the q/k row order for Llama (below), and
the tokenizer's token types.

Supported: Llama (the default model), Mistral (written as llama.cpp's Llama architecture, and read back as
a Llama with the same weights and outputs), Qwen2 and Qwen3, each with a byte-level BPE tokenizer (GPT-2
style: SmolLM, Llama 3, Qwen), and Gemma 3 with its SentencePiece-style tokenizer (written as llama.cpp's
"llama" vocabulary with its merges). Gemma stores RMSNorm weights as ``1 + w`` in GGUF; the reader
subtracts the 1 again. transformers' GGUF reader loads every one of them back, which is how the export is
checked.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from tunesmith.errors import UserError

# HF model_type -> llama.cpp architecture. Adding one means checking its hyperparameters below and
# that transformers' GGUF reader loads it back (the parity check will say).
SUPPORTED_ARCHS: dict[str, gguf.MODEL_ARCH] = {
    "llama": gguf.MODEL_ARCH.LLAMA,
    # llama.cpp has no Mistral architecture: a Mistral without sliding windows is a Llama (transformers' reader
    # would make a Mistral of a file named exactly "mistral", but then fails to map its tensors).
    "mistral": gguf.MODEL_ARCH.LLAMA,
    "qwen2": gguf.MODEL_ARCH.QWEN2,
    "qwen3": gguf.MODEL_ARCH.QWEN3,
    "gemma3_text": gguf.MODEL_ARCH.GEMMA3,
}
# Architectures whose q/k rows llama.cpp rotates in adjacent pairs (see _permute_qk).
_PERMUTED = ("llama", "mistral")
# Gemma's RMSNorm scales by (1 + w), and llama.cpp's by w: GGUF holds 1 + w.
_NORM_PLUS_ONE = ("gemma3_text",)
# What transformers' reader assumes where a GGUF does not say (so a model that differs would read back wrong).
_READER_DEFAULTS = {"qwen3": {"head_dim": 128}, "gemma3_text": {"query_pre_attn_scalar": 256}}
GGUF_DTYPES = ("f32", "f16", "bf16", "q8_0")
_QTYPE = {
    "f32": gguf.GGMLQuantizationType.F32,
    "f16": gguf.GGMLQuantizationType.F16,
    "bf16": gguf.GGMLQuantizationType.BF16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
}
_FILE_TYPE = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}
# tokenizer.json pre-tokenizer regexes -> the names llama.cpp knows them by. transformers keeps the same
# table for reading GGUF files back, so a name from it is one that both sides agree on.
_PLAIN_BYTE_LEVEL = "gpt-2"  # ByteLevel with its built-in GPT-2 regex
_DIGITS_THEN_BYTE_LEVEL = "smollm"  # each digit on its own, then the GPT-2 regex


def _split_regex_names() -> dict[str, str]:
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
    except ImportError:  # an older transformers: only the plain byte-level tokenizers are recognised
        return {}
    names: dict[str, str] = {}
    for name, regex in GGUF_PRE_TOKENIZER_SPLITS.items():
        names.setdefault(regex, name)  # the first name listed for a regex is the canonical llama.cpp one
    return names


def model_type(model: Any) -> str:
    return model_type_of(model.config)


def model_type_of(config: Any) -> str:
    return str(getattr(config, "model_type", "unknown"))


def _rope_params(config: Any) -> dict[str, Any]:
    """The rope parameters of full attention (Gemma 3 keeps one set per layer type)."""
    params = getattr(config, "rope_parameters", None) or {}
    return params.get("full_attention", params) if isinstance(params.get("full_attention"), dict) else params


def _rope_theta(config: Any) -> float:
    return float(_rope_params(config).get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0)


def unsupported_message(kind: str) -> str:
    supported = ", ".join(SUPPORTED_ARCHS)
    return (
        f"GGUF export supports the {supported} architectures; this model is '{kind}' "
        "(export it with --format merged or --format adapter instead)"
    )


def check_supported(model: Any, tokenizer: Any) -> str:
    """Raise a UserError naming what is unsupported; return the tokenizer's llama.cpp pre-tokenizer name."""
    kind = model_type(model)
    if kind not in SUPPORTED_ARCHS:
        raise UserError(unsupported_message(kind))
    config = model.config
    rope_type = _rope_params(config).get("rope_type", "default")
    if rope_type not in (None, "default"):
        raise UserError(f"GGUF export does not support rope scaling ('{rope_type}'); supported: plain RoPE")
    if kind in _PERMUTED and (getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False)):
        raise UserError(f"GGUF export does not support {kind} models with attention or MLP biases")
    if kind in ("qwen2", "qwen3") and getattr(config, "use_sliding_window", False):
        raise UserError(f"GGUF export does not support {kind} models with sliding-window attention")
    window = getattr(config, "sliding_window", None)
    if kind == "mistral" and window is not None and window < config.max_position_embeddings:
        raise UserError("GGUF export does not support Mistral models with sliding-window attention")
    for key, value in _READER_DEFAULTS.get(kind, {}).items():
        if getattr(config, key, value) != value:
            raise UserError(f"GGUF export of {kind} needs {key} {value} (transformers reads it back as that)")
    if kind == "gemma3_text":
        _check_gemma3(config)
        return tokenizer_pre_spm(tokenizer)
    return tokenizer_pre(tokenizer)


def _check_gemma3(config: Any) -> None:
    """Gemma 3 settings a GGUF cannot carry to transformers' reader: local rope base and the layer pattern."""
    local = (getattr(config, "rope_parameters", None) or {}).get("sliding_attention") or {}
    if float(local.get("rope_theta", 10000.0)) != 10000.0 or local.get("rope_type", "default") != "default":
        raise UserError("GGUF export of Gemma 3 needs plain RoPE with base 10000 on its sliding-window layers")
    pattern = getattr(config, "_sliding_window_pattern", 6) or 6
    default = [
        "full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(config.num_hidden_layers)
    ]
    if list(getattr(config, "layer_types", default) or default) != default:
        raise UserError(f"GGUF export of Gemma 3 needs every {pattern}th layer full attention, the rest sliding")
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "attn_logit_softcapping", None):
        raise UserError("GGUF export of Gemma 3 does not support logit soft-capping")


def tokenizer_pre_spm(tokenizer: Any) -> str:
    """Gemma's tokenizer: BPE over SentencePiece pieces (spaces as \u2581) with byte fallback."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        raise UserError(
            f"GGUF export of Gemma 3 needs its SentencePiece-style BPE tokenizer; this one is {model.get('type')}"
        )
    return "default"


def tokenizer_pre(tokenizer: Any) -> str:
    """The llama.cpp name of the tokenizer's pre-tokenizer (how text is split before BPE merges)."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model, decoder = spec.get("model") or {}, spec.get("decoder") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or decoder.get("type") != "ByteLevel":
        raise UserError(
            "GGUF export supports byte-level BPE tokenizers (GPT-2 style, as in SmolLM, Llama 3 and Qwen2); "
            f"this tokenizer is {model.get('type', 'unknown')} with a {decoder.get('type', 'unknown')} decoder"
        )
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return _PLAIN_BYTE_LEVEL
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
        return _DIGITS_THEN_BYTE_LEVEL
    if kinds == ["Split", "ByteLevel"] and not parts[1].get("use_regex", True):
        name = _split_regex_names().get((parts[0].get("pattern") or {}).get("Regex", ""))
        if name:
            return name
    raise UserError(
        f"GGUF export does not recognise this tokenizer's pre-tokenizer ({' + '.join(map(str, kinds))}); "
        "llama.cpp would split text differently from training"
    )


def vocab(tokenizer: Any, n_rows: int) -> tuple[list[str], list[int]]:
    """Token strings and llama.cpp token types, one per embedding row.

    Special added tokens are CONTROL (llama.cpp renders nothing for them and stops on the end-of-turn
    one; transformers' reader keeps them whole), other added tokens USER_DEFINED, and rows the tokenizer
    does not use (padding of the embedding matrix) UNUSED placeholders."""
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    if by_id and max(by_id) >= n_rows:
        raise UserError(f"the tokenizer has ids up to {max(by_id)}, beyond the model's {n_rows} embedding rows")
    added = tokenizer.added_tokens_decoder
    byte_pieces = bool(json.loads(tokenizer.backend_tokenizer.to_str()).get("model", {}).get("byte_fallback"))
    tokens, types = [], []
    for i in range(n_rows):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        elif byte_pieces and len(by_id[i]) == 6 and by_id[i].startswith("<0x") and by_id[i].endswith(">"):
            tokens.append(by_id[i])
            types.append(gguf.TokenType.BYTE)  # SentencePiece's byte fallback pieces
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, [int(t) for t in types]


def _permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q_proj / k_proj rows from HF's rotary layout to llama.cpp's.

    HF Llama rotates the two halves of each head against each other; llama.cpp's Llama rotates adjacent
    pairs. Interleaving the halves of each head's rows turns one into the other. transformers' GGUF
    reader undoes exactly this on load, so the read-back check would catch a wrong order."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@dataclass
class Planned:
    gguf_name: str
    hf_name: str
    data: np.ndarray  # as written (bytes for block types)
    qtype: gguf.GGMLQuantizationType


def plan_tensors(model: Any, dtype: str) -> tuple[list[Planned], dict[str, torch.Tensor]]:
    """(tensors to write, the values each HF tensor should read back as: rounded, in HF layout)."""
    kind = model_type(model)
    config = model.config
    names = gguf.get_tensor_name_map(SUPPORTED_ARCHS[kind], config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    planned, expected = [], {}
    for hf_name, tensor in model.state_dict().items():
        if (tied and hf_name == "lm_head.weight") or hf_name.endswith("rotary_emb.inv_freq"):
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            # Dropping a tensor would write a model that loads and answers differently; refuse instead.
            raise UserError(f"no GGUF name for tensor '{hf_name}' of this {kind} model")
        arr = tensor.detach().to(torch.float32).cpu().numpy()
        plus_one = kind in _NORM_PLUS_ONE and gguf_name.endswith("norm.weight")
        if plus_one:
            arr = arr + np.float32(1.0)
        qtype = gguf.GGMLQuantizationType.F32 if arr.ndim == 1 else _QTYPE[dtype]
        if qtype == gguf.GGMLQuantizationType.Q8_0 and arr.shape[-1] % 32:
            qtype = gguf.GGMLQuantizationType.F16  # Q8_0 blocks are 32 wide; llama.cpp falls back the same way
        # What the reader should see: the HF-layout tensor rounded the way the file stores it. Computed
        # from the HF layout (not by undoing our permutation) so that a wrong permutation cannot hide.
        back = gguf.quants.dequantize(gguf.quants.quantize(arr, qtype), qtype).reshape(arr.shape).copy()
        expected[hf_name] = torch.from_numpy(back - np.float32(1.0) if plus_one else back)  # the reader's "- 1"
        if kind in _PERMUTED and gguf_name.endswith(("attn_q.weight", "attn_k.weight")):
            arr = _permute_qk(arr, heads if "attn_q" in gguf_name else kv_heads)
        planned.append(Planned(gguf_name, hf_name, gguf.quants.quantize(arr, qtype), qtype))
    return planned, expected


def estimate_bytes(model: Any, dtype: str) -> int:
    block, size = gguf.GGML_QUANT_SIZES[_QTYPE[dtype]]
    total = 0
    for name, p in model.state_dict().items():
        if name == "lm_head.weight" and getattr(model.config, "tie_word_embeddings", False):
            continue
        total += p.numel() * 4 if p.dim() == 1 else p.numel() * size // block
    # Plus the tokenizer (tokens and merges: tens of bytes per token) and headroom for the header.
    return total + 64 * int(getattr(model.config, "vocab_size", 0) or 0) + (8 << 20)


def _hyperparameters(w: gguf.GGUFWriter, config: Any, n_rows: int, dtype: str) -> None:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    gemma = model_type_of(config) in _NORM_PLUS_ONE
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_hidden_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(config.num_key_value_heads or heads)
    w.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // heads or gemma:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_rope_freq_base(_rope_theta(config))
    if gemma:
        w.add_sliding_window(config.sliding_window)
        w.add_rope_freq_base_swa(10000.0)  # _check_gemma3 made sure
    w.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    w.add_vocab_size(n_rows)
    w.add_file_type(_FILE_TYPE[dtype])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _tokenizer_metadata(w: gguf.GGUFWriter, tokenizer: Any, n_rows: int, pre: str, stops: list[int]) -> None:
    tokens, types = vocab(tokenizer, n_rows)
    spm = pre == "default"  # tokenizer_pre_spm: SentencePiece pieces, llama.cpp's "llama" vocabulary
    w.add_tokenizer_model("llama" if spm else "gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    if spm:
        # llama.cpp merges SentencePiece pieces by score; Gemma's merge order is its vocabulary order (the
        # reader rebuilds merges from the merges written below, or else from this same order).
        w.add_token_scores([-float(i) for i in range(n_rows)])
        w.add_add_space_prefix(False)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)  # SpecialVocab reads merges and special ids from tokenizer files
        special = gguf.SpecialVocab(tmp, load_merges=True, n_vocab=n_rows)
    # The tokenizer object is what training used; its values win over whatever the files say.
    special.special_token_ids["eos"] = tokenizer.eos_token_id
    end_of_turn = [i for i in stops if i != tokenizer.eos_token_id]
    if end_of_turn:  # the chat template's end-of-turn (models/stops.py): llama.cpp stops on it too
        special.special_token_types = (*special.special_token_types, "eot")
        special.special_token_ids["eot"] = end_of_turn[0]
    if tokenizer.pad_token_id is not None:
        special.special_token_ids["pad"] = tokenizer.pad_token_id
    # tunesmith tokenizes the rendered template without adding BOS/EOS (the template writes its own
    # special tokens); llama.cpp must do the same or every prompt gains a token training never saw.
    special.add_special_token = {"bos": False, "eos": False}
    special.chat_template = tokenizer.chat_template
    special.add_to_gguf(w, quiet=True)


def write_gguf(
    model: Any, tokenizer: Any, path: Path, dtype: str, *, name: str, stops: list[int] | None = None
) -> dict[str, torch.Tensor]:
    """Write ``model`` (merged, fp32) to ``path``. Returns the expected read-back tensors (HF names).
    ``stops``: the run's stop ids (``models/stops.py``); the first besides EOS is written as end-of-turn."""
    if dtype not in GGUF_DTYPES:
        raise UserError(f"GGUF dtype '{dtype}' is not one of {', '.join(GGUF_DTYPES)}")
    pre = check_supported(model, tokenizer)
    config = model.config
    n_rows = model.get_input_embeddings().weight.shape[0]
    planned, expected = plan_tensors(model, dtype)
    w = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[SUPPORTED_ARCHS[model_type(model)]])
    try:
        w.add_type(gguf.GGUFType.MODEL)
        w.add_name(name)
        _hyperparameters(w, config, n_rows, dtype)
        _tokenizer_metadata(w, tokenizer, n_rows, pre, list(stops or []))
        for t in planned:
            block_type = t.qtype not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
            w.add_tensor(t.gguf_name, t.data, raw_dtype=t.qtype if block_type else None)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    finally:
        w.close()
    return expected


def written_types(path: Path) -> dict[str, int]:
    """How many tensors of each GGML type the file holds (for the report)."""
    counts: dict[str, int] = {}
    for t in gguf.GGUFReader(path).tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return counts
