"""Pieces shared by tunesmith's reports (``eval/report.py``, ``decide/report.py``): number formatting, inline
SVG figures, Markdown tables, and writing the json / md / html trio of a report folder."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def fmt(value: float | None, kind: str = "num") -> str:
    """A number as a report shows it: "–" for missing, a percentage, or 3 significant-ish digits."""
    if value is None:
        return "–"
    if kind == "pct":
        return f"{value * 100:.1f}%"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if size >= 1 else f"{value:.3f}"


def figure(width: float, height: float) -> Any:
    """A matplotlib figure with a transparent background (the page's colour shows through)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    fig.patch.set_alpha(0)
    return fig


def svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: the SVG goes inline in HTML


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, first column left-aligned, the rest right-aligned; "|" in a cell is escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_report_files(
    result: dict[str, Any],
    out: Path,
    names: dict[str, str],
    render_markdown: Callable[[dict[str, Any]], str],
    render_html: Callable[[dict[str, Any]], str],
) -> dict[str, Path]:
    """Write ``result`` as JSON, Markdown and HTML under ``out``; ``names`` maps "json"/"markdown"/"html" to
    file names. Returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / name for kind, name in names.items()}
    paths["json"].write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    paths["markdown"].write_text(render_markdown(result), encoding="utf-8")
    paths["html"].write_text(render_html(result), encoding="utf-8")
    return paths
