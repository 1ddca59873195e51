"""Merged export: the adapter folded into the base weights, as a plain Hugging Face folder.

    W' = W + (alpha / r) · B A        computed in fp32, then cast to the export dtype

Merging in a low precision rounds the small update ``B A`` against the much larger ``W`` and is a known
cause of "quality dropped after merging"; so the merge always runs in fp32 and only the result is cast.
Weights that are quantized (bitsandbytes, GPTQ, ...) are refused: adding an fp32 update to them would
either fail or be rounded away. The folder loads with ``AutoModelForCausalLM.from_pretrained`` alone.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from tunesmith.errors import UserError
from tunesmith.models.stops import eos_list

TORCH_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
MERGED_DTYPES = tuple(TORCH_DTYPES)


def refuse_quantized(model: Any) -> None:
    """Raise unless every weight is a dense floating-point tensor."""
    config = getattr(model, "config", None)
    quant = getattr(config, "quantization_config", None)
    if getattr(model, "is_quantized", False) or quant is not None:
        method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
        raise UserError(
            f"the base model's weights are quantized ({method or 'unknown method'}); merging into quantized "
            "weights loses the adapter's update. Dequantize the base model to fp16/fp32 first, then train "
            "and export from that"
        )
    for name, p in model.named_parameters():
        if not p.dtype.is_floating_point:
            raise UserError(f"the weight '{name}' is stored as {p.dtype}, not floating point; dequantize it first")


def nonfinite(tensors: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the tensors that hold a NaN or an infinity."""
    return [name for name, t in tensors if t.dtype.is_floating_point and not torch.isfinite(t).all()]


def refuse_nonfinite(tensors: Iterable[tuple[str, torch.Tensor]], what: str, hint: str) -> None:
    bad = nonfinite(tensors)
    if bad:
        raise UserError(f"{what} holds NaN or infinite values in {len(bad)} tensor(s), first '{bad[0]}'; {hint}")


def adapter_tensors(model: Any) -> list[tuple[str, torch.Tensor]]:
    return [(n, p) for n, p in model.named_parameters() if "lora_" in n]


def merge(model: Any) -> Any:
    """A merged fp32 copy of a PeftModel; the adapter model itself is left as it was, for comparison."""
    if not hasattr(model, "merge_and_unload"):
        return model  # a full fine-tune: nothing to merge
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise UserError("the merge must run in fp32, but the model was loaded in a lower precision")
    from tunesmith.models.lora import quiet_peft

    with quiet_peft():
        return copy.deepcopy(model).merge_and_unload()


def estimate_bytes(model: Any, dtype: str) -> int:
    size = torch.tensor([], dtype=TORCH_DTYPES[dtype]).element_size()
    seen, total = set(), 0
    for p in model.parameters():  # parameters() yields tied weights once
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * size
    return total + (32 << 20)  # tokenizer files and headroom


def write_merged(merged: Any, tokenizer: Any, out: Path, dtype: str, stops: list[int]) -> None:
    """Save the merged model cast to ``dtype`` (after a NaN/Inf check), its tokenizer and generation config."""
    model = merged if dtype == "f32" else copy.deepcopy(merged).to(TORCH_DTYPES[dtype])
    # After the cast: an fp32 weight beyond the f16 range becomes inf only now.
    refuse_nonfinite(
        model.state_dict().items(),
        f"the merged model in {dtype}",
        "nothing was written (try --dtype f32 or bf16, or retrain with a lower learning rate)",
    )
    # The right EOS: generation must stop on the end-of-turn token(s) that training taught.
    gen = model.generation_config
    gen.eos_token_id = stops[0] if len(stops) == 1 else list(stops)
    if gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    model.config.dtype = TORCH_DTYPES[dtype]
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def expected_tensors(merged: Any, dtype: str) -> dict[str, torch.Tensor]:
    """What each saved tensor must read back as: the fp32 merge rounded to the export dtype."""
    target = TORCH_DTYPES[dtype]
    return {k: v.detach().to(target).to(torch.float32) for k, v in merged.state_dict().items()}


def read_merged(out: Path, *, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """Load the folder the way a user with nothing but transformers would (no tunesmith code involved,
    deliberately: ``models.load`` fixes generation ids, which would hide a wrong generation config)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trust = {"trust_remote_code": trust_remote_code}
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, **trust).eval()
    return model, AutoTokenizer.from_pretrained(out, **trust)


def check_generation_config(model: Any, tokenizer: Any, stops: list[int]) -> dict[str, Any]:
    eos = eos_list(model.generation_config.eos_token_id)
    return {"generation_eos": eos, "stops_covered": set(stops) <= set(eos)}
