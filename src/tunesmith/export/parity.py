"""Parity checks: proof that an export is the model that was trained, written to ``export.json``.

    adapter on base ──(logits, greedy)── merged in memory (fp32) ──┬── merged folder, read by plain transformers
                                                                    ├── .gguf, read by transformers' GGUF reader
    adapter on base ──(logits, greedy)── adapter folder, read by plain PEFT
    training tokenizer ──(same token ids for every probe)── the tokenizer + chat template of each export

The probes are a few built-in conversations and the first rows of the run's training data. The merged
fp32 model continues each one greedily (``generate``, KV cache): that continuation is the reference.
Every other model is then run once over prompt + reference continuation (teacher forcing), which gives
both its logits for the comparison and its greedy choice at every position: a model continues a probe
identically exactly when its argmax matches the reference token at every position, and the first
mismatch is where its own greedy continuation would diverge. One forward pass per probe and model,
instead of a generation per model.

The rules:
  * adapter on base vs merged: logits within ``LOGITS_TOL``, greedy identical. The logits are compared
    in fp64 arithmetic over the fp32 weights, so that what is measured is the merge (the rounding of
    W + s·BA to fp32), not the order in which two fp32 computations happen to round; the fp32-arithmetic
    difference is reported beside it (on SmolLM2-135M, logits of magnitude ~45, it is ~1e-4 by itself).
  * f32 and f16 exports continue every probe exactly as the reference does; f32 logits within the tolerance;
  * bf16 and q8_0 are lossy by design and keep ``MIN_AGREEMENT`` of the reference tokens (those before the
    first divergence), a drift we state rather than hide;
  * read-back weights equal, exactly, the merged weights rounded to the export dtype: a wrong tensor name,
    layout or permutation shows up there even when it happens not to change a continuation.
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
    prompts: list[list[int]]
    stops: list[int]
    continuations: list[list[int]] = field(default_factory=list)  # the reference, see ``set_reference``

    def sequences(self) -> list[tuple[list[int], int]]:
        """(prompt + continuation, where the continuation starts) for every probe."""
        return [(p + c, len(p)) for p, c in zip(self.prompts, self.continuations, strict=True)]


def build_probes(
    train_file: Path | None, renderer: Renderer, columns: dict[str, str] | None = None
) -> tuple[list[Probe], list[str]]:
    probes = [Probe(f"fixed {i + 1}", conv) for i, conv in enumerate(FIXED_CONVERSATIONS)]
    notes: list[str] = []
    if train_file is None or not Path(train_file).exists():
        notes.append(f"training data not found ({train_file}); probes are the built-in conversations only")
        return probes, notes
    taken = 0
    for conv in read_examples(train_file, columns=columns).examples:
        if conv.text_only:  # a document has no prompt to continue from as a chat
            continue
        last = max((i for i, m in enumerate(conv.messages) if m.role == "assistant"), default=None)
        if last is None or len(renderer.render(conv).input_ids) > renderer.max_len:
            continue
        probes.append(Probe(conv.source, [m.as_dict() for m in conv.messages[:last]], conv))
        taken += 1
        if taken == TRAIN_PROBES:
            break
    return probes, notes


def encode(probes: list[Probe], renderer: Renderer, stops: Sequence[int]) -> Inputs:
    return Inputs(probes, [renderer.prompt_ids(p.prompt) for p in probes], list(stops))


@torch.inference_mode()
def set_reference(merged: Any, inputs: Inputs) -> None:
    """Greedy continuations of the merged fp32 model, one prompt at a time (no padding).

    We call ``model.generate`` directly instead of ``tunesmith.generate.generate`` because parity needs
    token ids, which that helper does not return, and a generation config of our own so that no
    sampling or repetition settings shipped with a model can change what is compared. A continuation is
    cut where teacher forcing the same model disagrees with ``generate`` (a near-tie that the KV cache's
    different rounding decides the other way), so the reference is one that both paths agree on."""
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=MAX_NEW_TOKENS, do_sample=False, eos_token_id=inputs.stops, pad_token_id=inputs.stops[0]
    )
    merged.eval()
    inputs.continuations = []
    for ids in inputs.prompts:
        x = torch.tensor([ids])
        tokens = merged.generate(input_ids=x, attention_mask=torch.ones_like(x), generation_config=config)
        tokens = tokens[0, len(ids) :].tolist()
        cut = next((k for k, t in enumerate(tokens) if t in inputs.stops), None)
        inputs.continuations.append(tokens if cut is None else tokens[: cut + 1])
    for i, (seq, start) in enumerate(inputs.sequences()):
        kept = _first_mismatch(_logits(merged, seq), seq, start)
        inputs.continuations[i] = inputs.continuations[i][:kept]


def _logits(model: Any, seq: list[int]) -> torch.Tensor:
    return model(input_ids=torch.tensor([seq])).logits[0]


def _first_mismatch(logits: torch.Tensor, seq: list[int], start: int) -> int:
    """How many continuation tokens the model's argmax reproduces before the first mismatch."""
    predicted = logits[start - 1 : len(seq) - 1].argmax(-1).tolist()
    return next((k for k, (p, t) in enumerate(zip(predicted, seq[start:], strict=True)) if p != t), len(seq) - start)


@dataclass
class Comparison:
    logits_max_abs_diff: float
    identical: int  # probes continued exactly as the reference
    probes: int
    agreement: float  # share of reference tokens reproduced before the first mismatch


@torch.inference_mode()
def compare(model: Any, against: Any, inputs: Inputs, *, fp64: bool = False) -> Comparison:
    """``model`` vs ``against`` on every probe: max |logit difference|, and ``model``'s greedy agreement
    with the reference continuations. With ``fp64``, both run in float64 for the logits (and go back to
    fp32 afterwards, exactly, since their weights are fp32 values)."""
    worst, identical, kept, total = 0.0, 0, 0, 0
    if fp64:
        model.double()
        against.double()
    try:
        for seq, start in inputs.sequences():
            mine, theirs = _logits(model, seq), _logits(against, seq)
            worst = max(worst, (mine.double() - theirs.double()).abs().max().item())
            if not fp64:
                k = _first_mismatch(mine, seq, start)
                identical += k == len(seq) - start
                kept, total = kept + k, total + len(seq) - start
    finally:
        if fp64:
            model.float()
            against.float()
    return Comparison(worst, identical, len(inputs.prompts), kept / total if total else 1.0)


def check_merge(adapter_model: Any, merged: Any, inputs: Inputs) -> Check:
    """Adapter on base vs the fp32 merge (see the module docstring for why the logits use fp64)."""
    exact = compare(adapter_model, merged, inputs, fp64=True)
    plain = compare(adapter_model, merged, inputs)
    return Check(
        "adapter_vs_merged",
        exact.logits_max_abs_diff < LOGITS_TOL and plain.identical == plain.probes,
        {
            "logits_max_abs_diff": exact.logits_max_abs_diff,
            "logits_max_abs_diff_fp32_arithmetic": plain.logits_max_abs_diff,
            "tolerance": LOGITS_TOL,
            "greedy_identical": f"{plain.identical}/{plain.probes}",
            "dtype": "f32",
        },
    )


def check_readback(
    name: str, model: Any, against: Any, inputs: Inputs, dtype: str, expected: dict[str, torch.Tensor] | None = None
) -> Check:
    """An export read back by its reference loader vs the model it was made from (see the module docstring)."""
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
    c = compare(model, against, inputs)
    detail |= {
        "logits_max_abs_diff": c.logits_max_abs_diff,
        "greedy_identical": f"{c.identical}/{c.probes}",
        "token_agreement": round(c.agreement, 4),
    }
    if dtype in EXACT_DTYPES:
        exact_logits = dtype == "f32"
        detail["required"] = "identical greedy continuations" + (
            f", logits within {LOGITS_TOL}" if exact_logits else ""
        )
        passed &= c.identical == c.probes and (not exact_logits or c.logits_max_abs_diff < LOGITS_TOL)
    else:
        detail["required"] = f"token agreement >= {MIN_AGREEMENT}"
        passed &= c.agreement >= MIN_AGREEMENT
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
