"""`tunesmith bakeoff`: prompting, few-shot, RAG, LoRA and full fine-tuning on the same held-out rows.

    test rows ─┬─ prompt   base + instructions                                      ┐
               ├─ fewshot  base + instructions + K fixed training examples          │ eval's run_condition: the same
               ├─ rag      base + instructions + K retrieved examples / doc chunks  ├ template, greedy decoding, token
               ├─ lora     a LoRA run (given or trained here), no instructions      │ limit and scoring for every
               ├─ full     a full fine-tune (given or trained here), none           │ method
               └─ lora+rag a LoRA run trained on prompts with K doc chunks (train   ┘
                           --docs), given the K nearest chunks: voice from the weights, facts from the docs
    per method: quality (eval's metrics), prompt tokens per request (the rendered prompts, tokenized),
    latency per request (measured here), training seconds and cost, break-even against the prompting methods

A method that cannot run (a run of the wrong kind, training that fails its data check, full fine-tuning
that would not fit in memory) is skipped with its reason; the others still run. ``run_bakeoff`` returns one
plain dict (what ``bakeoff.json`` holds, made by ``decide/bakeoff_result.py``); ``decide/report.py`` renders it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith import console, runs
from tunesmith.data.context import EXAMPLE_MODES, prompts_with_docs
from tunesmith.data.formats import read_examples
from tunesmith.decide.bakeoff_result import assemble
from tunesmith.decide.options import TUNED, BakeoffOptions
from tunesmith.decide.prompts import pairs_of, rag_prompts
from tunesmith.decide.retrieval import DocsIndex
from tunesmith.decide.training import obtain_run
from tunesmith.errors import UserError
from tunesmith.eval import metrics as m
from tunesmith.eval import scoring
from tunesmith.eval.conditions import run_condition, single_request_latency
from tunesmith.eval.docs import fact_inputs
from tunesmith.eval.rows import EvalRow, auto_max_tokens, few_shot_turns, load_rows, prompted
from tunesmith.eval.runner import progress


# ---- the bakeoff -------------------------------------------------------------------------------------------
def _read_instructions(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read instructions from {path}: {e}") from None


def _base_model(options: BakeoffOptions) -> str:
    from tunesmith.config import DEFAULT_MODEL

    if options.model:
        return options.model
    for method, run in (("lora", options.lora_run), ("full", options.full_run)):
        if run is not None and method in options.methods and runs.is_run(Path(run)):
            return runs.read_run(Path(run)).base_model
    return DEFAULT_MODEL


def _measure(
    name: str, label: str, model: Any, tok: Any, prompts: list, rows: list[EvalRow], ctx: dict[str, Any], tick: Any
) -> dict[str, Any]:
    refs = [r.reference for r in rows]
    cond = run_condition(name, label, model, tok, prompts, refs, ctx["max_new"], ctx["bs"], tick, measure_loss=False)
    latency = single_request_latency(model, tok, prompts, ctx["max_new"], ctx["latency_samples"])
    completions = cond["completions"]
    texts, finish = [c.text for c in completions], [c.finish_reason for c in completions]
    metrics = scoring.score_condition(
        texts, finish, refs, cond["losses"], task=ctx["task"], schema=ctx["schema"], markers=ctx["markers"]
    )
    scores = [
        scoring.row_score(t, f, r, task=ctx["task"], schema=ctx["schema"], markers=ctx["markers"])
        for t, f, r in zip(texts, finish, refs, strict=True)
    ]
    fact_metrics, fact_rows = scoring.score_facts(texts, *ctx["facts"])
    metrics.update(fact_metrics)
    n = max(1, len(completions))
    return {
        "name": name,
        "label": label,
        "status": "ran",
        "metrics": metrics,
        "prompt_tokens_per_request": cond["prompt_tokens_per_request"],
        "prompt_tokens_max": max((c.prompt_tokens for c in completions), default=0),
        "completion_tokens_per_request": sum(c.completion_tokens for c in completions) / n,
        "generation_s": cond["generation_s"],
        "seconds_per_request_batched": cond["generation_s"] / n,
        "latency_samples_s": latency,
        "latency_s": statistics.median(latency) if latency else None,
        "rows": [
            {
                "text": c.text,
                "finish_reason": c.finish_reason,
                "prompt_tokens": c.prompt_tokens,
                "score": s,
                **(f or {}),
            }
            for c, s, f in zip(completions, scores, fact_rows, strict=True)
        ],
    }


def _labels(
    instructions: str, k: int, retriever: str, docs: bool, examples_as: str = "style", trained: bool = True
) -> dict[str, str]:
    ins = "instructions" if instructions else "no instructions"
    shown = {"style": f" + {k} style examples", "none": "", "turns": f" + {k} retrieved examples"}
    what = f"{k} doc chunks{shown[examples_as]}" if docs else f"{k} retrieved examples"
    return {
        "prompt": f"prompt (base + {ins})",
        "fewshot": f"few-shot (base + {ins} + {k} fixed examples)",
        "rag": f"RAG (base + {ins} + {what}, {retriever})",
        "lora": "LoRA (no instructions)",
        "full": "full fine-tune (no instructions)",
        "lora+rag": f"LoRA + retrieval ({k} doc chunks, {'adapter trained with them' if trained else 'LoRA adapter'})",
    }


def _tuned_run(
    name: str, options: BakeoffOptions, model_name: str, out: Path, results: dict[str, dict[str, Any]]
) -> tuple[Path, dict[str, Any]]:
    """The run a tuned method tests. lora+rag trains its own adapter on prompts with doc context, or (with
    ``train_with_docs`` off) reuses the lora method's adapter, trained without context."""
    if name == "lora+rag" and not options.train_with_docs and options.lora_rag_run is None:
        if "lora" in results:
            return Path(results["lora"]["model"]), {**results["lora"]["training"], "docs": None}
        return obtain_run("lora", options, model_name, out)
    return obtain_run(name, options, model_name, out)


@dataclass
class _Bakeoff:
    """What the methods of one bakeoff share: the inputs, read once, and the results so far."""

    options: BakeoffOptions
    methods: tuple[str, ...]
    out: Path
    rows: list[EvalRow]
    train_examples: list[Any]
    pairs: list[list[dict[str, str]]]
    instructions: str
    notes: list[str]
    skipped: dict[str, str]
    chunks: list[Any]
    docs_info: dict[str, Any] | None
    known_refs: list[str]
    task: str
    schema: dict[str, Any] | None
    markers: Any
    model_name: str
    labels: dict[str, str]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    rag_info: dict[str, Any] | None = None
    ctx: dict[str, Any] = field(default_factory=dict)
    t_start: float = field(default_factory=time.time)

    @property
    def plain(self) -> list[Any]:
        return [r.prompt for r in self.rows]

    def context(self, tok: Any) -> dict[str, Any]:
        """Set once, from the first tokenizer: every method decodes with the same token limit."""
        if not self.ctx:
            self.ctx.update(
                max_new=self.options.max_new_tokens or auto_max_tokens(tok, self.known_refs),
                bs=self.options.batch_size,
                latency_samples=self.options.latency_samples,
                task=self.task,
                schema=self.schema,
                markers=self.markers,
                facts=fact_inputs(self.rows, self.markers, [c.text for c in self.chunks]),
            )
        return self.ctx

    def result(self, complete: bool) -> dict[str, Any]:
        # Copies: assemble adds its numbers to the method dicts, and later methods are still to come.
        done = assemble(
            options=self.options,
            rows=self.rows,
            results={n: dict(r) for n, r in self.results.items()},
            skipped=dict(self.skipped),
            notes=list(self.notes),
            task=self.task,
            schema=self.schema,
            model_name=self.model_name,
            max_new=self.ctx.get("max_new"),
            docs=self.docs_info,
            rag=self.rag_info,
            wall_s=time.time() - self.t_start,
            instructions_chars=len(self.instructions),
        )
        done["complete"] = complete
        if not complete:
            left = [n for n in self.methods if n not in self.results and n not in self.skipped]
            done["notes"].append(f"partial result: still to run {', '.join(left)}" if left else "partial result")
        return done


def _check_options(options: BakeoffOptions, methods: tuple[str, ...]) -> None:
    if options.k < 1 and {"fewshot", "rag"} & set(methods):
        raise UserError("--k must be at least 1 for the fewshot and rag methods")
    if options.rag_examples not in EXAMPLE_MODES:
        raise UserError(f"--rag-examples: '{options.rag_examples}'; expected one of {', '.join(EXAMPLE_MODES)}")
    if options.retriever not in ("bm25", "dense"):
        raise UserError(f"--retriever: unknown retriever '{options.retriever}'; expected bm25 or dense")


def _load_docs(
    options: BakeoffOptions, methods: tuple[str, ...], notes: list[str], skipped: dict[str, str]
) -> tuple[list[Any], dict[str, Any] | None]:
    """The chunks of ``--docs`` and what bakeoff.json says of them; a problem becomes a note (and skips
    lora+rag when nothing is left to retrieve)."""
    if options.docs is None:
        return [], None
    from tunesmith.decide.retrieval import load_docs

    docs = load_docs(Path(options.docs))
    chunks = docs.chunks
    docs_info = {"folder": str(options.docs), "files": docs.files, "chunks": len(chunks), "problem": docs.problem}
    if docs.problem:
        console.warn(docs.problem)
        only = "" if chunks else "; RAG retrieved from the training examples only"
        notes.append(f"{docs.problem}{only}")
    if not chunks and "lora+rag" in methods:
        skipped["lora+rag"] = f"nothing to retrieve: {docs.problem}"
    return chunks, docs_info


def _prepare(options: BakeoffOptions, methods: tuple[str, ...], out: Path) -> _Bakeoff:
    """Read the test rows, training data, instructions and docs; decide the task, schema and style markers."""
    rows = load_rows(options.test, options.columns)
    if not rows:
        raise UserError(f"{options.test} has no rows to test on")
    train_examples = read_examples(options.train, columns=options.columns).examples
    pairs = pairs_of(train_examples)
    instructions = _read_instructions(options.instructions)
    notes: list[str] = []
    skipped: dict[str, str] = {}
    if not instructions:
        notes.append("no --instructions given: the prompting methods run without instructions")
    if "lora+rag" in methods and options.docs is None:
        skipped["lora+rag"] = "lora+rag needs --docs: the documents to retrieve from"
    if "fewshot" in methods and options.k > len(pairs):
        skipped["fewshot"] = f"--k {options.k} asks for more examples than the training data has ({len(pairs)})"
    chunks, docs_info = _load_docs(options, methods, notes, skipped)

    train_replies = [c.messages[-1].content for c in train_examples if c.messages[-1].role == "assistant"]
    refs = [r.reference for r in rows]
    known_refs = [r for r in refs if r is not None]
    schema = m.infer_schema(train_replies)
    task = scoring.detect_task(known_refs or train_replies, schema)
    markers = m.find_style_markers(train_replies or known_refs) if task == "text" else None
    labels = _labels(
        instructions, options.k, options.retriever, bool(chunks), options.rag_examples, options.train_with_docs
    )
    return _Bakeoff(
        options=options,
        methods=methods,
        out=out,
        rows=rows,
        train_examples=train_examples,
        pairs=pairs,
        instructions=instructions,
        notes=notes,
        skipped=skipped,
        chunks=chunks,
        docs_info=docs_info,
        known_refs=known_refs,
        task=task,
        schema=schema,
        markers=markers,
        model_name=_base_model(options),
        labels=labels,
    )


def _measure_tuned(b: _Bakeoff, name: str, tick: Callable[[int], None]) -> bool:
    """A tuned method (lora, full, lora+rag) on its run; False when it was skipped (the reason is in ``skipped``)."""
    from tunesmith.models.load import load_model

    try:
        run_dir, training = _tuned_run(name, b.options, b.model_name, b.out, b.results)
    except UserError as e:
        b.skipped[name] = str(e)
        console.warn(f"bakeoff: {name} skipped: {e}")
        return False
    if training["base_model"] != b.model_name:
        b.notes.append(
            f"the {name} run was tuned from {training['base_model']}, the prompting methods use {b.model_name}"
        )
    tuned, ttok, _ = load_model(str(run_dir), trust_remote_code=b.options.trust_remote_code)
    extra = {}
    prompts = b.plain
    if name == "lora+rag":  # the context format the adapter trained with (data/context.py)
        prompts, extra["retrieved"] = prompts_with_docs(b.plain, DocsIndex(b.options.docs), b.options.k)
    res = _measure(name, b.labels[name], tuned, ttok, prompts, b.rows, b.context(ttok), tick)
    b.results[name] = {**res, **extra, "model": str(run_dir), "training": training}
    return True


def _measure_prompting(b: _Bakeoff, name: str, base: tuple[Any, Any], tick: Callable[[int], None]) -> None:
    """A prompting method (prompt, fewshot, rag) on the base model."""
    model, tok = base
    options, plain = b.options, b.plain
    extra: dict[str, Any] = {}
    if name == "prompt":
        prompts = [prompted(p, b.instructions, []) for p in plain]
    elif name == "fewshot":
        shots = few_shot_turns(b.train_examples, options.k, options.seed)
        prompts = [prompted(p, b.instructions, shots) for p in plain]
    else:
        rag = rag_prompts(b.rows, b.pairs, b.chunks, b.instructions, options.k, options.retriever, options.rag_examples)
        prompts = rag.prompts
        shown = options.rag_examples if b.chunks else "turns"
        b.rag_info = {"retriever": rag.retriever, "index_s": rag.index_s, "k": options.k, "examples": shown}
        extra = {"retrieval_s_per_request": rag.seconds_per_request, "retrieved": rag.sources}
    res = _measure(name, b.labels[name], model, tok, prompts, b.rows, b.context(tok), tick)
    if "retrieval_s_per_request" in extra and res["latency_s"] is not None:
        res["latency_s"] += extra["retrieval_s_per_request"]  # retrieval is part of every request
    b.results[name] = {**res, **extra, "model": b.model_name, "training": None}


def run_bakeoff(
    options: BakeoffOptions, out: Path | str, on_progress: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Every requested method on the test rows. ``on_progress`` gets the result so far (``complete`` false)
    after each method, so that a long bakeoff that is stopped still leaves what it measured."""
    methods = tuple(dict.fromkeys(options.methods))  # the user's order: what matters most can be measured first
    _check_options(options, methods)
    b = _prepare(options, methods, Path(out))
    with progress() as bar:
        task_id = bar.add_task("bakeoff", total=len(b.rows) * len(methods))

        def tick(n: int) -> None:
            bar.advance(task_id, n)

        base: tuple[Any, Any] | None = None  # loaded once, on first use, kept for the later prompting methods
        for name in methods:
            if name in b.skipped:
                continue
            bar.update(task_id, description=name)
            if name in TUNED:
                if not _measure_tuned(b, name, tick):
                    continue
            else:
                if base is None:
                    from tunesmith.models.load import load_model

                    model, tok, _ = load_model(b.model_name, trust_remote_code=options.trust_remote_code)
                    base = (model, tok)
                _measure_prompting(b, name, base, tick)
            if on_progress is not None:
                on_progress(b.result(complete=False))
    return b.result(complete=True)
