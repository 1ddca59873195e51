"""One way to load a model: ``load_model(source)``.

A source is one of
  * an alias of an embedded model (``smollm2-135m``, the default), exported once to a plain HF folder;
  * a local HF folder (config.json + weights);
  * a local ``.gguf`` file in an architecture transformers can read (dequantized to dense tensors);
  * a run folder written by ``tunesmith train`` (base model + adapter, or full weights);
  * a hub id, when the hub or its cache is reachable.
Nothing reaches the network when the source is local.

Loading runs no code from the model: weights come from safetensors (or GGUF) only, never from pickles
(``pytorch_model.bin`` and friends can execute code when unpickled), and a model's own Python code runs
only when ``trust_remote_code`` is set, which only a user flag (``--trust-remote-code``) turns on.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunesmith import runs
from tunesmith.errors import ModelError, UserError
from tunesmith.models.defaults import EMBEDDED, ensure_exported
from tunesmith.models.gguf import first_line, fix_generation_ids, load_gguf, quiet_transformers
from tunesmith.models.stops import eos_list

PRECISIONS = ("auto", "bf16", "fp32")


def bf16_supported() -> bool:
    """Whether this machine computes in bf16 natively (CUDA, or a CPU oneDNN runs bf16 on: AVX512-BF16/AMX)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def inference_dtype(precision: str = "auto") -> torch.dtype:
    """The weight dtype for generation. ``auto`` is bf16 where the hardware runs it natively: decoding reads
    every weight once per token, so half the bytes is most of the speed-up (and a LoRA run on such hardware held
    its frozen base in bf16 while it trained). ``fp32`` keeps a merged adapter exact to the last bit."""
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return torch.float32
    if precision == "bf16" and not bf16_supported():
        raise UserError("precision bf16 was asked for, but this hardware has no bf16 support; use auto or fp32")
    return torch.bfloat16 if bf16_supported() else torch.float32


@dataclass
class ModelSource:
    kind: str  # alias | folder | gguf | run | hub
    name: str  # what the user typed
    path: str  # folder, file or hub id that transformers loads


def resolve(name: str | Path) -> ModelSource:
    text = str(name)
    if text in EMBEDDED:
        return ModelSource("alias", text, str(ensure_exported(text)))
    path = Path(text).expanduser()
    if path.exists():
        if path.is_file() and path.suffix == ".gguf":
            return ModelSource("gguf", text, str(path))
        if path.is_dir() and runs.is_run(path):
            return ModelSource("run", text, str(path))
        if path.is_dir() and (path / "config.json").is_file():
            return ModelSource("folder", text, str(path))
        raise ModelError(
            f"'{text}' is neither a model folder (no config.json), a tunesmith run (no run.json) nor a .gguf file"
        )
    looks_like_path = text.startswith((".", "/", "~")) or text.endswith(".gguf") or text.count("/") > 1
    if looks_like_path or "/" not in text:
        raise ModelError(
            f"unknown model '{text}': not an alias ({', '.join(EMBEDDED)}), an existing folder or .gguf "
            "file, or a hub id (org/name)"
        )
    from tunesmith.models.hub import hub_path

    return ModelSource("hub", text, hub_path(text))


def load_tokenizer(name: str | Path, *, trust_remote_code: bool = False, chat_template: str | None = None) -> Any:
    """The tokenizer of any source, with its chat template chosen (``data/chat_templates.py``)."""
    source = resolve(name)
    if source.kind == "run":
        info = runs.read_run(Path(source.path))
        weights = str(info.weights_path(Path(source.path)))
        tok = _load_hf_tokenizer(weights, local=True, trust_remote_code=trust_remote_code)
    elif source.kind == "gguf":
        tok = load_gguf(Path(source.path))[1]
    else:
        tok = _load_hf_tokenizer(source.path, local=source.kind != "hub", trust_remote_code=trust_remote_code)
    choose_template(tok, source, chat_template)
    return tok


def choose_template(tokenizer: Any, source: ModelSource, choice: str | None) -> str:
    """Set the chat template on a loaded tokenizer; returns its name. A run keeps the template it trained with
    (saved with its tokenizer): naming a different one is refused rather than silently prompting out of format."""
    from tunesmith.data.chat_templates import apply_choice, template_name

    if source.kind == "run":
        trained = runs.read_run(Path(source.path)).chat_template or template_name(tokenizer)
        if choice is not None and choice != trained:
            raise UserError(
                f"{source.name} was trained with the chat template '{trained}' and is always prompted with it; "
                "drop --chat-template"
            )
        choice = None
    return apply_choice(tokenizer, choice, source.name)


def _load_hf_tokenizer(path: str, *, local: bool, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    quiet_transformers()
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=local, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load a tokenizer from '{path}': {first_line(e)}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    name: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    merge_adapter: bool = True,
    chat_template: str | None = None,
) -> tuple[Any, Any, ModelSource]:
    """(model, tokenizer, source) for any source. A run loads its base and adapter (merged by default,
    which is what fast single-adapter inference wants). ``chat_template``: --chat-template's value."""
    source = resolve(name)
    if source.kind == "run":
        model, tok = _load_run(Path(source.path), dtype=dtype, merge=merge_adapter, trust=trust_remote_code)
    elif source.kind == "gguf":
        model, tok = load_gguf(Path(source.path))
        model = model.to(dtype)
    else:
        model = _load_hf_model(source.path, local=source.kind != "hub", dtype=dtype, trust=trust_remote_code)
        tok = _load_hf_tokenizer(source.path, local=source.kind != "hub", trust_remote_code=trust_remote_code)
    choose_template(tok, source, chat_template)
    fix_generation_ids(model, tok)  # again: the template's end-of-turn is a stop
    _contiguous_output_projection_input(model)
    return model, tok, source


def _contiguous_output_projection_input(model: Any) -> None:
    """Hand the output projection a contiguous input.

    Generation projects only the last position, ``hidden[:, -1:, :]``, a strided view. For such a 3-D
    view torch 2.13's CPU ``linear`` expands the (vocab x hidden) weight to one copy per row and runs a
    batched matmul: at batch 8 on the default model that is 8 x 576 x 49,152 values copied per prefill,
    about 760 ms in bf16 against 7 ms for the same product on a contiguous input (34 vs 14 ms in fp32).
    Copying the one row per sequence first costs nothing measurable."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or getattr(head, "_tunesmith_contiguous_input", False):
        return
    head.register_forward_pre_hook(lambda _module, args: (args[0].contiguous(), *args[1:]))
    head._tunesmith_contiguous_input = True


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def require_safetensors(folder: Path, what: str = "weights") -> None:
    """Refuse a folder whose weights exist only as pickles, before anything reads them."""
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise ModelError(
            f"'{folder}' has its {what} only as {pickled[0]}, a pickle file that can run code when loaded; "
            "tunesmith loads safetensors only (convert it with save_pretrained(..., safe_serialization=True))"
        )


def _load_hf_model(path: str, *, local: bool, dtype: torch.dtype, trust: bool) -> Any:
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    if local:
        require_safetensors(Path(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype, local_files_only=local, trust_remote_code=trust, use_safetensors=True
            )
    except (OSError, ValueError) as e:
        if "trust_remote_code" in str(e) and not trust:
            raise ModelError(
                f"'{path}' needs to run its own Python code to load; pass --trust-remote-code if you trust it"
            ) from None
        hint = " (the hub is unreachable from here and the model is not in its cache)" if not local else ""
        raise ModelError(f"cannot load model '{path}'{hint}: {first_line(e)}") from None


def _load_run(run_dir: Path, *, dtype: torch.dtype, merge: bool, trust: bool = False) -> tuple[Any, Any]:
    info = runs.read_run(run_dir)
    weights = info.weights_path(run_dir)
    tok = _load_hf_tokenizer(str(weights), local=True, trust_remote_code=trust)
    if info.method == "full":
        model = _load_hf_model(str(weights), local=True, dtype=dtype, trust=trust)
    else:
        from peft import PeftModel

        from tunesmith.models.lora import quiet_peft

        base, _, _ = load_model(info.base_model, dtype=dtype, trust_remote_code=trust)
        require_safetensors(weights, "adapter")
        try:
            with quiet_peft():
                model = PeftModel.from_pretrained(base, str(weights))
        except (OSError, ValueError, RuntimeError) as e:
            raise ModelError(f"cannot apply the adapter in '{weights}': {first_line(e)}") from None
        if merge:
            model = model.merge_and_unload()
    fix_generation_ids(model, tok)
    model.eval()
    return model, tok


def model_stop_ids(name: str) -> list[int]:
    """The EOS ids of a model's generation config, read without loading its weights (the dataset doctor
    runs before any weights are loaded); the Renderer adds the tokenizer's EOS to them, as
    ``stop_token_ids`` does for a loaded model."""
    from transformers import GenerationConfig

    source = resolve(name)
    path = source.path
    if source.kind == "gguf":
        return []  # load_gguf stops on the tokenizer's EOS, which the Renderer adds anyway
    if source.kind == "run":
        info = runs.read_run(Path(source.path))
        if info.method != "full":
            return model_stop_ids(info.base_model)
        path = str(info.weights_path(Path(source.path)))
    try:
        eos = GenerationConfig.from_pretrained(path, local_files_only=source.kind != "hub").eos_token_id
    except (OSError, ValueError):
        return []
    return eos_list(eos)
