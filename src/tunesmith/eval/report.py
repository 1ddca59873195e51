"""The evaluation as people see it: report.html (self-contained), report.md, eval.json, a terminal table.

The HTML has no external resources at all (charts are inline SVG from matplotlib, styles and the small
filter script are inline), so it opens the same from a laptop, a CI artifact or an air-gapped server.
"""

from __future__ import annotations

import difflib
import html
import json
import math
import re
from pathlib import Path
from typing import Any

from tunesmith import console
from tunesmith.data.tools import format_tool_call
from tunesmith.eval.behaviour import markdown as behaviour_markdown
from tunesmith.eval.behaviour import summary as behaviour_summary
from tunesmith.eval.runner import EvalOptions, evaluate_run
from tunesmith.eval.scoring import BY_KEY
from tunesmith.reports import figure, fmt, md_table, svg, write_report_files

COLOURS = {"base": "#9aa0a6", "base_prompted": "#e8a33d", "tuned": "#1a73e8", "tuned_rag": "#188038"}
ORDER = ("base", "base_prompted", "tuned", "tuned_rag")


def names(result: dict[str, Any]) -> list[str]:
    return [n for n in ORDER if n in result["conditions"]]


def label(result: dict[str, Any], name: str) -> str:
    return result["conditions"][name]["label"]


def row_counts(result: dict[str, Any]) -> dict[str, int]:
    counts = {"improved": 0, "regressed": 0, "same": 0}
    for row in result["rows_detail"]:
        counts[row["change"]] += 1
    return counts


def summary_line(result: dict[str, Any]) -> str:
    """One sentence: does tuned beat base on the quality measure, and how many rows moved each way."""
    key = result["quality_metric"]
    counts = row_counts(result)
    moved = f"{counts['improved']} rows improved, {counts['regressed']} regressed, {counts['same']} unchanged"
    if key is None:
        return moved
    measure = BY_KEY[key]
    base, tuned = result["conditions"]["base"]["metrics"][key], result["conditions"]["tuned"]["metrics"][key]
    word = {"better": "beats", "worse": "is worse than", "same": "matches"}[_verdict_of(result, key)]
    text = f"Tuned {word} base on {measure.label.lower()}: {fmt(base, measure.fmt)} → {fmt(tuned, measure.fmt)}"
    if "base_prompted" in result["conditions"]:
        prompted = result["conditions"]["base_prompted"]["metrics"].get(key)
        text += f" ({label(result, 'base_prompted')}: {fmt(prompted, measure.fmt)})"
    return f"{text}. {moved}."


def _verdict_of(result: dict[str, Any], key: str) -> str:
    return next((h["verdict"] for h in result["headline"] if h["key"] == key), "same")


# ---- charts (matplotlib, inline SVG) --------------------------------------------------------------------
def loss_chart(result: dict[str, Any]) -> str | None:
    curves = result["training"]
    if not curves["train_loss"]:
        return None
    fig = figure(6.4, 3.2)
    ax = fig.add_subplot()
    steps, loss = zip(*curves["train_loss"], strict=True)
    ax.plot(steps, loss, color="#1a73e8", linewidth=1.2, label="training loss")
    if curves["val_loss"]:
        vsteps, vloss = zip(*curves["val_loss"], strict=True)
        ax.plot(vsteps, vloss, color="#d93025", marker="o", markersize=4, linewidth=1.5, label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    return svg(fig)


def metrics_chart(result: dict[str, Any]) -> str | None:
    """Grouped horizontal bars of every 0-1 measure (chrF scaled to 0-1), one bar per condition."""
    rows = [h for h in result["headline"] if h["fmt"] == "pct" or h["key"] == "chrf"]
    if not rows:
        return None
    conds = names(result)
    fig = figure(6.4, 0.5 + 0.32 * len(rows) * len(conds))
    ax = fig.add_subplot()
    height = 0.8 / len(conds)
    for j, name in enumerate(conds):
        values = [(h.get(name) or 0.0) / (100.0 if h["key"] == "chrf" else 1.0) for h in rows]
        ys = [i + (j - (len(conds) - 1) / 2) * height for i in range(len(rows))]
        bars = ax.barh(ys, values, height=height * 0.92, color=COLOURS[name], label=label(result, name))
        ax.bar_label(bars, labels=[f"{v * 100:.0f}%" for v in values], padding=2, fontsize=8)
    ax.set_yticks(range(len(rows)), [h["label"] + (" / 100" if h["key"] == "chrf" else "") for h in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(conds))
    return svg(fig)


def perplexity_chart(result: dict[str, Any]) -> str | None:
    """Perplexity on the references (lower: the model expects the right answer) and on general English
    (the forgetting check), base against tuned, on a log scale. A condition without a number in a group
    (no loss is measured behind long instructions) simply has no bar there."""
    forget = result["forgetting"]
    task = {n: result["conditions"][n]["metrics"].get("perplexity") for n in names(result)}
    groups = {
        "task references": task,
        "general English (forgetting check)": {"base": forget["base_perplexity"], "tuned": forget["tuned_perplexity"]},
    }
    groups = {g: {n: v for n, v in vals.items() if v is not None and math.isfinite(v)} for g, vals in groups.items()}
    groups = {g: vals for g, vals in groups.items() if vals}
    if not groups:
        return None
    conds = [n for n in names(result) if any(n in vals for vals in groups.values())]
    fig = figure(6.4, 2.8)
    ax = fig.add_subplot()
    width = 0.8 / len(conds)
    for j, name in enumerate(conds):
        slots = [(i, vals[name]) for i, vals in enumerate(groups.values()) if name in vals]
        xs = [i + (j - (len(conds) - 1) / 2) * width for i, _ in slots]
        values = [v for _, v in slots]
        bars = ax.bar(xs, values, width=width * 0.92, color=COLOURS[name], label=label(result, name))
        ax.bar_label(bars, labels=[fmt(v) for v in values], padding=2, fontsize=8)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_yscale("log")
    # Perplexity is at least 1: bars that start there keep their heights honest on a log axis.
    ax.set_ylim(bottom=1.0, top=max(max(v.values()) for v in groups.values()) * 3)
    ax.set_ylabel("perplexity (log scale)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(conds))
    return svg(fig)


def charts(result: dict[str, Any]) -> dict[str, str]:
    import matplotlib

    # Text stays text in the SVG (smaller, selectable); the browser draws it with its own fonts.
    with matplotlib.rc_context({"svg.fonttype": "none", "font.size": 9}):
        made = {"loss": loss_chart(result), "metrics": metrics_chart(result), "perplexity": perplexity_chart(result)}
    return {k: v for k, v in made.items() if v}


# ---- side-by-side diff ---------------------------------------------------------------------------------
_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


def _esc(text: str) -> str:
    return html.escape(text, quote=False)  # element text, never an attribute: quotes stay readable


def diff_html(text: str, against: str | None) -> str:
    """``text`` as HTML, with what differs from ``against`` marked: <ins> for what ``text`` adds and <del>
    for what it leaves out. Word-level, so a wrong JSON value shows as one struck word and one new one."""
    if against is None:
        return _esc(text)
    a, b = _TOKEN.findall(against), _TOKEN.findall(text)
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(_esc("".join(b[j1:j2])))
            continue
        if op in ("delete", "replace"):
            out.append(f"<del>{_esc(''.join(a[i1:i2]))}</del>")
        if op in ("insert", "replace"):
            out.append(f"<ins>{_esc(''.join(b[j1:j2]))}</ins>")
    return "".join(out)


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i, row in enumerate(result["rows_detail"], start=1):
        prompt = row["prompt"]
        user = prompt[-1]["content"] if prompt else ""
        ref = row["reference"]
        if ref is None and row.get("reference_calls"):  # a call: shown as the fallback writes it
            ref = "\n".join(format_tool_call(c["name"], c["arguments"]) for c in row["reference_calls"])
        cells = {}
        for name in names(result):
            # Without a reference, tuned is diffed against base: what tuning changed.
            against = ref if ref is not None else (None if name == "base" else row["base"]["text"])
            cell = row[name]
            cells[name] = {**cell, "html": diff_html(cell["text"], against), "score_text": fmt(cell["score"], "pct")}
        out.append(
            {
                "n": i,
                "source": row["source"],
                "prompt": user,
                "earlier": len(prompt) - 1,
                "reference": ref,
                "fields": fields_text(row.get("fields")),
                "change": row["change"],
                "cells": cells,
            }
        )
    return out


def fields_text(fields: dict[str, Any] | None) -> str:
    """A row's metadata as one line (``id: 7 · fact: 2 litres``), for the per-row tables."""
    if not fields:
        return ""
    shown = (v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in fields.values())
    return " · ".join(f"{k}: {v}" for k, v in zip(fields, shown, strict=True))


# ---- writers --------------------------------------------------------------------------------------------
def render_html(result: dict[str, Any]) -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape
    from markupsafe import Markup

    env = Environment(loader=PackageLoader("tunesmith.eval", "templates"), autoescape=select_autoescape(["j2"]))
    env.filters["fmt"] = fmt
    template = env.get_template("report.html.j2")
    return template.render(
        r=result,
        names=names(result),
        label=lambda n: label(result, n),
        colours=COLOURS,
        charts={k: Markup(v) for k, v in charts(result).items()},
        rows=[
            {**x, "cells": {k: {**c, "html": Markup(c["html"])} for k, c in x["cells"].items()}}
            for x in table_rows(result)
        ],
        counts=row_counts(result),
        summary=summary_line(result),
        preference=preference_line(result["preference"]) if result.get("preference") else None,
        behaviour=behaviour_summary(result["forgetting"]["behaviour"]) if "behaviour" in result["forgetting"] else None,
    )


def headline_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    conds = names(result)
    header = ["measure", *(label(result, n) for n in conds), "tuned vs base"]
    rows = [[h["label"], *(fmt(h.get(n), h["fmt"]) for n in conds), h["verdict"]] for h in result["headline"]]
    return header, rows


def render_markdown(result: dict[str, Any]) -> str:
    parts = [
        f"# tunesmith eval: {result['run']}",
        "",
        f"Data `{result['data']}`: {result['rows']} rows ({result['rows_with_reference']} with a reference). "
        f"Base model `{result['base_model']}`; greedy decoding, at most {result['decoding']['max_new_tokens']} "
        "new tokens, the same for every model.",
        "",
        f"**{summary_line(result)}**",
        "",
        "## Headline",
        "",
        md_table(*headline_rows(result)),
    ]
    fields = result["conditions"]["tuned"]["metrics"].get("field_accuracy")
    if fields:
        conds = names(result)
        rows = [
            [k, *(fmt(result["conditions"][n]["metrics"].get("field_accuracy", {}).get(k), "pct") for n in conds)]
            for k in fields
        ]
        parts += ["", "## Field accuracy", "", md_table(["field", *(label(result, n) for n in conds)], rows)]
    parts += _tool_section(result)
    s = result["savings"]
    if s:
        price = s["price_per_1k_input_tokens"]
        money = (
            " (pass --price-per-1k-input-tokens for the cost)"
            if price is None
            else f", worth {s['saved_per_1m_requests']:,.2f} at {price:g} per 1k input tokens"
        )
        parts += [
            "",
            "## Token savings",
            "",
            md_table(
                ["", s["prompted_label"], s["tuned_label"]],
                [
                    ["prompt tokens per request", fmt(s["prompt_tokens_prompted"]), fmt(s["prompt_tokens_tuned"])],
                    [
                        s["quality_metric"] or "quality",
                        *(fmt(s[k], _qfmt(s)) for k in ("quality_prompted", "quality_tuned")),
                    ],
                ],
            ),
            "",
            f"Tokens saved per request: {fmt(s['tokens_saved_per_request'])}; per 1M requests: "
            f"{s['tokens_saved_per_1m_requests']:,.0f} tokens{money}.",
        ]
    pref = result.get("preference")
    if pref:
        parts += ["", "## Held-out preferences", "", preference_line(pref)]
    f = result["forgetting"]
    flag = _flag(f)
    parts += [
        "",
        "## Forgetting check",
        "",
        f"Perplexity on {f['tokens']} tokens of general English (`{f['text']}`): base {fmt(f['base_perplexity'])}, "
        f"tuned {fmt(f['tuned_perplexity'])} ({f['change']:+.1%}; threshold +{f['threshold']:.0%}): {flag}.",
    ]
    if b := f.get("behaviour"):  # absent in results from before the behavioural probe
        parts += ["", behaviour_markdown(b)]
    if result["notes"]:
        parts += ["", "## Notes", "", *(f"- {n}" for n in result["notes"])]
    return "\n".join(parts) + "\n"


def preference_line(p: dict[str, Any]) -> str:
    return (
        f"On {p['pairs']} held-out pairs, the preferred reply is the likelier one for the start in "
        f"{p['start_accuracy']:.1%} and for the tuned model in {p['tuned_accuracy']:.1%}; the tuned model "
        f"widened the margin over the start (DPO's reward accuracy) in {p['reward_accuracy']:.1%}."
    )


def _tool_section(result: dict[str, Any]) -> list[str]:
    """Per-argument accuracy of the calls, one row per function argument, when the data has call rows."""
    args = result["conditions"]["tuned"]["metrics"].get("tool_arguments")
    if not args:
        return []
    conds = names(result)
    rows = [
        [k, *(fmt(result["conditions"][n]["metrics"].get("tool_arguments", {}).get(k), "pct") for n in conds)]
        for k in args
    ]
    n_calls = result["conditions"]["tuned"]["metrics"]["tool_call_rows"]
    return [
        "",
        "## Tool calls",
        "",
        f"{n_calls} rows whose reference is a tool call; arguments compared as parsed JSON, per function argument:",
        "",
        md_table(["argument", *(label(result, n) for n in conds)], rows),
    ]


def _qfmt(s: dict[str, Any]) -> str:
    return BY_KEY[s["quality_key"]].fmt if s["quality_key"] else "num"


def write_reports(result: dict[str, Any], out: Path) -> dict[str, Path]:
    names = {"json": "eval.json", "markdown": "report.md", "html": "report.html"}
    return write_report_files(result, out, names, render_markdown, render_html)


def print_headline(result: dict[str, Any]) -> None:
    from rich.table import Table

    if console.quiet():
        return

    header, rows = headline_rows(result)
    table = Table(title=f"tunesmith eval: {result['rows']} rows of {result['data']}")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    style = {"better": "green", "worse": "red", "same": "dim"}
    for row in rows:
        table.add_row(*row[:-1], f"[{style[row[-1]]}]{row[-1]}[/]")
    console.console.print(table)
    s = result["savings"]
    if s:
        money = "" if s["saved_per_1m_requests"] is None else f", {s['saved_per_1m_requests']:,.2f} per 1M requests"
        console.info(
            f"token savings: {fmt(s['prompt_tokens_prompted'])} -> {fmt(s['prompt_tokens_tuned'])} prompt tokens "
            f"per request ({fmt(s['tokens_saved_per_request'])} saved{money})"
        )
    if result.get("preference"):
        console.info(f"preferences: {preference_line(result['preference'])}")
    f = result["forgetting"]
    word = "[red]REGRESSION[/red]" if f["regressed"] else "ok"
    console.info(
        f"forgetting: general-English perplexity {fmt(f['base_perplexity'])} -> {fmt(f['tuned_perplexity'])} "
        f"({f['change']:+.1%}, threshold +{f['threshold']:.0%}): {word}"
    )
    if b := f.get("behaviour"):
        console.info(f"forgetting: {behaviour_summary(b)}: {_flag(b, '[red]REGRESSION[/red]')}")
    console.console.print(summary_line(result), markup=False)


def _flag(probe: dict[str, Any], word: str = "**REGRESSION**") -> str:
    return word if probe["regressed"] else "ok"


def evaluate_and_report(
    run: Path | str, data: Path | str, out: Path | str | None = None, options: EvalOptions | None = None
) -> tuple[dict[str, Any], dict[str, Path]]:
    """The whole of `tunesmith eval` (and of `train --eval-data`): evaluate, write the reports, print."""
    result = evaluate_run(run, data, options)
    paths = write_reports(result, Path(out) if out is not None else Path(run) / "eval")
    print_headline(result)
    console.info(f"report: {paths['html']}  (also {paths['markdown'].name}, {paths['json'].name})")
    return result, paths
