"""A training run's data before the model sees it: read (or taken from the dataset check), split, given
their docs context, and rendered into rows (pipeline.py runs these in order).

    read_data(cfg, checked) -> RunData        the train and validation conversations, their hashes
    add_docs(cfg, data)                       --docs: prompts carry their nearest doc chunks
    pack_documents(cfg, data) -> cfg          text rows: documents packed into rows of max_len
    render_rows(cfg, data, ...) -> RenderedRows
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from tunesmith import console
from tunesmith.config import RunConfig
from tunesmith.data.check_report import CheckReport
from tunesmith.data.formats import Conversation, metadata_warning, read_examples, require_clean, split_examples
from tunesmith.data.render import Renderer, RenderStats
from tunesmith.errors import UserError
from tunesmith.train import rft_setup
from tunesmith.train.objectives.dpo import render_pairs

AUTO_VAL_FRACTION, AUTO_VAL_MIN_ROWS, AUTO_VAL_MAX_ROWS = 0.1, 100, 200


@dataclass
class RunData:
    train: list[Conversation]
    val: list[Conversation]
    train_hash: str
    val_hash: str | None
    reasons: list[str]
    pairs: bool = False  # the files hold preference pairs


def read_data(cfg: RunConfig, checked: CheckReport | None) -> RunData:
    """The training and validation rows, as the check parsed them when it ran; an automatic split when no
    validation file is given."""
    parsed = checked.parsed if checked is not None else {}
    columns = cfg.data.columns
    train_file = require_clean(parsed["train"]) if "train" in parsed else read_examples(cfg.data.train, columns=columns)
    if checked is None and (warning := metadata_warning(train_file)):  # (the check says it otherwise)
        console.warn(warning)
    examples, reasons, pairs = train_file.examples, [], train_file.format == "preference"
    if cfg.data.val is not None:
        val_file = require_clean(parsed["val"]) if "val" in parsed else read_examples(cfg.data.val, columns=columns)
        if (val_file.format == "preference") != pairs:
            kinds = ("preference pairs", "supervised rows") if pairs else ("supervised rows", "preference pairs")
            raise UserError(f"{cfg.data.val} holds {kinds[1]} but {cfg.data.train} holds {kinds[0]}: give both alike")
        return RunData(examples, val_file.examples, train_file.sha256, val_file.sha256, reasons, pairs)
    frac = cfg.data.val_split
    if frac is None:
        frac = AUTO_VAL_FRACTION if len(examples) >= AUTO_VAL_MIN_ROWS else 0.0
        if frac:
            frac = min(frac, AUTO_VAL_MAX_ROWS / len(examples))
            reasons.append(f"validation: held out {frac:.0%} of the rows (seeded), no --val given")
    examples, val_examples = split_examples(examples, frac, cfg.train.seed)
    return RunData(examples, val_examples, train_file.sha256, None, reasons, pairs)


def add_docs(cfg: RunConfig, data: RunData) -> None:
    """With --docs, training and validation prompts carry their nearest doc chunks (data/context.py)."""
    if cfg.data.docs is None:
        return
    from tunesmith.data.context import add_docs_context
    from tunesmith.decide.retrieval import DocsIndex

    index = DocsIndex(cfg.data.docs)
    data.train, line = add_docs_context(
        data.train, index, cfg.data.docs_k, cfg.data.stale_rows, shuffle_seed=cfg.train.seed
    )  # validation keeps the ranked order inference uses
    data.val, _ = add_docs_context(data.val, index, cfg.data.docs_k, cfg.data.stale_rows)
    data.reasons.append(line)


def pack_documents(cfg: RunConfig, data: RunData) -> RunConfig:
    """Text rows are continued pretraining: documents are packed into rows of max_len tokens (the longer ones
    were cut into max_len pieces), not into rows as long as a step's longest document."""
    if not data.train or not getattr(data.train[0], "text_only", False) or not cfg.train.packing or cfg.train.pack_len:
        return cfg
    n = cfg.data.max_len
    data.reasons.append(f"text rows: every token trained, documents packed into rows of {n} tokens (max_len)")
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"pack_len": n})})


@dataclass
class RenderedRows:
    renderer: Renderer
    train: list[Any]  # Rendered rows, or PreferencePairs for DPO
    stats: RenderStats
    val: list[Any]
    val_stats: RenderStats


def render_rows(
    cfg: RunConfig, data: RunData, tokenizer: Any, stops: list[int], checked: CheckReport | None, kind: str = "sft"
) -> RenderedRows:
    renderer = Renderer(
        tokenizer,
        max_len=cfg.data.max_len,
        overlong=cfg.data.overlong,
        train_on=cfg.data.train_on,
        stop_token_ids=stops,
    )
    if checked is not None and checked.renderer is not None:
        renderer.adopt_renderings(checked.renderer)  # the check rendered every row already
    render = {"dpo": functools.partial(render_pairs, renderer), "rft": functools.partial(rft_setup.render, renderer)}
    render = render.get(kind, renderer.render_all)
    train_rows, stats = render(data.train)
    val_rows, val_stats = render(data.val)
    if not train_rows:
        raise UserError(
            f"no training rows left: all {stats.examples} were longer than max_len {cfg.data.max_len} "
            "(raise --max-len or use overlong: truncate)"
        )
    return RenderedRows(renderer, train_rows, stats, val_rows, val_stats)
