"""General English during training: the forgetting probe, replay, and a KL term to the base.

Tuning on one narrow task makes the model worse at plain text (eval/forgetting.py measures it after the
run). Three tools act on that *during* the run; all read shipped text, never the user's data:

* the probe: perplexity of the forgetting check's own text (``examples/general_english.txt``), measured
  before the first step and at every validation, logged next to the validation loss, and, with a
  forgetting budget, used to pick the best weights (the lowest validation loss among the evaluations whose
  rise stays within the budget) and to stop early once the run has left the budget;
* replay (``--replay F``): general rows join every SFT step so that F of the step's trained tokens are
  general. Their source (``--replay-source``): the base model's own answers to everyday prompts
  (``chat_replay.py``, the default), consecutive chunks of a *different* shipped prose text
  (``examples/general_replay.txt``, ``TextReplay`` below, every token trained), or half each. The probe's
  text is never trained on, so the check still measures text the run has not seen;
* KL to the base (``--kl-to-base C``): each step, C x KL(base || tuned) per token on one row: a chunk of the
  prose text, or (``--kl-source chat``) one of the base model's everyday answers; the base is the same
  model with its LoRA adapter disabled (as DPO's and RFT's references).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import torch

from tunesmith import paths, runs
from tunesmith.data.render import IGNORE, Rendered
from tunesmith.errors import UserError
from tunesmith.eval import forgetting
from tunesmith.train import distributed
from tunesmith.train.batches import WIDTH_MULTIPLE, StepPlan, layout_step, to_batch
from tunesmith.train.loss import decoder_hidden, linear_kl_to_base, linear_log_softmax
from tunesmith.train.precision import autocast

REPLAY_TEXT = "general_replay.txt"
REPLAY_SOURCE = f"replay:{REPLAY_TEXT}"  # marks replay rows (Rendered.source) in a step
REPLAY_ROW_TOKENS = 256  # longest replay row: a step's replay is cut into rows of at most this many tokens
KL_ROW_TOKENS = 128  # tokens of general text the KL term reads each step


def replay_text() -> str:
    return (resources.files("tunesmith.examples") / REPLAY_TEXT).read_text(encoding="utf-8")


def replay_stream(tokenizer: Any) -> list[int]:
    """The replay text as one token stream (read cyclically)."""
    return list(tokenizer(replay_text(), add_special_tokens=False)["input_ids"])


def _take(stream: list[int], pos: int, n: int) -> list[int]:
    """``n`` tokens of ``stream`` from ``pos``, wrapping around."""
    reps = (pos + n) // len(stream) + 1
    return (stream * reps)[pos : pos + n]


@dataclass
class TextReplay:
    """Consecutive chunks of the replay text: a step owing ``need`` trained tokens gets exactly that many."""

    stream: list[int]

    def take(self, need: int, state: int | None) -> tuple[list[Rendered], int]:
        """(rows of general text holding ``need`` trained tokens, the stream position after them). A row of n
        tokens trains n - 1 (its first is context only)."""
        pos, rows = state or 0, []
        while need > 0:
            n = min(need, REPLAY_ROW_TOKENS - 1)
            ids = _take(self.stream, pos, n + 1)
            rows.append(Rendered(ids, [IGNORE, *ids[1:]], source=REPLAY_SOURCE))
            pos, need = (pos + n) % len(self.stream), need - n
        return rows, pos


class ReplaySource(Protocol):
    """Where replay rows come from: ``take`` returns rows holding at least ``need`` trained tokens and the
    source's state after them (``None`` at the start of the run)."""

    def take(self, need: int, state: Any) -> tuple[list[Rendered], Any]: ...


def mix_replay(
    plan: list[StepPlan],
    rows: list[Rendered],
    source: ReplaySource,
    fraction: float,
    micro_batch_size: int,
    *,
    pack: bool = False,
    pack_len: int | None = None,
) -> tuple[list[StepPlan], list[Rendered]]:
    """(the plan with replay rows added to every step, the replay rows: their indices run on from
    ``len(rows)``). Each step owes ``fraction`` of its trained tokens once the replay is added to its task
    tokens. A pure function of its inputs, so a resumed run rebuilds the same steps."""
    lengths = [len(r.input_ids) for r in rows]
    extra: list[Rendered] = []
    out, state = [], None
    for step in plan:
        trained = sum(rows[i].n_trained for i in step.indices)
        need = round(trained * fraction / (1.0 - fraction)) if fraction > 0 else 0
        new, state = source.take(need, state)
        first = len(rows) + len(extra)
        extra += new
        lengths += [len(r.input_ids) for r in new]
        indices = step.indices + list(range(first, first + len(new)))
        out.append(StepPlan(step.epoch, layout_step(indices, lengths, micro_batch_size, pack=pack, pack_len=pack_len)))
    return out, extra


def replay_tokens(examples: list[Any]) -> int:
    """Trained tokens of the replay rows among ``examples``."""
    return sum(e.n_trained for e in examples if str(getattr(e, "source", "")).startswith("replay:"))


@dataclass
class Probe:
    """The forgetting check's perplexity, measured on the model as it is now."""

    rows: list[Rendered]
    pad_id: int
    bf16: bool = False
    budget: float | None = None  # the most relative rise the best weights may have; None: not used to select
    last_only: bool = False  # reads at the last validation only (auto.ValidationPlan.probe_last_only)
    # Where the base model's perplexity is kept (use_cache): a constant of the model, its precision and the text.
    cache: Path | None = None

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, bf16: bool, budget: float | None) -> Probe:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(forgetting.text_rows(tokenizer, forgetting.general_text()), pad, bf16, budget)

    @property
    def tokens(self) -> int:
        return sum(len(r.input_ids) for r in self.rows)

    def measure(self, model: Any) -> float:
        was_training = model.training
        with autocast(self.bf16):
            ppl, _ = forgetting.rows_perplexity(model, self.rows, self.pad_id)
        model.train(was_training)
        return ppl

    def measure_base(self, model: Any, step: int) -> float | None:
        """The perplexity the run's rise is measured from: the model before its first step (a fresh adapter
        changes nothing yet); on resuming a checkpoint that did not record it, a LoRA model with its adapter
        disabled. None where neither is at hand (full fine-tuning resumed from an older checkpoint). Not the
        adapter disabled at step 0: a compiled model would compile its layers once more for that."""
        if step == 0:
            return self._base_at_start(model)
        if hasattr(model, "disable_adapter"):
            with model.disable_adapter():
                return self.measure(model)
        return None

    def _base_at_start(self, model: Any) -> float:
        if self.cache is not None:
            try:
                return float(json.loads(self.cache.read_text(encoding="utf-8"))["perplexity"])
            except (OSError, ValueError, KeyError, TypeError):
                pass  # none yet, or unreadable: measure it
        ppl = self.measure(model)
        if self.cache is not None:
            try:
                self.cache.parent.mkdir(parents=True, exist_ok=True)
                runs.write_text_atomic(self.cache, json.dumps({"perplexity": ppl}))
            except OSError:
                pass  # a read-only home only costs the next run this measurement
        return ppl

    def use_cache(self, model_key: str, method: str) -> None:
        """Keep the perplexity before the first step per base model (the probe's pass over its 3,217 tokens was
        4.9-5.0 s of every run on a 2-vCPU EPYC, measured). Only for a run that starts from the base: a fresh
        LoRA adapter or full fine-tuning from the base's weights; ``model_key`` hashes those weights."""
        text = hashlib.sha256(json.dumps([r.input_ids for r in self.rows]).encode()).hexdigest()
        key = json.dumps([model_key, method, self.bf16, text])
        self.cache = paths.home() / "probe" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


@dataclass
class KLToBase:
    """``coef`` x KL(base || tuned), per token, on ``per_step`` rows a step (chunks of prose, or the base model's
    everyday answers through the chat template, taken in turn); its gradient is added to the step's (before
    clipping). The base is ``model`` with its adapter disabled, so it costs no memory."""

    coef: float
    rows: list[Rendered]
    pad_id: int
    bf16: bool = False
    per_step: int = 1
    _buffer: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @classmethod
    def for_tokenizer(cls, coef: float, tokenizer: Any, bf16: bool, per_step: int = 1) -> KLToBase:
        stream = replay_stream(tokenizer)
        chunks = [stream[i : i + KL_ROW_TOKENS] for i in range(0, len(stream) - 1, KL_ROW_TOKENS)]
        rows = [Rendered(c, list(c), source=REPLAY_SOURCE) for c in chunks if len(c) > 1]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(coef, rows, pad, bf16, per_step)

    def __call__(self, model: Any, step: int) -> float:
        """Backward of the term on this step's rows in a pass of their own; returns the KL per token (before
        ``coef``). SFT steps carry the rows in their first micro-batch instead (``targets``, loop.py)."""
        targets = self.targets(model, step)
        if targets is None:
            return 0.0
        batch = targets.batch(next(model.parameters()).device)
        with autocast(self.bf16):
            hidden, head = decoder_hidden(model, batch)
            term = targets.term(hidden, head)
        term.backward()
        return targets.kl

    def _base_buffer(self, own: torch.Tensor, head: Any) -> torch.Tensor | None:
        """Where this step's base log-probabilities go: one buffer for the run, so that a step does not fault
        in fresh pages for them (25 MB for 127 tokens of SmolLM2's vocabulary). The next step's overwrite it,
        after this step's term has read them."""
        weight = getattr(head, "weight", None)
        if weight is None:
            return None
        need, dtype = own.shape[0] * weight.shape[0], torch.float64 if own.dtype == torch.float64 else torch.float32
        buf = self._buffer
        if buf is None or buf.numel() < need or buf.dtype != dtype or buf.device != own.device:
            buf = self._buffer = torch.empty(need, dtype=dtype, device=own.device)
        return buf[:need].view(own.shape[0], weight.shape[0])

    def targets(self, model: Any, step: int) -> KLTargets | None:
        """This step's rows and the base's log-probabilities at their scored positions (the adapter disabled,
        no grad); None where the term is exactly zero."""
        if step == 0 and _adapter_is_a_no_op(model):
            # A fresh adapter (every B zero) leaves the tuned model exactly the base: the KL and its gradient are
            # exactly 0, and its passes would cost a step ~12% more for nothing (2-vCPU EPYC, measured).
            return None
        k = self.per_step
        rows = [self.rows[(step * k + i) % len(self.rows)] for i in range(k)]
        targets = KLTargets(self.coef, [Rendered(r.input_ids, [IGNORE] * len(r.input_ids)) for r in rows], self.pad_id)
        batch = targets.batch(next(model.parameters()).device)
        with torch.no_grad(), model.disable_adapter(), autocast(self.bf16):
            hidden, head = decoder_hidden(model, batch)
            scored = targets.scored(hidden.shape[1]).to(hidden.device)
            own = hidden[:, :-1][scored]
            targets.base = linear_log_softmax(head, own, self._base_buffer(own, head))
        return targets


@dataclass
class KLTargets:
    """One step's KL rows (their labels all ignored: only the term reads them) and the base's log-probabilities
    at their scored positions. The rows go through the decoder as training's micro-batches do
    (batches.to_batch) and through the same decoder call, so compiled layers reuse training's variants
    (setup.compile_layers); in an SFT step they are rows of its first micro-batch, sharing its pass."""

    coef: float
    rows: list[Rendered]
    pad_id: int
    base: torch.Tensor | None = None
    kl: float = 0.0  # the KL per token, once ``term`` has run

    def batch(self, device: torch.device) -> dict[str, torch.Tensor]:
        batch = to_batch([[r] for r in self.rows], self.pad_id, WIDTH_MULTIPLE)
        return {key: v.to(device) for key, v in batch.items()}

    def scored(self, width: int) -> torch.Tensor:
        """rows x (width - 1): the positions that predict a real next token."""
        lengths = torch.tensor([len(r.input_ids) for r in self.rows])
        return torch.arange(width - 1)[None, :] < lengths[:, None] - 1

    def term(self, hidden: torch.Tensor, head: Any) -> torch.Tensor:
        """``coef`` x KL(base || tuned) per token, from the tuned hidden states of the rows (the last
        ``len(rows)`` rows of ``hidden``: rows x width x dim)."""
        own = hidden[-len(self.rows) :, :-1]
        scored = own[self.scored(hidden.shape[1]).to(own.device)]
        # KL(base || tuned) = sum_v p_base (log p_base - log p_tuned): zero while nothing moved.
        kl = linear_kl_to_base(head, scored, self.base) / scored.shape[0]
        self.kl = float(kl.detach())
        return self.coef * kl


def _adapter_is_a_no_op(model: Any) -> bool:
    """Whether every LoRA B matrix is zero (a plain adapter as PEFT starts it), so the adapter adds exactly
    nothing. Not for DoRA: its rescaled weight equals the base's only up to rounding."""
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    variant = any("lora_magnitude_vector" in name for name, _ in model.named_parameters())
    return bool(lora_b) and not variant and not any(bool(p.detach().any()) for p in lora_b)


@dataclass
class General:
    """What the loop does with general text in a run: any of the probe and the KL term (replay lives in the
    step plan, see ``mix_replay``)."""

    probe: Probe | None = None
    kl: KLToBase | None = None


def probe_cost(s: Any, tokenizer: Any, has_val: bool) -> int:
    """Tokens the forgetting probe reads at each validation, where it will run (the validation budget counts
    them); 0 where it will not."""
    if not (s.forgetting_probe and has_val and distributed.world() == 1):
        return 0
    return len(tokenizer(forgetting.general_text(), add_special_tokens=False)["input_ids"])


def general_setup(s: Any, tokenizer: Any, bf16: bool, validates: bool, chat: Any = None) -> tuple[General, list[str]]:
    """The forgetting probe (at validations, so only in a run that validates) and the KL-to-base term the run's
    settings ask for, with their sentences. ``chat``: the base model's everyday answers (chat_replay.BaseChat),
    which the KL term reads instead of prose with ``--kl-source chat``."""
    reasons = []
    probe = kl = None
    if s.forgetting_probe and validates and distributed.world() > 1:
        # The probe reads the model outside the sharded step (FSDP2's DTensors refuse plain inputs there).
        reasons.append("forgetting probe: off in a multi-process run (tunesmith eval's check measures it after)")
    elif s.forgetting_probe and validates:
        probe = Probe.for_tokenizer(tokenizer, bf16, s.forgetting_budget)
        reasons.append(
            f"forgetting probe: general-English perplexity ({forgetting.TEXT_NAME}, {probe.tokens} tokens, the "
            "eval check's text) before training (kept per base model) and at each validation (--no-forgetting-probe "
            "turns it off)"
        )
        if s.forgetting_budget is not None:
            reasons.append(
                f"best weights: the lowest validation loss among evaluations within +{s.forgetting_budget:.0%} "
                "general-English perplexity; early stopping counts evaluations past it"
            )
    if s.kl_to_base:
        if distributed.world() > 1:
            raise UserError("--kl-to-base runs in one process for now: drop --nproc or the KL term")
        how = f"{s.kl_to_base:g} x KL(base || tuned) per token"
        if s.kl_source == "chat" and chat is not None and chat.usable:
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            kl = KLToBase(s.kl_to_base, chat.rows, pad, bf16, s.kl_rows)
            reasons.append(f"KL to the base: {how} on {_rows(s.kl_rows)} of {chat.said()} a step, prompt and reply")
        else:
            kl = KLToBase.for_tokenizer(s.kl_to_base, tokenizer, bf16, s.kl_rows)
            reasons.append(
                f"KL to the base: {how} on {s.kl_rows * KL_ROW_TOKENS} tokens of general English prose a step"
            )
    return General(probe, kl), reasons


def _rows(n: int) -> str:
    return "one" if n == 1 else str(n)


def probe_record(loop: Any, budget: float | None) -> dict[str, Any] | None:
    """run.json's forgetting_probe: the general-English perplexity at the start, at the kept weights and at
    each validation."""
    if loop.probe_base is None:
        return None
    at_best = next((h.get("probe_perplexity") for h in loop.history if h["step"] == loop.best_step), None)
    return {
        "text": forgetting.TEXT_NAME,
        "base_perplexity": loop.probe_base,
        "best_perplexity": at_best,
        "best_change": at_best / loop.probe_base - 1.0 if at_best is not None else None,
        "budget": budget,
        "within_budget": loop.best_within if budget is not None else None,
        "history": [
            {"step": h["step"], "perplexity": h["probe_perplexity"]} for h in loop.history if "probe_perplexity" in h
        ],
    }
