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
plain dict (what ``bakeoff.json`` holds); ``decide/report.py`` renders it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith import console, runs
from tunesmith.data.context import EXAMPLE_MODES, last_user, prompts_with_docs
from tunesmith.data.formats import read_examples
from tunesmith.decide import economics as econ
from tunesmith.decide.options import TUNED, BakeoffOptions
from tunesmith.decide.prompts import pairs_of, rag_prompts
from tunesmith.decide.rank import rank_methods
from tunesmith.decide.retrieval import DocsIndex
from tunesmith.decide.training import obtain_run
from tunesmith.errors import UserError
from tunesmith.eval import metrics as m
from tunesmith.eval import scoring
from tunesmith.eval.docs import fact_inputs
from tunesmith.eval.rows import EvalRow, auto_max_tokens, few_shot_turns, load_rows, prompted
from tunesmith.eval.runner import progress, run_condition, single_request_latency


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


def run_bakeoff(
    options: BakeoffOptions, out: Path | str, on_progress: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Every requested method on the test rows. ``on_progress`` gets the result so far (``complete`` false)
    after each method, so that a long bakeoff that is stopped still leaves what it measured."""
    out = Path(out)
    methods = tuple(dict.fromkeys(options.methods))  # the user's order: what matters most can be measured first
    if options.k < 1 and {"fewshot", "rag"} & set(methods):
        raise UserError("--k must be at least 1 for the fewshot and rag methods")
    if options.rag_examples not in EXAMPLE_MODES:
        raise UserError(f"--rag-examples: '{options.rag_examples}'; expected one of {', '.join(EXAMPLE_MODES)}")
    if options.retriever not in ("bm25", "dense"):
        raise UserError(f"--retriever: unknown retriever '{options.retriever}'; expected bm25 or dense")
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
    chunks: list[Any] = []
    docs_info: dict[str, Any] | None = None
    if options.docs is not None:
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

    train_replies = [c.messages[-1].content for c in train_examples if c.messages[-1].role == "assistant"]
    refs = [r.reference for r in rows]
    known_refs = [r for r in refs if r is not None]
    schema = m.infer_schema(train_replies)
    task = scoring.detect_task(known_refs or train_replies, schema)
    markers = m.find_style_markers(train_replies or known_refs) if task == "text" else None
    model_name = _base_model(options)
    labels = _labels(
        instructions, options.k, options.retriever, bool(chunks), options.rag_examples, options.train_with_docs
    )

    from tunesmith.models.load import load_model

    t_start = time.time()
    results: dict[str, dict[str, Any]] = {}
    plain = [r.prompt for r in rows]
    rag_info: dict[str, Any] | None = None
    ctx: dict[str, Any] = {}

    def result(complete: bool) -> dict[str, Any]:
        # Copies: assemble adds its numbers to the method dicts, and later methods are still to come.
        done = assemble(
            options=options,
            rows=rows,
            results={n: dict(r) for n, r in results.items()},
            skipped=dict(skipped),
            notes=list(notes),
            task=task,
            schema=schema,
            model_name=model_name,
            max_new=ctx.get("max_new"),
            docs=docs_info,
            rag=rag_info,
            wall_s=time.time() - t_start,
            instructions_chars=len(instructions),
        )
        done["complete"] = complete
        if not complete:
            left = [n for n in methods if n not in results and n not in skipped]
            done["notes"].append(f"partial result: still to run {', '.join(left)}" if left else "partial result")
        return done

    def partial(name: str) -> None:
        if on_progress is not None:
            on_progress(result(complete=False))

    with progress() as bar:
        task_id = bar.add_task("bakeoff", total=len(rows) * len(methods))

        def tick(n: int) -> None:
            bar.advance(task_id, n)

        def context(tok: Any) -> dict[str, Any]:
            """Set once, from the first tokenizer: every method decodes with the same token limit."""
            if not ctx:
                ctx.update(
                    max_new=options.max_new_tokens or auto_max_tokens(tok, known_refs),
                    bs=options.batch_size,
                    latency_samples=options.latency_samples,
                    task=task,
                    schema=schema,
                    markers=markers,
                    facts=fact_inputs(rows, markers, [c.text for c in chunks]),
                )
            return ctx

        base: tuple[Any, Any] | None = None  # loaded once, on first use, kept for the later prompting methods
        for name in methods:
            if name in skipped:
                continue
            bar.update(task_id, description=name)
            if name in TUNED:
                try:
                    run_dir, training = _tuned_run(name, options, model_name, out, results)
                except UserError as e:
                    skipped[name] = str(e)
                    console.warn(f"bakeoff: {name} skipped: {e}")
                    continue
                if training["base_model"] != model_name:
                    notes.append(
                        f"the {name} run was tuned from {training['base_model']}, "
                        f"the prompting methods use {model_name}"
                    )
                tuned, ttok, _ = load_model(str(run_dir), trust_remote_code=options.trust_remote_code)
                extra = {}
                prompts = plain
                if name == "lora+rag":  # the context format the adapter trained with (data/context.py)
                    prompts, extra["retrieved"] = prompts_with_docs(plain, DocsIndex(options.docs), options.k)
                res = _measure(name, labels[name], tuned, ttok, prompts, rows, context(ttok), tick)
                results[name] = {**res, **extra, "model": str(run_dir), "training": training}
                del tuned
                partial(name)
                continue
            if base is None:
                model, tok, _ = load_model(model_name, trust_remote_code=options.trust_remote_code)
                base = (model, tok)
            model, tok = base
            extra: dict[str, Any] = {}
            if name == "prompt":
                prompts = [prompted(p, instructions, []) for p in plain]
            elif name == "fewshot":
                shots = few_shot_turns(train_examples, options.k, options.seed)
                prompts = [prompted(p, instructions, shots) for p in plain]
            else:
                rag = rag_prompts(rows, pairs, chunks, instructions, options.k, options.retriever, options.rag_examples)
                prompts = rag.prompts
                shown = options.rag_examples if chunks else "turns"
                rag_info = {"retriever": rag.retriever, "index_s": rag.index_s, "k": options.k, "examples": shown}
                extra = {"retrieval_s_per_request": rag.seconds_per_request, "retrieved": rag.sources}
            res = _measure(name, labels[name], model, tok, prompts, rows, context(tok), tick)
            if "retrieval_s_per_request" in extra and res["latency_s"] is not None:
                res["latency_s"] += extra["retrieval_s_per_request"]  # retrieval is part of every request
            results[name] = {**res, **extra, "model": model_name, "training": None}
            partial(name)
    return result(complete=True)


def assemble(*, options: BakeoffOptions, rows: list[EvalRow], results: dict[str, dict[str, Any]], **kw: Any) -> dict:
    """Measured methods -> the result dict with quality, costs and break-even. Apart from ``run_bakeoff``
    so that the arithmetic and the report can be tested on hand-made numbers."""
    price, hourly = options.price_per_1k_input_tokens, options.price_per_hour
    # The first measure of eval's order that every method reported (the same data: the same measures).
    common = [k for k in scoring.QUALITY_ORDER if results and all(k in r["metrics"] for r in results.values())]
    quality = common[0] if common else None
    for r in results.values():
        r["quality"] = r["metrics"].get(quality) if quality else None
        r["cost_per_request"] = econ.cost_per_request(r["prompt_tokens_per_request"], price)
        seconds = (r["training"] or {}).get("seconds")
        r["training_cost"] = econ.training_cost(seconds, hourly) if seconds is not None else None
    baselines = [r for n, r in results.items() if n not in TUNED]
    for name in TUNED:
        if name in results:
            results[name]["break_even"] = _break_even(results[name], baselines, price, options.requests_per_month)
    ranking = rank_methods(
        [
            {
                "name": n,
                "quality": r["quality"],
                "prompt_tokens_per_request": r["prompt_tokens_per_request"],
                "training_cost": r["training_cost"],
            }
            for n, r in results.items()
        ],
        quality_scale=100.0 if quality == "chrf" else 1.0,
        tolerance=options.quality_tolerance,
        price_per_1k_input_tokens=price,
        requests_per_month=options.requests_per_month,
        metric=scoring.metric_name(quality),
    )
    if quality == "fact_accuracy" and results and all("chrf" in r["metrics"] for r in results.values()):
        beside = ", ".join(f"{n} {r['metrics']['chrf']:.1f}" for n, r in results.items())
        ranking["reason"] += f" (chrF, not used to rank: {beside})"
    detail = []
    for i, row in enumerate(rows):
        entry: dict[str, Any] = {"source": row.source, "input": last_user(row.prompt), "reference": row.reference}
        if row.fields:
            entry["fields"] = row.fields
        for name, r in results.items():
            entry[name] = r["rows"][i]
            if "retrieved" in r:
                entry[name] = {**entry[name], "retrieved": r["retrieved"][i]}
        detail.append(entry)
    public = {n: {k: v for k, v in r.items() if k not in ("rows", "retrieved")} for n, r in results.items()}
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "train": str(options.train),
        "test": str(options.test),
        "instructions": str(options.instructions) if options.instructions else None,
        "instructions_chars": kw["instructions_chars"],
        "base_model": kw["model_name"],
        "task": kw["task"],
        "schema": kw["schema"],
        "rows": len(rows),
        "rows_with_reference": sum(r.reference is not None for r in rows),
        "k": options.k,
        "methods_requested": list(options.methods),
        "decoding": {"temperature": 0.0, "max_new_tokens": kw["max_new"], "batch_size": options.batch_size},
        "latency": {"samples": options.latency_samples, "how": "median seconds of single requests (batch of 1)"},
        "prices": {
            "price_per_1k_input_tokens": price,
            "price_per_hour": hourly,
            "requests_per_month": options.requests_per_month,
        },
        "quality_metric": quality,
        "quality_label": scoring.BY_KEY[quality].label if quality else None,
        "methods": public,
        "skipped": kw["skipped"],
        "ranking": ranking,
        "winner": ranking["winner"],
        "docs": kw["docs"],
        "rag": kw["rag"],
        "notes": kw["notes"],
        "wall_time_s": kw["wall_s"],
        "rows_detail": detail,
    }


def _break_even(
    tuned: dict[str, Any], baselines: list[dict[str, Any]], price: float, requests_per_month: float | None
) -> dict[str, Any]:
    """Break-even of a tuned method against each prompting method that ran."""
    cost = tuned["training_cost"] or 0.0
    out = {}
    for b in baselines:
        saved = b["prompt_tokens_per_request"] - tuned["prompt_tokens_per_request"]
        requests = econ.break_even_requests(cost, saved, price)
        out[b["name"]] = {
            "tokens_saved_per_request": saved,
            "saved_per_request": saved / 1000.0 * price,
            "requests": requests,
            "months": econ.break_even_months(requests, requests_per_month),
        }
    return out
