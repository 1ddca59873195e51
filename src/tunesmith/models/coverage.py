"""What LoRA wrapped, by kind, and what it could not.

The run summary and run.json say which modules got an adapter (attention, MLP, experts, embeddings/head, other),
how many of each and how many adapter parameters each kind holds, so "all-linear" is never a guess. Mixture-of-
experts models keep their experts as 3-D parameters rather than linear layers: PEFT 0.21's all-linear adapts
them too (``ParamWrapper``); any it leaves unadapted are said to stay frozen. A target list naming a module the model
does not have is refused before PEFT runs, naming the linear layers it does have.
"""

from __future__ import annotations

from typing import Any

from tunesmith.errors import UserError

KINDS = ("attention", "mlp", "experts", "embeddings/head", "other")
_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv", "attn", "attention", "query", "key", "value")
_MLP = ("gate_proj", "up_proj", "down_proj", "mlp", "fc1", "fc2", "ffn", "dense_h_to_4h", "dense_4h_to_h")
_EMBED = ("embed", "lm_head", "wte", "output")


def kind_of(name: str) -> str:
    parts = name.lower().split(".")
    if any("expert" in p for p in parts):
        return "experts"
    if any(p.startswith(_EMBED) for p in parts):
        return "embeddings/head"
    if any(any(a in p for a in _ATTENTION) for p in parts):
        return "attention"
    if any(any(m in p for m in _MLP) for p in parts):
        return "mlp"
    return "other"


def check_targets(model: Any, targets: list[str] | str) -> None:
    """Refuse (exit 2, one line) target module names that match no module of ``model``."""
    if isinstance(targets, str):
        return  # "all-linear": PEFT finds them
    names = [n for n, _ in model.named_modules() if n]
    unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unmatched:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"})
        raise UserError(
            f"LoRA target module(s) {', '.join(unmatched)} match no module of this model; its linear layers are "
            f"{', '.join(linear[:12]) or 'none'} (or use target_modules: all-linear)"
        )


def lora_coverage(model: Any) -> dict[str, Any]:
    """{"wrapped": {kind: {"modules", "params", "names"}}, "frozen_experts": {"tensors", "params"}}.

    PEFT wraps a linear layer in a LoRA layer, and (recent PEFT, all-linear) a 3-D expert parameter in a
    ``ParamWrapper`` nested inside its module's other wrappers; each counts once, by its own adapter weights."""
    wrapped: dict[str, dict[str, Any]] = {}
    covered: set[str] = set()  # "module.param" of every 3-D parameter a ParamWrapper adapts
    for name, module in model.named_modules():
        if not hasattr(module, "lora_A") or not len(getattr(module, "lora_A", {})):
            continue
        clean = name.replace(".base_layer", "")
        param = getattr(module, "parameter_name", None)  # a ParamWrapper: the parameter it adapts
        if param:
            covered.add(f"{clean}.{param}")
        kind = kind_of(clean)
        entry = wrapped.setdefault(kind, {"modules": 0, "params": 0, "names": []})
        entry["modules"] += 1
        entry["params"] += sum(p.numel() for key in ("lora_A", "lora_B") for p in getattr(module, key).parameters())
        short = param or clean.rsplit(".", 1)[-1]
        if short not in entry["names"]:
            entry["names"].append(short)
    experts = [
        p.numel()
        for n, p in model.named_parameters()
        if p.dim() == 3 and "expert" in n and n.replace(".base_layer", "") not in covered
    ]
    out: dict[str, Any] = {"wrapped": {k: wrapped[k] for k in KINDS if k in wrapped}}
    if experts:
        out["frozen_experts"] = {"tensors": len(experts), "params": sum(experts)}
    return out


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 100_000 else f"{n / 1e3:.1f}K"


def describe(coverage: dict[str, Any]) -> str:
    """One sentence for the run summary."""
    parts = [
        f"{kind} {e['modules']} ({', '.join(e['names'][:6])}; {_count(e['params'])} params)"
        for kind, e in coverage["wrapped"].items()
    ]
    line = "LoRA wraps " + ", ".join(parts)
    frozen = coverage.get("frozen_experts")
    if frozen:
        line += (
            f"; {frozen['tensors']} expert weight tensors ({_count(frozen['params'])} params, 3-D parameters, "
            "not linear layers) stay frozen"
        )
    return line
