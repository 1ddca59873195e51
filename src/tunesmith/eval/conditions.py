"""An eval condition: one model and one prompt recipe over every held-out row (runner.py runs base, base +
instructions, tuned and tuned + docs), then each row's reply scored.

    run_condition(name, label, model, tok, prompts, refs, ...)  generations (batched) + each reply's loss
    docs_condition(model, tok, plain, refs, index, docs_k, ...)  'tuned + docs': each row's nearest doc chunks
    score_conditions(conditions, rows, ...)                      metrics, row scores and fact checks per condition
"""

from __future__ import annotations

import time
from typing import Any

import torch

from tunesmith.data.context import prompts_with_docs
from tunesmith.data.formats import Conversation, Message
from tunesmith.data.render import Renderer, as_message
from tunesmith.eval import metrics as m
from tunesmith.eval import scoring
from tunesmith.eval.docs import fact_inputs
from tunesmith.eval.rows import EvalRow
from tunesmith.generate import Completion, generate
from tunesmith.models.stops import stop_token_ids
from tunesmith.train.batches import collate
from tunesmith.train.loss import token_loss_sum


@torch.inference_mode()
def reply_losses(
    model: Any,
    renderer: Renderer,
    prompts: list[list[dict[str, Any]]],
    refs: list[str | None],
    pad_id: int,
    tools: list[list[dict[str, Any]] | None] | None = None,
) -> list[tuple[float, int] | None]:
    """(summed loss, tokens) of each reference reply given its prompt: the training loss, per row."""
    out: list[tuple[float, int] | None] = []
    for k, (prompt, ref) in enumerate(zip(prompts, refs, strict=True)):
        if ref is None:
            out.append(None)
            continue
        messages = [*(as_message(x) for x in prompt), Message("assistant", ref)]
        conv = Conversation(messages, tools=tools[k] if tools else None)
        loss, n = token_loss_sum(model, collate([renderer.render(conv)], pad_id))
        out.append((float(loss), n))
    return out


def generate_all(
    model: Any,
    tokenizer: Any,
    renderer: Renderer,
    prompts: list[list[dict]],
    max_new: int,
    bs: int,
    tick: Any,
    tools: list[list[dict[str, Any]] | None] | None = None,
) -> tuple[list[Completion], float]:
    """Batched generation in length order, one batch per progress tick; ``tools``: each row's definitions."""
    tools = tools or [None] * len(prompts)
    lengths = [len(renderer.prompt_ids(p, t)) for p, t in zip(prompts, tools, strict=True)]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    out: list[Completion | None] = [None] * len(prompts)
    t0 = time.perf_counter()
    for start in range(0, len(order), bs):
        idx = order[start : start + bs]
        batch = generate(
            model,
            tokenizer,
            [prompts[i] for i in idx],
            max_new_tokens=max_new,
            batch_size=bs,
            renderer=renderer,
            tools=[tools[i] for i in idx],
        )
        for i, c in zip(idx, batch, strict=True):
            out[i] = c
        tick(len(idx))
    return [c for c in out if c is not None], time.perf_counter() - t0


@torch.inference_mode()
def single_request_latency(
    model: Any, tok: Any, prompts: list[list[dict[str, str]]], max_new: int, samples: int
) -> list[float]:
    """Seconds for each of the first ``samples`` prompts answered alone (batch of one), as one user's
    request would be: batched throughput hides how long a single reply takes."""
    renderer = Renderer(tok, train_on="last", max_len=1 << 30, stop_token_ids=stop_token_ids(model, tok))
    out = []
    for prompt in prompts[:samples]:
        t0 = time.perf_counter()
        generate(model, tok, [prompt], max_new_tokens=max_new, batch_size=1, renderer=renderer)
        out.append(time.perf_counter() - t0)
    return out


def run_condition(
    name: str,
    label: str,
    model: Any,
    tok: Any,
    prompts: list,
    refs: list,
    max_new: int,
    bs: int,
    tick: Any,
    *,
    measure_loss: bool | None = None,
    tools: list[list[dict[str, Any]] | None] | None = None,
) -> dict[str, Any]:
    """One model and one prompt recipe over every row. ``prompts`` holds each row's own prompt, so a recipe
    may differ per row (retrieval puts each row's nearest examples in front of it)."""
    renderer = Renderer(tok, train_on="last", max_len=1 << 30, stop_token_ids=stop_token_ids(model, tok))
    completions, seconds = generate_all(model, tok, renderer, prompts, max_new, bs, tick, tools)
    # Loss is measured for base and tuned on the same plain prompts. Behind long instructions and shots it
    # would cost as much again as generating, for a number the comparison does not need.
    if measure_loss is None:
        measure_loss = name != "base_prompted"
    losses: list[tuple[float, int] | None] = [None] * len(prompts)
    if measure_loss:
        losses = reply_losses(model, renderer, prompts, refs, tok.pad_token_id, tools)
    return {
        "name": name,
        "label": label,
        "completions": completions,
        "losses": losses,
        "generation_s": seconds,
        "rows_per_s": len(prompts) / seconds if seconds else None,
        "prompt_tokens_per_request": sum(c.prompt_tokens for c in completions) / max(1, len(completions)),
    }


def docs_condition(
    model: Any,
    tok: Any,
    plain: list,
    refs: list,
    index: Any,
    docs_k: int,
    max_new: int,
    bs: int,
    tick: Any,
    tools: list[list[dict[str, Any]] | None] | None = None,
) -> dict[str, Any]:
    """'tuned + docs': the run with retrieval, each row's prompt carrying its nearest doc chunks in the context
    format it trained with (data/context.py)."""
    with_docs, _ = prompts_with_docs(plain, index, docs_k)
    return run_condition(
        "tuned_rag", f"tuned + {docs_k} doc chunks", model, tok, with_docs, refs, max_new, bs, tick,
        measure_loss=False, tools=tools,
    )  # fmt: skip


def score_conditions(
    conditions: dict[str, dict[str, Any]],
    rows: list[EvalRow],
    *,
    task: str,
    schema: dict[str, Any] | None,
    markers: m.StyleMarkers | None,
    docs_texts: list[str] | None,
) -> None:
    """Score every condition's replies in place: its ``metrics`` (the task's, the tool calls', the facts'), each
    row's score (``row_scores``) and each row's fact check (``fact_detail``)."""
    refs = [r.reference for r in rows]
    calls = [r.reference_calls for r in rows]
    offers = [bool(r.tools) for r in rows]
    for cond in conditions.values():
        texts = [c.text for c in cond["completions"]]
        finish = [c.finish_reason for c in cond["completions"]]
        cond["metrics"] = scoring.score_condition(
            texts, finish, refs, cond["losses"], task=task, schema=schema, markers=markers
        )
        tool_metrics, call_scores = scoring.score_tools(texts, calls, offers)
        cond["metrics"].update(tool_metrics)
        cond["row_scores"] = [
            scoring.tool_row_score(cs)
            if cs is not None
            else 0.0
            if o and m.called_a_tool(t)  # a call where the row needs none
            else scoring.row_score(t, f, r, task=task, schema=schema, markers=markers)
            for t, f, r, cs, o in zip(texts, finish, refs, call_scores, offers, strict=True)
        ]
    specs, docs_facts, skips = fact_inputs(rows, markers, docs_texts)
    for cond in conditions.values():
        fact_metrics, cond["fact_detail"] = scoring.score_facts(
            [c.text for c in cond["completions"]], specs, docs_facts, skips
        )
        cond["metrics"].update(fact_metrics)
