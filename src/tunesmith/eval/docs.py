"""Docs for eval and the bakeoff: which folder a run's evaluation retrieves from and checks replies against,
and the per-row inputs of the fact measures (``eval/facts.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith import console, runs
from tunesmith.data.context import last_user
from tunesmith.eval import facts
from tunesmith.eval import metrics as m
from tunesmith.eval.rows import EvalRow


def fact_inputs(
    rows: list[EvalRow], markers: m.StyleMarkers | None, docs_texts: list[str] | None
) -> tuple[list[facts.FactSpec | None], facts.DocsFacts | None, list[set[str]]]:
    """Each row's fact spec (from its fields), the docs' claims, and what each reply may state without the
    docs (its question's claims, the voice's fixed phrases)."""
    voice = [*markers.openings, *markers.closings] if markers else []
    questions = [last_user(r.prompt) for r in rows]
    docs = facts.DocsFacts(docs_texts) if docs_texts else None
    return [facts.fact_spec(r.fields) for r in rows], docs, [facts.skip_set(q, voice) for q in questions]


def docs_index(run: Path, folder: Path | None, notes: list[str]) -> tuple[Any, int]:
    """The docs to check replies against and retrieve from: ``--docs``, else those the run trained with."""
    from tunesmith.config import load_config

    data = load_config(run / runs.CONFIG_YAML).data if (run / runs.CONFIG_YAML).is_file() else None
    if folder is None and data is not None and data.docs is not None:
        folder = data.docs
        notes.append(f"docs: {folder}, as the run trained with them (tuned + docs uses its context format)")
    if folder is None:
        return None, 0
    from tunesmith.decide.retrieval import DocsIndex

    index = DocsIndex(Path(folder))
    if index.problem:
        console.warn(index.problem)
        notes.append(index.problem)
    return index, data.docs_k if data is not None else 4
