"""The bakeoff as people see it: bakeoff.html (self-contained: inline SVG chart of quality against prompt
tokens per request, and the table), bakeoff.md, bakeoff.json, bakeoff.png (the chart, for READMEs) and a
rich table in the terminal. Formatting, SVG and file writing are shared with eval's report (``reports.py``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tunesmith import console
from tunesmith.eval.scoring import BY_KEY
from tunesmith.reports import figure, fmt, md_table, svg, write_report_files

COLOURS = {"prompt": "#9aa0a6", "fewshot": "#e8a33d", "rag": "#188038", "lora": "#1a73e8", "full": "#a142f4"}
COLOURS["lora+rag"] = "#d93025"
ORDER = ("prompt", "fewshot", "rag", "lora", "full", "lora+rag")


def _names(result: dict[str, Any]) -> list[str]:
    return [n for n in ORDER if n in result["methods"]]


def _qfmt(result: dict[str, Any]) -> str:
    key = result["quality_metric"]
    return BY_KEY[key].fmt if key else "num"


def best_baseline(result: dict[str, Any]) -> str | None:
    """The prompting method a tuned model would replace: the best-scoring one that ran."""
    ran = [n for n in ("prompt", "fewshot", "rag") if n in result["methods"]]
    if not ran:
        return None
    methods = result["methods"]
    return max(ran, key=lambda n: (methods[n]["quality"] or 0.0, -methods[n]["prompt_tokens_per_request"]))


def requests_text(value: float | None) -> str:
    if value is None:
        return "never"
    if value < 1:
        return "at once" if value == 0 else "< 1"
    return f"{math.ceil(value):,}"


def money(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.2f}" if value >= 0.01 or value == 0 else f"{value:.2g}"


def beside_quality(result: dict[str, Any]) -> list[str]:
    """Measures shown next to the one that ranks: chrF next to fact accuracy, the docs check, the voice."""
    keys = ("fact_accuracy", "chrf", "fact_consistency", "style_adherence")
    ran = result["methods"].values()
    return [k for k in keys if k != result["quality_metric"] and any(k in r["metrics"] for r in ran)]


def table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The headline table: one row per method that ran, then one per method skipped."""
    q = result["quality_label"] or "quality"
    base = best_baseline(result)
    extra = beside_quality(result)
    header = [
        "method",
        q,
        *(BY_KEY[k].label for k in extra),
        "stopped on its own",
        "prompt tokens / request",
        "latency s / request",
        "training s",
        "training cost",
        f"break-even vs {base} (requests)" if base else "break-even (requests)",
    ]
    rows = []
    for n in _names(result):
        r = result["methods"][n]
        training = r["training"] or {}
        be = r.get("break_even", {}).get(base) if base else None
        rows.append(
            [
                r["label"],
                fmt(r["quality"], _qfmt(result)),
                *(fmt(r["metrics"].get(k), BY_KEY[k].fmt) for k in extra),
                fmt(r["metrics"].get("stop_rate"), "pct"),
                fmt(r["prompt_tokens_per_request"]),
                fmt(r["latency_s"]),
                fmt(training.get("seconds")) + (" (reused)" if training.get("source") == "reused" else ""),
                money(r["training_cost"]),
                requests_text(be["requests"]) if be else "–",
            ]
        )
    for n, why in result["skipped"].items():
        rows.append([f"{n}: skipped", why, *[""] * (len(header) - 2)])
    return header, rows


def winner_line(result: dict[str, Any]) -> str:
    rank = result["ranking"]
    if not rank.get("winner"):
        return "No method could be scored."
    label = result["methods"][rank["winner"]]["label"]
    # A stopped bakeoff's reports say so: its leader is not a winner over the methods it never ran.
    head = "Leader so far (partial result)" if result.get("complete") is False else "Winner"
    return f"{head}: {label}: {rank['reason']}."


def prices_line(result: dict[str, Any]) -> str:
    p = result["prices"]
    rpm = p["requests_per_month"]
    traffic = f", {rpm:,.0f} requests/month" if rpm else ""
    return (
        f"Costs at {p['price_per_1k_input_tokens']:g} per 1k input tokens and {p['price_per_hour']:g} per hour of "
        f"training{traffic} (set --price-per-1k-input-tokens, --price-per-hour, --requests-per-month)."
    )


# ---- chart ----------------------------------------------------------------------------------------------
def chart(result: dict[str, Any], fmt_out: str = "svg") -> str | bytes | None:
    """Quality (up) against prompt tokens per request (right, log scale): the top-left corner wins."""
    import matplotlib

    names = [n for n in _names(result) if result["methods"][n]["quality"] is not None]
    if not names:
        return None
    scale = 100.0 if result["quality_metric"] == "chrf" else 1.0
    with matplotlib.rc_context({"svg.fonttype": "none", "font.size": 9}):
        fig = figure(6.4, 3.6)
        fig.patch.set_alpha(1 if fmt_out == "png" else 0)
        ax = fig.add_subplot()
        for n in names:
            r = result["methods"][n]
            x, y = r["prompt_tokens_per_request"], r["quality"] / scale
            ax.scatter([x], [y], s=90, color=COLOURS[n], zorder=3, label=r["label"])
            ax.annotate(n, (x, y), textcoords="offset points", xytext=(7, 6), fontsize=9)
        ax.set_xscale("log")
        ax.set_xlabel("prompt tokens per request (log scale)")
        ax.set_ylabel(f"{result['quality_label']}" + (" / 100" if scale != 1.0 else ""))
        ax.set_ylim(-0.05, 1.1)
        ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
        xs = [result["methods"][n]["prompt_tokens_per_request"] for n in names]
        ax.set_xlim(min(xs) / 1.6, max(xs) * 1.8)
        ax.grid(alpha=0.3, which="both")
        ax.legend(frameon=False, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)
        if fmt_out == "png":
            import io

            buf = io.BytesIO()
            fig.savefig(buf, format="png", bbox_inches="tight", dpi=110)
            return buf.getvalue()
        return svg(fig)


# ---- writers --------------------------------------------------------------------------------------------
def render_markdown(result: dict[str, Any]) -> str:
    parts = [
        "# tunesmith bakeoff",
        "",
        f"Train `{result['train']}`, test `{result['test']}` ({result['rows']} rows), base model "
        f"`{result['base_model']}`; greedy decoding, at most {result['decoding']['max_new_tokens']} new tokens, "
        "the same for every method. Latency: median of single requests on this machine.",
        "",
        f"**{winner_line(result)}**",
        "",
        md_table(*table(result)),
        "",
        prices_line(result),
    ]
    if result["notes"]:
        parts += ["", "Notes:", "", *(f"- {n}" for n in result["notes"])]
    if any("fields" in r for r in result.get("rows_detail", [])):
        parts += ["", "## Rows", "", md_table(*rows_table(result))]
    return "\n".join(parts) + "\n"


def _cell(text: str, limit: int = 90) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def rows_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Each test row with its metadata fields and every method's reply; ✓ / ✗ where the row names a fact."""
    names = _names(result)
    rows = []
    for i, row in enumerate(result["rows_detail"], start=1):
        fields = " · ".join(f"{k}: {v}" for k, v in (row.get("fields") or {}).items())
        cells = []
        for n in names:
            reply = row[n]
            mark = {True: "✓ ", False: "✗ "}.get((reply.get("facts") or {}).get("ok"), "")
            cells.append(mark + _cell(reply["text"]))
        rows.append([str(i), _cell(fields, 60), _cell(row["input"], 60), *cells])
    return ["#", "fields", "input", *(result["methods"][n]["label"] for n in names)], rows


def render_html(result: dict[str, Any]) -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape
    from markupsafe import Markup

    env = Environment(loader=PackageLoader("tunesmith.decide", "templates"), autoescape=select_autoescape(["j2"]))
    header, rows = table(result)
    svg = chart(result)
    base = best_baseline(result)
    breakeven = []
    for n in ("lora", "full", "lora+rag"):
        for b, be in (result["methods"].get(n, {}).get("break_even") or {}).items():
            breakeven.append(
                {
                    "tuned": n,
                    "baseline": b,
                    "saved": fmt(be["tokens_saved_per_request"]),
                    "saved_money": money(be["saved_per_request"]),
                    "requests": requests_text(be["requests"]),
                    "months": "–" if be["months"] is None else f"{be['months']:.1f}",
                }
            )
    return env.get_template("bakeoff.html.j2").render(
        r=result,
        header=header,
        rows=rows,
        names=_names(result),
        colours=COLOURS,
        chart=Markup(svg) if isinstance(svg, str) else None,
        winner=winner_line(result),
        prices=prices_line(result),
        breakeven=breakeven,
        baseline=base,
    )


def write_reports(result: dict[str, Any], out: Path) -> dict[str, Path]:
    names = {"json": "bakeoff.json", "markdown": "bakeoff.md", "html": "bakeoff.html"}
    paths = write_report_files(result, out, names, render_markdown, render_html)
    png = chart(result, "png")
    if isinstance(png, bytes):
        paths["png"] = Path(out) / "bakeoff.png"
        paths["png"].write_bytes(png)
    return paths


def print_table(result: dict[str, Any]) -> None:
    from rich.table import Table

    if console.quiet():
        return
    header, rows = table(result)
    t = Table(title=f"tunesmith bakeoff: {result['rows']} rows of {result['test']}")
    for i, h in enumerate(header):
        t.add_column(h, justify="left" if i == 0 else "right")
    winner = result["ranking"].get("winner")
    for n, row in zip([*_names(result), *result["skipped"]], rows, strict=True):
        style = "bold green" if n == winner else ("dim" if n in result["skipped"] else None)
        t.add_row(*row, style=style)
    console.console.print(t)
    console.console.print(winner_line(result), markup=False)
    console.console.print(prices_line(result), markup=False)
    for n in result["notes"]:
        console.note(n)
