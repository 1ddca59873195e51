"""Served model names -> (engine, adapter).

One engine per base model: a LoRA run adds its adapter to the engine of its base (PEFT ``load_adapter``
under an internal name), so N adapters cost one copy of the base weights plus N small adapters, and
their requests batch together. An engine with a single adapter merges it into the weights until something
else is asked of that engine (see ``batching``). A full fine-tune is a model of its own, with its own engine.

Names: a base model is served as its alias (``smollm2-135m``), its folder name, or its hub id; a run as
its folder name; ``NAME=PATH`` on the command line chooses the name. Fine-tuned models from the jobs API
(``ft:...``) are looked up on first use and attached without a restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith import console, runs
from tunesmith.errors import ModelError, UserError
from tunesmith.serve.batching import Engine

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-/")


@dataclass
class Served:
    name: str
    engine: Engine
    adapter: str | None  # internal PEFT adapter name; None serves the engine's model as it is
    kind: str  # base | adapter | full
    created: int
    source: str = ""  # what load_model was given (alias, folder, run): a job's base model comes from here
    docs: Any = None  # a run trained with --docs: its DocsIndex; each request gets its nearest chunks
    docs_k: int = 0

    def with_docs(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The messages in the context format the run trained with (data/context.py), or as they are."""
        if self.docs is None:
            return messages
        from tunesmith.data.context import prompts_with_docs

        return prompts_with_docs([messages], self.docs, self.docs_k)[0][0]


def _same_template(tokenizer: Any, weights: Path) -> bool:
    """Whether a run's saved tokenizer has the chat template the base engine's tokenizer renders with."""
    from tunesmith.data.chat_templates import ensure_chat_template
    from tunesmith.models.load import _load_hf_tokenizer

    saved = _load_hf_tokenizer(str(weights), local=True)
    ensure_chat_template(saved)  # a run from before templates were saved: the fallback, as the base got
    return saved.chat_template == tokenizer.chat_template


def base_name(source: str) -> str:
    """The served name of a base model: alias or hub id as given, a folder or file by its name."""
    from tunesmith.models.load import resolve

    resolved = resolve(source)
    if resolved.kind in ("alias", "hub"):
        return resolved.name
    return Path(resolved.path).stem if resolved.kind == "gguf" else Path(resolved.path).name


def _check_name(name: str) -> str:
    if not name or len(name) > 256 or not set(name) <= NAME_CHARS:
        raise UserError(f"model name {name!r}: use letters, digits and . _ : - / only")
    return name


class Registry:
    def __init__(
        self,
        *,
        max_batch: int = 32,
        window_s: float = 0.005,
        resolve_fine_tuned: Callable[[str], Path | None] | None = None,
        dtype: Any = None,
        trust_remote_code: bool = False,
        chat_template: str | None = None,
    ) -> None:
        self.max_batch, self.window_s = max_batch, window_s
        self.chat_template = chat_template  # --chat-template, for base models (a run keeps its own)
        # Let served models run their own Python code (--trust-remote-code); jobs on them inherit it.
        self.trust_remote_code = trust_remote_code
        self.dtype = dtype  # torch dtype of the weights; None: fp32
        self.resolve_fine_tuned = resolve_fine_tuned
        self.served: dict[str, Served] = {}
        self._engines: dict[str, Engine] = {}  # key: resolved base path (or run path for full runs)
        self._adapters = 0
        self._lock = threading.RLock()
        self._started = False

    # -- adding models -----------------------------------------------------------------------------------
    def add(self, spec: str) -> list[str]:
        """Add a CLI argument (`PATH`, `ALIAS`, `NAME=PATH`); returns the names it made servable."""
        name, _, source = spec.partition("=") if "=" in spec else ("", "", spec)
        from tunesmith.models.load import resolve

        resolved = resolve(source)
        if resolved.kind == "run":
            return self.add_run(Path(resolved.path), name or Path(resolved.path).name)
        return [self._add_base(source, name or base_name(source))]

    def add_run(self, run_dir: Path, name: str) -> list[str]:
        _check_name(name)
        info = runs.read_run(run_dir)
        with self._lock:
            if name in self.served:
                return [name]
            base = None if info.method == "full" else self._add_base(info.base_model, None)
            if base is None or not _same_template(self.served[base].engine.tokenizer, info.weights_path(run_dir)):
                # A full run, or an adapter trained with another template than its base is served with: its
                # own engine, so that it is prompted exactly as it was trained.
                engine = self._engine(str(run_dir.resolve()), lambda: self._load(str(run_dir)))
                self.served[name] = Served(name, engine, None, "full", int(time.time()), str(run_dir))
                self._docs(self.served[name], run_dir)
                return [name]
            engine = self.served[base].engine
            self._adapters += 1
            internal = f"a{self._adapters}"  # PEFT adapter names become module keys: no dots or colons
            engine.call(lambda: self._attach(engine, internal, info.weights_path(run_dir)))
            self.served[name] = Served(name, engine, internal, "adapter", int(time.time()), str(run_dir))
            self._docs(self.served[name], run_dir)
            return [base, name]

    @staticmethod
    def _docs(served: Served, run_dir: Path) -> None:
        """A run trained with --docs answers with retrieval, in the format it trained with: what was measured
        is what ships."""
        from tunesmith.config import load_config

        path = run_dir / runs.CONFIG_YAML
        data = load_config(path).data if path.is_file() else None
        if data is None or data.docs is None:
            return
        if not Path(data.docs).is_dir():
            console.warn(f"{served.name} trained with --docs {data.docs}, which is not found from here: no retrieval")
            return
        from tunesmith.decide.retrieval import DocsIndex

        served.docs, served.docs_k = DocsIndex(Path(data.docs)), data.docs_k
        console.info(f"{served.name}: each chat request gets its {data.docs_k} nearest chunks of {data.docs}")

    def _add_base(self, source: str, name: str | None) -> str:
        from tunesmith.models.load import resolve

        resolved = resolve(source)
        key = source if resolved.kind == "hub" else str(Path(resolved.path).resolve())
        with self._lock:
            engine = self._engine(key, lambda: self._load(source))
            existing = next((s.name for s in self.served.values() if s.engine is engine and s.kind == "base"), None)
            if existing and (name is None or name == existing):
                return existing
            name = _check_name(name or base_name(source))
            if name in self.served:
                raise UserError(f"two models are both named '{name}'; name one with NAME=PATH")
            self.served[name] = Served(name, engine, None, "base", int(time.time()), source)
            return name

    def _engine(self, key: str, load: Callable[[], Engine]) -> Engine:
        if key not in self._engines:
            self._engines[key] = load()
            if self._started:
                self._engines[key].start()
        return self._engines[key]

    def _load(self, source: str) -> Engine:
        import torch

        from tunesmith.models.load import load_model, resolve

        template = None if resolve(source).kind == "run" else self.chat_template
        model, tok, _ = load_model(
            source,
            dtype=self.dtype or torch.float32,
            merge_adapter=False,
            trust_remote_code=self.trust_remote_code,
            chat_template=template,
        )
        if torch.cuda.is_available():
            model = model.to("cuda")
        return Engine(model, tok, max_batch=self.max_batch, window_s=self.window_s)

    @staticmethod
    def _attach(engine: Engine, internal: str, weights: Path) -> None:
        from peft import PeftModel

        from tunesmith.models.lora import quiet_peft

        engine.unmerge_adapter()  # PEFT cannot add an adapter to merged weights
        try:
            with quiet_peft():
                if hasattr(engine.model, "peft_config"):
                    engine.model.load_adapter(str(weights), adapter_name=internal)
                else:
                    engine.model = PeftModel.from_pretrained(engine.model, str(weights), adapter_name=internal)
        except (OSError, ValueError, RuntimeError) as e:
            raise ModelError(f"cannot attach the adapter in '{weights}': {e}") from None
        engine.model.eval()
        engine.merge_single_adapter()

    # -- lookups -----------------------------------------------------------------------------------------
    def get(self, name: str) -> Served | None:
        served = self.served.get(name)
        if served is None and name.startswith("ft:") and self.resolve_fine_tuned is not None:
            run_dir = self.resolve_fine_tuned(name)
            if run_dir is not None:
                self.add_run(run_dir, name)
                served = self.served.get(name)
        return served

    def names(self) -> list[Served]:
        return list(self.served.values())

    def engines(self) -> list[Engine]:
        return list(self._engines.values())

    def start(self) -> None:
        with self._lock:
            self._started = True
            for e in self._engines.values():
                e.start()

    def stop(self) -> None:
        for e in self._engines.values():
            e.stop()

    def describe(self) -> None:
        for s in self.served.values():
            merged = ", merged into the weights until another model is asked of it"
            merged = merged if s.adapter is not None and s.adapter == s.engine.merged else ""
            console.info(f"  serving [bold]{s.name}[/bold] ({s.kind}{merged})")


def stats(registry: Registry) -> dict[str, Any]:
    """Counters since start (steps, prefills...) and gauges of what is held now (in_flight, kv_cache_tokens...)."""
    totals: dict[str, int] = {}
    for e in registry.engines():
        for k, v in (e.stats | e.gauges()).items():
            totals[k] = max(totals.get(k, 0), v) if k == "max_rows" else totals.get(k, 0) + v
    return totals
