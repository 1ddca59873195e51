"""Reading a .gguf file with transformers' GGUF reader, and the small fixes every loaded model gets.

A leaf module: it imports nothing else from tunesmith's model code, so ``models/defaults.py`` (which turns the
embedded GGUF into a plain folder) and ``models/load.py`` (which resolves every kind of source) can both use it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from tunesmith.errors import ModelError
from tunesmith.models.stops import template_stops

_PATCHING = threading.Lock()  # held while _parsed_once's patches of transformers' GGUF reader are in place


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def load_gguf(path: Path) -> tuple[Any, Any]:
    """Load a .gguf with transformers' reader; the weights come back dequantized to dense fp32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    path = Path(path)
    try:
        with _dequantization_bar(), _parsed_once():
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        raise ModelError(f"cannot read '{path}' as a model transformers supports: {first_line(e)}") from None
    # transformers marks GGUF-loaded models as quantized and then refuses save_pretrained and training,
    # but the tensors are already dense, so the marker is simply wrong for us.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    fix_generation_ids(model, tokenizer)
    return model, tokenizer


@contextlib.contextmanager
def _dequantization_bar() -> Iterator[None]:
    """transformers' GGUF reader draws its own tqdm bar while it dequantizes, which ignores transformers'
    progress-bar switch; and tqdm reads TQDM_DISABLE only once, when it is first imported. So the reader's
    own ``tqdm`` is swapped for one that shows only on an interactive terminal, not in quiet mode."""
    from transformers import modeling_gguf_pytorch_utils as reader

    from tunesmith import console

    original = getattr(reader, "tqdm", None)
    if original is None:
        yield
        return
    reader.tqdm = functools.partial(original, disable=not console.is_interactive())
    try:
        yield
    finally:
        reader.tqdm = original


@contextlib.contextmanager
def _parsed_once() -> Iterator[None]:
    """transformers reads a GGUF three times: for the config, for the tokenizer, and with the weights. Each read
    builds the file's fields in Python, the vocabulary's strings one by one, and parses them again: Gemma 3's
    262k tokens made its export take 91 s on 2 cores (~31 s a read under the profiler). Within ``load_gguf`` one
    reader serves every read, and the metadata-only result is parsed once (each caller gets its own copy:
    they edit the dicts they are given). The patches are module globals, so concurrent loads take turns."""
    import copy

    try:
        import gguf
        from transformers import modeling_gguf_pytorch_utils as hf_gguf
    except ImportError:  # transformers says what is missing on the read itself
        yield
        return
    readers: dict[str, Any] = {}
    metadata: dict[str, Any] = {}

    def reader(path: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:  # another mode than a plain read
            return make_reader(path, *args, **kwargs)
        if str(path) not in readers:
            readers[str(path)] = make_reader(path)
        return readers[str(path)]

    def parsed(path: Any, return_tensors: bool = False, *args: Any, **kwargs: Any) -> Any:
        if return_tensors or args or kwargs or checkpoint is None:
            return checkpoint(path, return_tensors, *args, **kwargs)
        if str(path) not in metadata:
            metadata[str(path)] = checkpoint(path, return_tensors=False)
        return copy.deepcopy(metadata[str(path)])

    with _PATCHING:  # the originals are read under the lock: another load's patches are never taken for them
        make_reader, checkpoint = gguf.GGUFReader, getattr(hf_gguf, "load_gguf_checkpoint", None)
        gguf.GGUFReader = reader
        if checkpoint is not None:
            hf_gguf.load_gguf_checkpoint = parsed
        try:
            yield
        finally:
            gguf.GGUFReader = make_reader
            if checkpoint is not None:
                hf_gguf.load_gguf_checkpoint = checkpoint


def fix_generation_ids(model: Any, tokenizer: Any) -> None:
    """Make generation stop on every stop of ``models/stops.py`` (so transformers' generate and an exported
    generation_config.json stop where tunesmith does) and pad with something valid. Call it again after the
    chat template changes: the template's end-of-turn is one of the stops."""
    gen = model.generation_config
    ids = template_stops(tokenizer, gen.eos_token_id)
    if ids:
        gen.eos_token_id = ids[0] if len(ids) == 1 else ids
    if gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
