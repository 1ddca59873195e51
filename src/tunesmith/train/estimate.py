"""Pre-flight estimate: time per epoch and peak memory of LoRA and of full fine-tuning, on this machine.

Nothing comes from a static table. Two measured ingredients:
  * the data's real token statistics: every kept row's length, cut into the very step plan that training
    would use (auto-chosen batch and micro-batch, length-sorted micro-batches, padding included);
  * a short probe: one or two real optimizer steps per method, each on a real micro-batch of the plan,
    through the same ``prepare_model`` (``add_lora``) / ``accumulate_gradients`` / AdamW as the training
    loop; the second step only when the first was quick, so a slow model is probed once.

    time per epoch  = (probe seconds per padded token) x (padded tokens in the epoch's plan)
                    + (probe seconds per optimizer update) x (steps per epoch)
    peak memory     = weights + gradients + AdamW state            (summed from the probe's real tensors)
                    + activations autograd saved during the probe step (saved_tensors_hooks), scaled to
                      the largest micro-batch: micro-batch size x longest row

With ``nproc`` > 1 (``tunesmith check --nproc N``), each method also gets the memory of one of N processes,
from the same measured parts (distributed.py says how each method is spread):
    LoRA, DDP       a full replica: weights + gradients x 2 (DDP's all-reduce buckets hold a second copy)
                    + AdamW state + activations
    full, FSDP2     (weights + gradients + AdamW state) / N
                    + what is unsharded at a time: two decoder layers' weights (the one computing and the
                      one prefetched) and one layer's gradients, plus the root's weights and gradients
                      (embeddings, final norm, output head), in the compute dtype
                    + activations (no rank's micro-batch is larger than the single-process one)

The probe runs with learning rate 0, so it never changes the weights it measures. Activations are what
autograd keeps between forward and backward; the transient buffers of the backward pass come on top, so
read the memory figure as a floor with ~10-20% headroom to add. Both figures assume this machine stays
as busy (or idle) as it was during the probe.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from tunesmith.config import RunConfig
from tunesmith.data.formats import Conversation
from tunesmith.data.render import Rendered, Renderer
from tunesmith.train.auto import MICRO_BATCH_TOKENS
from tunesmith.train.batches import Row, StepPlan, plan_steps
from tunesmith.train.loop import accumulate_gradients
from tunesmith.train.optim import make_optimizer

PROBE_STEPS = 2  # optimizer steps per method; the second (warm) one is the measurement when there is time
PROBE_TOKENS = MICRO_BATCH_TOKENS  # padded tokens per probe micro-batch at most: the size auto micro-batches aim at
PROBE_BUDGET_S = 10.0  # no second step for a method whose first step took longer than this


@dataclass
class MethodEstimate:
    method: str
    precision: str
    trainable_params: int
    total_params: int
    batch_size: int
    micro_batch_size: int
    packing: bool
    epochs: int
    steps_per_epoch: int
    probe_steps: int
    probe_tokens_per_s: float  # real (unpadded) tokens per second during the timed probe steps
    seconds_per_epoch: float
    seconds_total: float  # all epochs plus the validation passes
    memory: dict[str, int] = field(default_factory=dict)  # bytes: weights, gradients, optimizer, activations, peak
    cost_per_epoch: float | None = None
    cost_total: float | None = None
    per_rank: dict[str, Any] | None = None  # nproc, strategy, and the memory parts of one process (bytes)


@dataclass
class Estimate:
    device: str
    probe_seconds: float
    methods: list[MethodEstimate]
    price_per_hour: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def padded_tokens(rows: list[list[int]]) -> int:
    """Positions a micro-batch computes: its rows (lengths of the examples in each) padded to the widest
    (see batches.to_batch; unpacked, every row holds one example)."""
    return len(rows) * max((sum(row) for row in rows), default=0)


def _bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


class _SavedActivations:
    """Counts what autograd saves for backward while a real training step runs, and when the forward pass
    ended (the last tensor is saved by the loss, the forward's last op).

    Parameters themselves are not counted (they are "weights"). Tensors shaped like a parameter, such as
    the bf16 copies autocast makes of fp32 weights, are counted as ``fixed``: they do not grow with the
    tokens of a micro-batch, unlike everything else, which ``per_token`` scales."""

    def __init__(self, model: Any) -> None:
        params = list(model.parameters())
        self.param_ptrs = {p.untyped_storage().data_ptr() for p in params}
        self.param_shapes = {tuple(p.shape) for p in params} | {tuple(reversed(p.shape)) for p in params}
        self.saved: dict[int, tuple[int, bool]] = {}  # storage -> (bytes, fixed); views are counted once
        self.last_pack = 0.0

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in self.param_ptrs:
            self.saved[storage.data_ptr()] = (storage.nbytes(), tuple(t.shape) in self.param_shapes)
        self.last_pack = time.perf_counter()
        return t

    def __enter__(self) -> _SavedActivations:
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.hooks.__exit__(*exc)

    def bytes(self, fixed: bool) -> int:
        return sum(n for n, is_fixed in self.saved.values() if is_fixed == fixed)


def _probe_rows(plan: list[StepPlan], lengths: list[int]) -> list[list[Row]]:
    """The probe's micro-batches: a real micro-batch of each of the plan's first steps (the middle one by
    length), trimmed to its middle rows only beyond PROBE_TOKENS padded tokens. The size matters: a step
    also pays costs that do not grow with its tokens (per-op overhead, kernel set-up for a new shape), so
    only micro-batches laid out as training lays them out give its tokens per second."""
    out = []
    for k in range(PROBE_STEPS):
        step = plan[k % len(plan)]
        mb = step.micro_batches[len(step.micro_batches) // 2]
        widest = max(sum(lengths[i] for i in row) for row in mb)
        keep = min(len(mb), max(1, PROBE_TOKENS // widest))
        start = (len(mb) - keep) // 2
        out.append(mb[start : start + keep])
    return out


def _sizes(mb: list[Row], lengths: list[int]) -> list[list[int]]:
    return [[lengths[i] for i in row] for row in mb]


@dataclass
class _Timing:
    fwd_bwd_s: float  # forward + backward of the micro-batch
    forward_s: float  # the forward part alone (0 when activations were not counted)
    update_s: float  # clip + AdamW step + zero_grad
    gradients: int  # bytes
    activations: int  # bytes saved for backward that grow with the micro-batch's positions
    fixed: int  # bytes saved for backward that do not (weight copies)
    tokens: int  # real tokens
    padded: int  # positions computed


def per_rank_memory(
    method: str, nproc: int, memory: dict[str, int], layer_bytes: int, root_bytes: int, bf16: bool
) -> dict[str, Any]:
    """One process's share of ``memory`` (a single-process estimate) under DDP (LoRA) or FSDP2 (full)."""
    if method == "lora":
        parts = {
            "weights": memory["weights"],
            "gradients": 2 * memory["gradients"],
            "optimizer": memory["optimizer"],
            "activations": memory["activations"],
        }
        strategy = "ddp"
    else:
        compute = 0.5 if bf16 else 1.0  # the mixed-precision policy gathers fp32 weights as bf16
        unsharded = round((2 * layer_bytes + root_bytes) * compute + (layer_bytes + root_bytes) * compute)
        parts = {
            "weights": memory["weights"] // nproc,
            "gradients": memory["gradients"] // nproc,
            "optimizer": memory["optimizer"] // nproc,
            "unsharded": unsharded,
            "activations": memory["activations"],
        }
        strategy = "fsdp2"
    return {"nproc": nproc, "strategy": strategy, **parts, "peak": sum(parts.values())}


def _layer_bytes(model: Any) -> tuple[int, int]:
    """(bytes of the largest decoder layer, bytes outside the decoder layers) of the weights."""
    from tunesmith.train.loss import causal_lm_parts

    layers = getattr(causal_lm_parts(model)[0], "layers", [])
    sizes = [_bytes(layer.parameters()) for layer in layers]
    return max(sizes, default=0), _bytes(model.parameters()) - sum(sizes)


def _probe(
    model: Any, cfg: RunConfig, method: str, rows: _Rows, val_lengths: list[int], nproc: int = 1
) -> MethodEstimate:
    from tunesmith.train.setup import prepare

    lengths = rows.lengths
    # The run's own set-up, minus torch.compile (a probe of two steps would time the compiler).
    prep = prepare(cfg, model, lengths, val_lengths=val_lengths, method=method, compile=False)
    model, resolved, s, bf16 = prep.model, prep.resolved, prep.settings, prep.bf16
    batch, micro, epochs = s.batch_size or 1, s.micro_batch_size or 1, s.epochs or 1
    params = [p for p in model.parameters() if p.requires_grad]
    # lr 0: the probe measures the update's cost without changing the weights.
    optimizer, _ = make_optimizer(params, 0.0, s.weight_decay, 1, 0, s.min_lr_ratio)
    model.train()

    def step(mb: list[Row], count_activations: bool) -> _Timing:
        """One optimizer step on one micro-batch, exactly as the loop does it, measured."""
        batch_rows = [rows.get(row) for row in mb]
        saved = _SavedActivations(model)
        t0 = time.perf_counter()
        with saved if count_activations else contextlib.nullcontext():
            accumulate_gradients(model, [batch_rows], rows.pad_id, bf16)
        t1 = time.perf_counter()
        grad_bytes = _bytes(p.grad for p in params)
        torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        n = _sizes(mb, lengths)
        tokens = sum(map(sum, n))
        forward = saved.last_pack - t0 if count_activations else 0.0  # only the hooked step sees the forward end
        update = time.perf_counter() - t1
        return _Timing(
            t1 - t0, forward, update, grad_bytes, saved.bytes(False), saved.bytes(True), tokens, padded_tokens(n)
        )

    plan = plan_steps(lengths, batch, micro, 1, s.seed, pack=s.packing, pack_len=s.pack_len)
    # The first step counts the saved activations and pays for allocation (AdamW state); when it was quick,
    # a second step is the timing. On a slow model the first step's rate stands: the warm-up share is small.
    started = time.perf_counter()
    timings: list[_Timing] = []
    for mb in _probe_rows(plan, lengths):
        timings.append(step(mb, count_activations=not timings))
        if time.perf_counter() - started > PROBE_BUDGET_S:
            break
    first, t = timings[0], timings[-1]
    optimizer_bytes = _bytes(v for state in optimizer.state.values() for v in state.values())
    weights = _bytes(model.parameters()) + _bytes(model.buffers())
    # Saved activations grow with the positions of a micro-batch: scale to the largest one of the plan.
    per_mb = [padded_tokens(_sizes(mb, lengths)) for st in plan for mb in st.micro_batches]
    activations = first.fixed + round(first.activations / first.padded * max(per_mb))
    epoch_padded = sum(per_mb)
    seconds_per_epoch = t.fwd_bwd_s / t.padded * epoch_padded + t.update_s * len(plan)
    # Validation is forward passes only (their share of a step measured in the first step); the loop
    # validates about ten times a run.
    forward_share = first.forward_s / first.fwd_bwd_s if first.fwd_bwd_s else 0.5
    val_pass = forward_share * t.fwd_bwd_s / t.padded * _val_padded(val_lengths, micro)
    n_evals = resolved.n_evals * resolved.val_rows / len(val_lengths) if val_lengths else 0  # a sample: a share
    for p in params:
        p.grad = None
    memory = {
        "weights": weights,
        "gradients": first.gradients,
        "optimizer": optimizer_bytes,
        "activations": activations,
        "peak": weights + first.gradients + optimizer_bytes + activations,
    }
    per_rank = per_rank_memory(method, nproc, memory, *_layer_bytes(model), bf16) if nproc > 1 else None
    return MethodEstimate(
        method=method,
        precision="bf16 autocast" if bf16 else "fp32",
        trainable_params=sum(p.numel() for p in params),
        total_params=sum(p.numel() for p in model.parameters()),
        batch_size=batch,
        micro_batch_size=micro,
        packing=s.packing,
        epochs=epochs,
        steps_per_epoch=len(plan),
        probe_steps=len(timings),
        probe_tokens_per_s=round(t.tokens / t.fwd_bwd_s, 1),
        seconds_per_epoch=round(seconds_per_epoch, 2),
        seconds_total=round(seconds_per_epoch * epochs + val_pass * n_evals, 2),
        memory=memory,
        per_rank=per_rank,
    )


def _val_padded(val_lengths: list[int], micro: int) -> int:
    """Evaluation sorts rows by length and pads each micro-batch (see validation.evaluate)."""
    ordered = sorted(val_lengths)
    return sum(padded_tokens([[n] for n in ordered[i : i + micro]]) for i in range(0, len(ordered), micro))


class _Rows:
    """Renders only the rows the probe touches (a few steps' worth), each once."""

    def __init__(self, renderer: Renderer, convs: list[Conversation], lengths: list[int], pad_id: int) -> None:
        self.renderer, self.convs, self.lengths, self.pad_id = renderer, convs, lengths, pad_id
        self.cache: dict[int, Rendered] = {}

    def get(self, indices: list[int]) -> list[Rendered]:
        for i in indices:
            if i not in self.cache:
                rendered, _ = self.renderer.render_all([self.convs[i]])  # the overlong policy, as in training
                # (The doctor kept this row; were the model's stop tokens to change its length, time it whole.)
                self.cache[i] = rendered[0] if rendered else self.renderer.render(self.convs[i])
        return [self.cache[i] for i in indices]


def estimate_training(
    cfg: RunConfig,
    kept: list[Conversation],
    kept_lengths: list[int],
    val_lengths: list[int],
    *,
    price_per_hour: float | None = None,
    nproc: int = 1,
    methods: tuple[str, ...] = ("full", "lora"),
) -> Estimate:
    """Probe full fine-tuning, then LoRA (or only those of ``methods``), on one loaded copy of the model;
    ``kept`` are the training rows that survive the overlong policy (from the dataset doctor),
    ``kept_lengths`` their token counts."""
    from tunesmith.models.load import load_model
    from tunesmith.models.stops import stop_token_ids

    t0 = time.perf_counter()
    model, tokenizer, _ = load_model(
        cfg.model.name, trust_remote_code=cfg.model.trust_remote_code, chat_template=cfg.model.chat_template
    )
    d = cfg.data
    renderer = Renderer(
        tokenizer,
        max_len=d.max_len,
        overlong=d.overlong,
        train_on=d.train_on,
        stop_token_ids=stop_token_ids(model, tokenizer),
    )
    rows = _Rows(renderer, kept, kept_lengths, tokenizer.pad_token_id)
    probed = []
    # Full first: it leaves the fp32 weights untouched (lr 0), so LoRA can then wrap the same model.
    for method in (m for m in ("full", "lora") if m in methods):
        probed.append(_probe(model, cfg, method, rows, val_lengths, nproc))
        for p in model.parameters():
            p.requires_grad_(False)
    if price_per_hour is not None:
        for m in probed:
            m.cost_per_epoch = round(m.seconds_per_epoch / 3600 * price_per_hour, 4)
            m.cost_total = round(m.seconds_total / 3600 * price_per_hour, 4)
    device = f"CPU, {torch.get_num_threads()} threads"  # the training loop runs where collate puts tensors
    return Estimate(device, round(time.perf_counter() - t0, 2), probed, price_per_hour)
