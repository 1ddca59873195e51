"""Parity checks: proof that an export is the model that was trained, written to ``export.json``.

    adapter on base ──(fp32 logits, greedy)── merged in memory ──┬── merged folder, read by plain transformers
                                                                  ├── adapter folder, read by plain PEFT
                                                                  └── .gguf, read by transformers' GGUF reader
    training tokenizer ──(same token ids for every probe)── the tokenizer + chat template of each export

Every comparison runs on a fixed set of probes: a few built-in conversations and the first rows of the
run's training data. Greedy continuations are compared token by token. The rule for dtypes:
  * f32 and f16 exports must continue every probe exactly as the fp32 merged model does;
  * bf16 and q8_0 are lossy by design and must keep ``MIN_AGREEMENT`` of the greedy tokens (the share of
    reference tokens before the first divergence), a drift we state rather than hide.
Read-back weights must also equal, exactly, the merged weights rounded to the export dtype: a wrong
tensor name, layout or permutation shows up there even when it happens not to change a continuation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunesmith.data.formats import Conversation, read_examples
from tunesmith.data.render import Renderer
from tunesmith.errors import UserError

LOGITS_TOL = 1e-4  # max |logit difference| allowed between fp32 computations that should be equal
MAX_NEW_TOKENS = 32
TRAIN_PROBES = 4
EXACT_DTYPES = ("f32", "f16")
# Share of greedy tokens (up to the first divergence) that bf16 / q8_0 exports must keep. On the default
# model, both keep all of them on our probes; 0.75 leaves room for one probe in four to drift midway.
MIN_AGREEMENT = 0.75

FIXED_CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "Why is the sky blue?"},
    ],
    [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help you today?"},
        {"role": "user", "content": "Count from 1 to 12, then say 2024."},
    ],
    [{"role": "user", "content": 'Reply with JSON: {"ok": true, "n": 3}'}],
]


class ParityFailure(UserError):
    """An export that failed a check. Reported in one line like a user error, but with exit code 1:
    the input was fine, the export was not."""

    exit_code = 1


@dataclass
class Probe:
    source: str
    prompt: list[dict[str, str]]  # ends with a user turn: what generation continues
    conversation: Conversation | None = None  # a training row, reply included (logits + template checks)


@dataclass
class Check:
    name: str
    passed: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, **self.detail}

    def summary(self) -> str:
        shown = {k: v for k, v in self.detail.items() if not isinstance(v, list | dict)}
        return f"{self.name}: {'pass' if self.passed else 'FAIL'} " + " ".join(f"{k}={v}" for k, v in shown.items())


@dataclass
class Inputs:
    """Token ids of the probes, rendered once by the training tokenizer."""

    probes: list[Probe]
    prompts: list[list[int]]  # generation inputs
    sequences: list[list[int]]  # logits inputs: the training rows with their replies, and the prompts
    stops: list[int]


def build_probes(train_file: Path | None, renderer: Renderer) -> tuple[list[Probe], list[str]]:
    probes = [Probe(f"fixed {i + 1}", conv) for i, conv in enumerate(FIXED_CONVERSATIONS)]
    notes: list[str] = []
    if train_file is None or not Path(train_file).is_file():
        notes.append(f"training data not found ({train_file}); probes are the built-in conversations only")
        return probes, notes
    taken = 0
    for conv in read_examples(train_file).examples:
        last = max((i for i, m in enumerate(conv.messages) if m.role == "assistant"), default=None)
        if last is None or len(renderer.render(conv).input_ids) > renderer.max_len:
            continue
        probes.append(Probe(conv.source, [m.as_dict() for m in conv.messages[:last]], conv))
        taken += 1
        if taken == TRAIN_PROBES:
            break
    return probes, notes


def encode(probes: list[Probe], renderer: Renderer, stops: Sequence[int]) -> Inputs:
    prompts = [renderer.prompt_ids(p.prompt) for p in probes]
    full = [renderer.render(p.conversation).input_ids for p in probes if p.conversation is not None]
    return Inputs(probes, prompts, full + prompts, list(stops))


@torch.inference_mode()
def greedy(model: Any, inputs: Inputs, max_new_tokens: int | None = None) -> list[list[int]]:
    """Greedy continuations, one prompt at a time (no padding, so nothing but the weights can differ).

    We call ``model.generate`` directly instead of ``tunesmith.generate.generate`` because parity needs
    token ids, which that helper does not return, and a generation config of our own so that no
    sampling or repetition settings shipped with a model can change what is compared."""
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=max_new_tokens or MAX_NEW_TOKENS, do_sample=False, eos_token_id=inputs.stops, pad_token_id=inputs.stops[0]
    )
    out = []
    model.eval()
    for ids in inputs.prompts:
        x = torch.tensor([ids])
        new = model.generate(input_ids=x, attention_mask=torch.ones_like(x), generation_config=config)[0, len(ids) :]
        tokens = new.tolist()
        cut = next((k for k, t in enumerate(tokens) if t in inputs.stops), None)
        out.append(tokens if cut is None else tokens[: cut + 1])
    return out


@torch.inference_mode()
def max_logit_diff(a: Any, b: Any, inputs: Inputs) -> float:
    worst = 0.0
    for ids in inputs.sequences:
        x = torch.tensor([ids])
        diff = (a(input_ids=x).logits.float() - b(input_ids=x).logits.float()).abs().max().item()
        worst = max(worst, diff)
    return worst


def agreement(reference: list[list[int]], other: list[list[int]]) -> float:
    """Share of reference tokens generated identically before the first divergence."""
    total = sum(len(r) for r in reference)
    kept = 0
    for r, o in zip(reference, other, strict=True):
        kept += next((i for i, (x, y) in enumerate(zip(r, o, strict=False)) if x != y), min(len(r), len(o)))
    return kept / total if total else 1.0


def _identical(reference: list[list[int]], other: list[list[int]]) -> int:
    return sum(r == o for r, o in zip(reference, other, strict=True))


def check_merge(adapter_model: Any, merged: Any, inputs: Inputs) -> tuple[Check, list[list[int]]]:
    """Adapter on base vs the fp32 merge. Returns the check and the merged model's greedy tokens."""
    diff = max_logit_diff(adapter_model, merged, inputs)
    ref, got = greedy(adapter_model, inputs), greedy(merged, inputs)
    same = _identical(ref, got)
    check = Check(
        "adapter_vs_merged",
        diff < LOGITS_TOL and same == len(ref),
        {
            "logits_max_abs_diff": diff,
            "tolerance": LOGITS_TOL,
            "greedy_identical": f"{same}/{len(ref)}",
            "dtype": "f32",
        },
    )
    return check, got


def check_readback(
    name: str,
    model: Any,
    merged: Any,
    inputs: Inputs,
    reference: list[list[int]],
    dtype: str,
    expected: dict[str, torch.Tensor] | None = None,
) -> Check:
    """An export read back by its reference loader vs the fp32 merged model (see the module docstring)."""
    detail: dict[str, Any] = {"dtype": dtype}
    passed = True
    if expected is not None:
        state = model.state_dict()
        missing = sorted(set(expected) - set(state))
        worst = max(((state[k].float() - v).abs().max().item() for k, v in expected.items() if k in state), default=0)
        detail["tensors_compared"] = len(expected) - len(missing)
        detail["tensor_max_abs_diff"] = worst
        if missing:
            detail["tensors_missing"] = missing[:10]
        passed &= not missing and worst == 0.0
    diff = max_logit_diff(model, merged, inputs)
    got = greedy(model, inputs)
    same, agree = _identical(reference, got), agreement(reference, got)
    detail |= {"logits_max_abs_diff": diff, "greedy_identical": f"{same}/{len(reference)}", "token_agreement": agree}
    if dtype in EXACT_DTYPES:
        detail["required"] = "identical greedy continuations" + (
            f", logits within {LOGITS_TOL}" if dtype == "f32" else ""
        )
        passed &= same == len(reference) and (dtype != "f32" or diff < LOGITS_TOL)
    else:
        detail["required"] = f"token agreement >= {MIN_AGREEMENT}"
        passed &= agree >= MIN_AGREEMENT
    return Check(name, passed, detail)


def check_template(name: str, train_tokenizer: Any, export_tokenizer: Any, inputs: Inputs, renderer_kw: dict) -> Check:
    """The export's tokenizer + chat template render every probe to the training token ids."""
    ours = Renderer(train_tokenizer, stop_token_ids=inputs.stops, **renderer_kw)
    theirs = Renderer(export_tokenizer, stop_token_ids=inputs.stops, **renderer_kw)
    differ = []
    for probe in inputs.probes:
        same = ours.prompt_ids(probe.prompt) == theirs.prompt_ids(probe.prompt)
        if probe.conversation is not None:
            a, b = ours.render(probe.conversation), theirs.render(probe.conversation)
            same &= a.input_ids == b.input_ids and a.labels == b.labels
        if not same:
            differ.append(probe.source)
    detail: dict[str, Any] = {
        "probes": len(inputs.probes),
        "same_template_text": (export_tokenizer.chat_template or "") == (train_tokenizer.chat_template or ""),
    }
    if differ:
        detail["differing"] = differ
    return Check(name, not differ, detail)


def check_ollama(tokenizer: Any, shape: Any, inputs: Inputs) -> Check:
    """The Modelfile TEMPLATE's shape renders every probe as the Jinja template does, text for text."""
    from tunesmith.export.template import mismatches

    convs = [p.prompt for p in inputs.probes] + [p.conversation.as_dicts() for p in inputs.probes if p.conversation]
    bad = mismatches(tokenizer, shape, convs)
    return Check("ollama_template", not bad, {"conversations": len(convs), **({"differing": bad} if bad else {})})
