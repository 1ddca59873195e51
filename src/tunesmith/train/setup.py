"""How a run is set up before the loop: hyperparameters for the data, precision, which weights train and how
they are stored, gradient checkpointing, and torch.compile. Each choice comes with the sentence the run
summary prints for it.

``prepare`` is the one recipe: training (pipeline.py) and the pre-flight estimate's probe (estimate.py)
both call it, so the probe measures exactly the set-up a run would train with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from tunesmith.config import LoraSettings, RunConfig, TrainSettings
from tunesmith.models.load import inference_dtype
from tunesmith.train import auto, distributed, segments


@dataclass
class Prepared:
    model: Any  # wrapped for the method (a PeftModel for LoRA), on the CPU until the engine moves it
    resolved: auto.Resolved  # the settings with every automatic choice filled in, and the step counts
    bf16: bool
    reasons: list[str] = field(default_factory=list)  # the automatic choices, one sentence each
    n_trainable: int = 0
    n_total: int = 0
    coverage: dict[str, Any] | None = None  # LoRA: what it wrapped, by kind (models/coverage.py)

    @property
    def settings(self) -> TrainSettings:
        return self.resolved.settings


def p95(lengths: list[int]) -> int:
    """The 95th-percentile row length: what the micro-batch size is sized for."""
    return sorted(lengths)[int(0.95 * (len(lengths) - 1))]


def prepare(
    cfg: RunConfig,
    model: Any,
    lengths: list[int],
    *,
    val_lengths: list[int],
    method: str | None = None,
    compile: bool = True,
    probe_tokens: int = 0,
) -> Prepared:
    """Resolve the hyperparameters for rows of ``lengths`` tokens, then set ``model`` up to train with them:
    precision, LoRA or full, gradient checkpointing and (``compile``) torch.compile. ``method`` overrides
    the config's (the estimate probes both). ``probe_tokens``: the forgetting probe's cost per validation."""
    settings = cfg.train if method is None else cfg.train.model_copy(update={"method": method})
    # Precision first: fp32 activations take twice the memory, and the micro-batch is sized for it.
    bf16, why = choose_precision(settings.precision, settings.method)
    resolved = auto.resolve(
        settings,
        len(lengths),
        p95(lengths),
        val_lengths,
        train_tokens=sum(lengths),
        probe_tokens=probe_tokens,
        fp32=not bf16,
    )
    s = resolved.settings
    reasons = [*resolved.reasons, why]
    model = prepare_model(model, s.method, cfg.lora, bf16)
    if segments.enable(model):
        reasons.append("padding-free passes: packed rows run as one sequence of their real tokens (segments.py)")
    coverage = None
    if s.method == "lora":
        from tunesmith.models.coverage import describe, lora_coverage

        coverage = lora_coverage(model)
        reasons.append(describe(coverage))
    if s.gradient_checkpointing:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        reasons.append("gradient checkpointing: on (activations recomputed in the backward pass)")
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())
    if compile:
        use_compile, why = choose_compile(s.compile, resolved.total_steps, n_total)
        if use_compile:
            compile_layers(model)
        reasons.append(why)
    return Prepared(model, resolved, bf16, reasons, n_trainable, n_total, coverage)


# bf16 must beat fp32 by this much on the machine's own GEMMs to be worth its rounding: below it (bf16 emulated,
# or AVX-512 BF16 without AMX on a small matmul) the run stays in fp32.
BF16_MIN_GAIN = 1.3


def choose_precision(setting: str, method: str) -> tuple[bool, str]:
    """(use bf16, the sentence for the run summary). ``auto`` measures rather than trusts a CPU flag: bf16 where
    the hardware computes it natively *and* this machine's bf16 GEMM peak beats its fp32 one by BF16_MIN_GAIN
    (both probed once per machine and cached, ``perf.peak_flops``); an error if bf16 is asked for where it
    is not supported."""
    if inference_dtype(setting) == torch.float32:
        why = "as configured" if setting == "fp32" else "this hardware has no native bf16"
        return False, f"precision: fp32 ({why})"
    frozen = "; frozen base stored in bf16" if method == "lora" else ""
    if setting == "bf16" or torch.cuda.is_available():
        return True, f"precision: bf16 autocast with fp32 trainable weights{frozen}"
    from tunesmith.train.perf import peak_flops

    bf16, fp32 = peak_flops(torch.bfloat16)[0], peak_flops(torch.float32)[0]
    measured = f"this CPU's GEMM peaks: bf16 {bf16 / 1e12:.2f}, fp32 {fp32 / 1e12:.2f} TFLOP/s"
    if bf16 < BF16_MIN_GAIN * fp32:
        return False, f"precision: fp32 (bf16 is not worth it here: {measured})"
    return True, f"precision: bf16 autocast with fp32 trainable weights{frozen} ({measured})"


def prepare_model(model: Any, method: str, lora: LoraSettings, bf16: bool) -> Any:
    """The one difference between LoRA and full fine-tuning: which weights train, stored how."""
    if method == "lora":
        from tunesmith.models.lora import add_lora, continue_lora

        if bf16:
            # The frozen base only feeds activations forward and gradients back, so bf16 storage loses
            # nothing that autocast would not round away anyway, and saves a cast per layer per step. A
            # continued adapter keeps its fp32 weights: cast with the rest, it would start rounded to bf16.
            adapter = {n: p.data for n, p in model.named_parameters() if "lora_" in n}
            model = model.to(torch.bfloat16)
            for name, p in model.named_parameters():
                if name in adapter:
                    p.data = adapter[name]
        # A LoRA run given as the model keeps training its own adapter; anything else gets a fresh one.
        model = continue_lora(model) if hasattr(model, "peft_config") else add_lora(model, lora)
        if bf16:
            keep_lora_inputs_in_bf16(model)
        return model
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def keep_lora_inputs_in_bf16(model: Any) -> None:
    """PEFT casts each LoRA layer's input up to its fp32 weights, and autocast casts it straight back to bf16
    for the matmul: a round trip that changes no value but leaves a fresh bf16 copy of every LoRA input
    saved for the backward pass (~11% of the activation memory on the default model). Switched off, the
    arithmetic is bit-for-bit the same."""
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled"):
            module.cast_input_dtype_enabled = False


COMPILE_MIN_STEPS, COMPILE_MIN_PARAMS = 30, 50_000_000


def choose_compile(setting: bool | str, total_steps: int, n_params: int) -> tuple[bool, str]:
    """(compile the decoder layers, the sentence for the run summary). Compiling costs a warm-up (about 30 s
    for the default model on 2 cores, plus the validation graphs) and then makes each step faster (1.39x in
    steady state, BENCHMARKS.md), so ``auto`` compiles only runs long enough and models big enough for that
    to pay back."""
    how = "each decoder layer, dynamic shapes; the first steps include compiling"
    if setting is True:
        return True, f"torch.compile: on, as configured ({how})"
    if setting is False:
        return False, "torch.compile: off, as configured"
    if distributed.active():
        return False, "torch.compile: off (auto: not combined with several processes)"
    if total_steps < COMPILE_MIN_STEPS or n_params < COMPILE_MIN_PARAMS:
        size = f"{total_steps} steps of a {n_params / 1e6:.0f}M-parameter model"
        return False, f"torch.compile: off (auto: {size} would not pay back its warm-up)"
    if not torch.cuda.is_available():
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        except Exception:  # no compiler, or an inductor that cannot find one: eager it is
            return False, "torch.compile: off (auto: no C++ compiler for inductor found; install g++ to enable)"
    return True, f"torch.compile: on (auto: {total_steps} steps pay back its warm-up; {how})"


def compile_layers(model: Any, backend: str = "inductor") -> None:
    """Compile decoder layers one by one rather than the whole model: the layers are the hot, repeated
    code, while the model's mask building and PEFT's wrapper would only cause graph breaks."""
    import torch._dynamo

    from tunesmith.train.loss import causal_lm_parts

    # Every layer runs one shared frame, and each kind of pass is its own compiled variant of it, traced anew
    # at every start (~0.8 s each for SmolLM2 on 2 vCPUs). Runs once needed ~14 (a mask or none, training's
    # first layer, the KL term's own arguments); past dynamo's default limit of 8 the rest ran eager. Now one
    # batch layout (batches.to_batch) and the hook below leave 4: training with several rows or one,
    # validation and the probe without grad, the KL term's base. The limit stays raised for other models.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
    # Python floats (RMSNorm's epsilon, LoRA's scaling) are constants of a run. Traced as symbols, dynamo's first
    # attempt at the first variant ends in a restart that specialises them anyway: that attempt (its tracing and
    # an AOT autograd graph no cache ever holds) was ~6-9 s of every compiled run's start (BENCHMARKS.md).
    torch._dynamo.config.specialize_float = True
    decoder = causal_lm_parts(model)[0]
    # The first layer's input would be the only one without grad in a training pass: one variant more for
    # each kind of training pass. Marking it as needing grad makes every layer alike, for the first layer's
    # input-gradient matmuls (1/30 of the backward's for SmolLM2; the embedding itself stays frozen).
    decoder.get_input_embeddings().register_forward_hook(_input_needs_grad)
    for layer in decoder.layers:
        layer.compile(dynamic=True, backend=backend)


def _input_needs_grad(module: Any, args: Any, output: Any) -> Any:
    if torch.is_grad_enabled() and not output.requires_grad:
        output.requires_grad_(True)
    return output
