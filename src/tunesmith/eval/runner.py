"""Base versus tuned on the same held-out rows, with the same template and the same decoding.

    rows (any format) ─┬─ base,  no instructions ──────────────┐
                       ├─ base + instructions + K shots (opt.) ├─ generate (batched, KV cache) + loss per row
                       └─ tuned, no instructions ──────────────┘
    + forgetting: perplexity of base and tuned on shipped general English, and shipped everyday questions

The third condition is the one fine-tuning must beat on cost: the tuned model answers without the long
instructions and examples that the base model needs in every request. ``evaluate_run`` returns one plain
dict (what ``eval.json`` holds); ``report.py`` turns it into HTML, Markdown and a terminal table. Each
condition is run and scored by ``conditions.py``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith import console, runs
from tunesmith.data.formats import Conversation, read_examples
from tunesmith.errors import ModelError, UserError
from tunesmith.eval import behaviour, forgetting, preference, scoring
from tunesmith.eval import metrics as m
from tunesmith.eval.conditions import docs_condition, run_condition, score_conditions
from tunesmith.eval.docs import docs_index
from tunesmith.eval.rows import EvalRow, auto_max_tokens, call_texts, few_shot_turns, load_rows, prompted
from tunesmith.models.load import load_model


@dataclass
class EvalOptions:
    instructions: Path | None = None  # a file whose text goes in the system message of 'base + instructions'
    few_shot: int = 0  # training examples shown to the base model before each row
    price_per_1k_input_tokens: float | None = None
    schema: Path | None = None  # a JSON Schema file; None: inferred from the training replies
    max_new_tokens: int | None = None  # None: from the longest reference
    batch_size: int = 16
    forgetting_threshold: float = forgetting.DEFAULT_THRESHOLD
    behaviour_threshold: float = behaviour.DEFAULT_THRESHOLD  # --behaviour-threshold
    seed: int = 0  # picks the few-shot examples
    trust_remote_code: bool = False  # let the model folders run their own Python code (--trust-remote-code)
    columns: dict[str, str] | None = None  # --columns: row keys read from other columns of the data
    docs: Path | None = None  # --docs: the documents replies are checked against (and retrieved from)


def _training_examples(run: Path) -> tuple[list[Conversation], str | None]:
    """The run's training conversations (for few-shot examples, schema and style inference)."""
    from tunesmith.config import load_config

    data = load_config(run / runs.CONFIG_YAML).data
    train = data.train
    if train is None or not Path(train).exists():
        return [], f"the run's training data ({train}) is not found from here"
    return read_examples(train, columns=data.columns).examples, None


def _schema(options: EvalOptions, train_replies: list[str], refs: list[str]) -> tuple[dict | None, str | None]:
    if options.schema is not None:
        try:
            return json.loads(Path(options.schema).read_text(encoding="utf-8")), f"given ({options.schema})"
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read the JSON Schema {options.schema}: {e}") from None
    if train_replies:
        schema = m.infer_schema(train_replies)
        return schema, "inferred from the training replies" if schema else None
    schema = m.infer_schema(refs)
    return schema, "inferred from the test references (training data not found)" if schema else None


def _load_base(name: str, run: Path, trust_remote_code: bool = False) -> tuple[Any, Any]:
    try:
        model, tok, _ = load_model(name, trust_remote_code=trust_remote_code)
    except ModelError as e:
        raise ModelError(f"{run} was tuned from the base model '{name}', which is not available here ({e})") from None
    # The base is prompted exactly as the run was trained (the template saved with the run's tokenizer), so the
    # comparison measures the tuning, not a change of prompt format.
    from tunesmith.models.gguf import fix_generation_ids
    from tunesmith.models.load import load_tokenizer

    tok.chat_template = load_tokenizer(run, trust_remote_code=trust_remote_code).chat_template
    fix_generation_ids(model, tok)
    return model, tok


def progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console.console,
        disable=not console.is_interactive(),
    )


def evaluate_run(run: Path | str, data: Path | str, options: EvalOptions | None = None) -> dict[str, Any]:
    """Evaluate a finished run against its base model on ``data``; every number, as a plain dict."""
    options = options or EvalOptions()
    run, data = Path(run), Path(data)
    if not runs.is_run(run):
        raise UserError(f"{run} is not a finished tunesmith run (no {runs.RUN_JSON}); pass a `tunesmith train` --out")
    info = runs.read_run(run)
    rows = load_rows(data, options.columns)
    refs = [r.reference for r in rows]
    known_refs = [r for r in refs if r is not None]
    train_examples, train_note = _training_examples(run)
    train_replies = [
        c.messages[-1].content
        for c in train_examples
        if c.messages[-1].role == "assistant" and not c.messages[-1].tool_calls
    ]
    notes = [train_note] if train_note else []
    instructions = ""
    if options.instructions is not None:
        try:
            instructions = Path(options.instructions).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read instructions from {options.instructions}: {e}") from None
    if options.few_shot and not train_examples:
        raise UserError(f"--few-shot needs the run's training data, and {train_note}")
    shots = few_shot_turns(train_examples, options.few_shot, options.seed) if options.few_shot else []
    schema, schema_source = _schema(options, train_replies, known_refs)
    task = scoring.detect_task(known_refs or train_replies, schema)
    markers = m.find_style_markers(train_replies or known_refs) if task == "text" else None

    index, docs_k = docs_index(run, options.docs, notes)
    t0 = time.time()
    pairs = preference.pairs_in(data, options.columns)
    # The start: the model the run began from (a LoRA run it continued, else its base).
    base, tok = _load_base(info.started_from or info.base_model, run, options.trust_remote_code)
    max_new = options.max_new_tokens or auto_max_tokens(tok, known_refs + call_texts(rows))
    tools = [r.tools for r in rows] if any(r.tools for r in rows) else None
    plain = [r.prompt for r in rows]
    recipe = " + ".join([*(["instructions"] if instructions else []), *([f"{options.few_shot}-shot"] if shots else [])])
    n_gen = len(rows) * (2 + bool(recipe) + (index is not None))
    conditions: dict[str, dict[str, Any]] = {}
    with progress() as bar:
        task_id = bar.add_task("base", total=n_gen)

        def tick(n: int) -> None:
            bar.advance(task_id, n)

        bs = options.batch_size
        conditions["base"] = run_condition("base", "base", base, tok, plain, refs, max_new, bs, tick, tools=tools)
        if recipe:
            bar.update(task_id, description=f"base + {recipe}")
            prompts = [prompted(p, instructions, shots) for p in plain]
            label = f"base + {recipe}"
            conditions["base_prompted"] = run_condition(
                "base_prompted", label, base, tok, prompts, refs, max_new, bs, tick, tools=tools
            )
        base_reading = forgetting.probe(base, tok)
        start_margins = preference.log_prob_margins(base, tok, pairs, bs) if pairs else []
        del base
        bar.update(task_id, description="tuned")
        tuned, tuned_tok, _ = load_model(run, trust_remote_code=options.trust_remote_code)
        conditions["tuned"] = run_condition(
            "tuned", "tuned", tuned, tuned_tok, plain, refs, max_new, bs, tick, tools=tools
        )
        if index is not None:  # the run with retrieval: the context format it trained with (data/context.py)
            bar.update(task_id, description="tuned + docs")
            conditions["tuned_rag"] = docs_condition(
                tuned, tuned_tok, plain, refs, index, docs_k, max_new, bs, tick, tools=tools
            )
        tuned_reading = forgetting.probe(tuned, tuned_tok)
        tuned_margins = preference.log_prob_margins(tuned, tuned_tok, pairs, bs) if pairs else []
        del tuned
    forget = forgetting.compare(base_reading, tuned_reading, options.forgetting_threshold, options.behaviour_threshold)
    return assemble(
        run,
        data,
        info,
        rows,
        conditions,
        forget,
        task=task,
        schema=schema,
        schema_source=schema_source,
        markers=markers,
        options=options,
        max_new=max_new,
        notes=notes,
        wall_s=time.time() - t0,
        instructions=instructions,
        preference=preference.summary(start_margins, tuned_margins) if pairs else None,
        docs_texts=[c.text for c in index.chunks] if index is not None else None,
    )


def assemble(
    run: Path,
    data: Path,
    info: runs.RunInfo,
    rows: list[EvalRow],
    conditions: dict[str, dict[str, Any]],
    forget: forgetting.Forgetting,
    **kw: Any,
) -> dict[str, Any]:
    """Raw generations and losses -> the result dict. Apart from ``evaluate_run`` so that the scoring and
    the report can be tested on hand-made completions, without a model."""
    task, schema, markers = kw["task"], kw["schema"], kw["markers"]
    refs = [r.reference for r in rows]
    calls = [r.reference_calls for r in rows]
    score_conditions(conditions, rows, task=task, schema=schema, markers=markers, docs_texts=kw.get("docs_texts"))
    quality = scoring.quality_key(conditions)
    detail = []
    for i, row in enumerate(rows):
        entry: dict[str, Any] = {"source": row.source, "prompt": row.prompt, "reference": row.reference}
        if row.reference_calls is not None:
            entry["reference_calls"] = row.reference_calls
        if row.fields:
            entry["fields"] = row.fields
        for name, cond in conditions.items():
            c, loss = cond["completions"][i], cond["losses"][i]
            entry[name] = {
                "text": c.text,
                "finish_reason": c.finish_reason,
                "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens,
                "score": cond["row_scores"][i],
                "loss": None if loss is None else loss[0] / max(1, loss[1]),
                **(cond["fact_detail"][i] or {}),
            }
        entry["change"] = scoring.change(entry["base"]["score"], entry["tuned"]["score"])
        detail.append(entry)
    public = {
        name: {k: v for k, v in c.items() if k not in ("completions", "losses", "row_scores", "fact_detail")}
        for name, c in conditions.items()
    }
    options: EvalOptions = kw["options"]
    return {
        "run": str(run),
        "data": str(data),
        "base_model": info.base_model,
        "method": info.method,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "task": task,
        "rows": len(rows),
        "rows_with_reference": sum(r is not None for r in refs),
        "rows_with_reference_call": sum(c is not None for c in calls),
        "decoding": {"temperature": 0.0, "max_new_tokens": kw["max_new"], "batch_size": options.batch_size},
        "instructions": str(options.instructions) if options.instructions else None,
        "instructions_chars": len(kw["instructions"]),
        "few_shot": options.few_shot,
        "schema": schema,
        "schema_source": kw["schema_source"],
        "style_markers": markers.as_dict() if markers else None,
        "conditions": public,
        "headline": scoring.headline(public),
        "quality_metric": quality,
        "savings": scoring.savings(public, options.price_per_1k_input_tokens, quality),
        "forgetting": forget.as_dict(),
        "preference": kw.get("preference"),
        "training": {
            **runs.training_curves(run),
            "summary": {"steps": info.steps, "best_val_loss": info.best_val_loss},
        },
        "notes": kw["notes"],
        "wall_time_s": kw["wall_s"],
        "rows_detail": detail,
    }
