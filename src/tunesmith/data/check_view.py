"""How `tunesmith check` looks in a terminal: the masking view, the problems, and the summary tables.

Colour when stdout is a terminal; otherwise plain text in which the trained tokens sit between ⟦ and ⟧,
so the masking view still shows exactly where the loss starts and ends in a log file or a test.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from tunesmith import console
from tunesmith.data.check_report import CheckReport, FileReport, Finding, MaskedExample

OPEN, CLOSE = "⟦", "⟧"
MAX_PER_CODE = 10  # findings listed per check; --format json lists them all
# (label, codes) in the order the summary shows them; codes not named here are format problems.
FAMILIES: list[tuple[str, tuple[str, ...]]] = [
    ("empty replies", ("empty-reply",)),
    ("exact duplicates", ("duplicate",)),
    ("near-duplicates", ("near-duplicate",)),
    ("conflicting replies (same prompt)", ("conflict",)),
    ("train/val leakage, exact", ("leak",)),
    ("train/val leakage, near", ("near-leak",)),
    ("special tokens in the text", ("special-tokens",)),
    ("chat template renders every row", ("template",)),
    ("longer than max_len", ("overlong",)),
    ("rows that train no token", ("untrained",)),
    ("stop token (EOS / end-of-turn) trained", ("no-stop-token",)),
]
_NAMED = {c for _, codes in FAMILIES for c in codes}


def _out(renderable: Any = "") -> None:
    console.console.print(renderable, markup=False, highlight=False)


def _short(text: str, keep: int) -> str:
    """Long untrained prompts would bury the boundary: keep their start and their end."""
    if len(text) <= 2 * keep + 40:
        return text
    return f"{text[: keep // 2]} … [{len(text) - keep - keep // 2} characters] … {text[-keep:]}"


def print_example(ex: MaskedExample, color: bool) -> None:
    _out(Text(f"── {ex.source} · {ex.tokens} tokens, {ex.trained} trained " + "─" * 20, style="bold"))
    body = Text()
    cut_shown = False
    for text, trained, past in ex.segments:
        if past and not cut_shown:
            body.append(f"✂ max_len {ex.max_len} ✂", style="bold red")
            cut_shown = True
        if trained:
            shown = _short(text, 600)
            body.append(shown, style="bold black on green") if color else body.append(f"{OPEN}{shown}{CLOSE}")
        else:
            body.append(_short(text, 300), style=("dim strike" if past else "dim") if color else "")
    _out(body)
    for span in ex.spans:
        _out(
            f"   loss on tokens {span.start}–{span.end - 1} ({span.end - span.start} tokens): "
            f"starts at {span.first!r}, ends at {span.last!r}"
        )
    if ex.note:
        _out(Text(f"   note: {ex.note}", style="yellow"))
    if not ex.trained:
        _out(Text("   ⚠ NO TOKEN OF THIS ROW IS TRAINED: it costs compute and teaches nothing", style="bold red"))
    elif ex.stop_trained:
        _out(Text(f"   stop token {ex.spans[-1].last!r} is trained: the model learns to stop", style="green"))
    elif ex.max_len is not None:
        _out(Text("   ⚠ the stop token lies past max_len: this row does not teach the model to stop", style="yellow"))
    else:
        _out(Text("   ⚠ NO STOP TOKEN IS TRAINED at the end: the model will not learn to stop", style="bold red"))
    _out()


def _findings(findings: list[Finding]) -> None:
    by_code: dict[str, list[Finding]] = {}
    for f in sorted(findings, key=lambda f: f.severity != "error"):
        by_code.setdefault(f.code, []).append(f)
    for code, group in by_code.items():
        sev = group[0].severity
        _out(Text(f"{sev} · {code} ({len(group)})", style="bold red" if sev == "error" else "bold yellow"))
        for f in group[:MAX_PER_CODE]:
            _out(f"  {f}")
        if len(group) > MAX_PER_CODE:
            _out(f"  … and {len(group) - MAX_PER_CODE} more (--format json lists them all)")
    if findings:
        _out()


def _status(found: list[Finding], applies: bool = True) -> Text:
    if not applies:
        return Text("– (no --val)", style="dim")
    if not found:
        return Text("✓ none", style="green")
    errors = sum(1 for f in found if f.severity == "error")
    if errors:
        return Text(f"✗ {len(found)} found", style="bold red")
    return Text(f"⚠ {len(found)} found", style="yellow")


def _checks_table(report: CheckReport) -> Table:
    has_val = any(f.role == "val" for f in report.files)
    table = Table(title="Checks", title_justify="left", show_header=False)
    table.add_column("check")
    table.add_column("result")
    fmt = [f for f in report.findings if f.code not in _NAMED]
    table.add_row("format and structure", _status(fmt))
    threshold = report.settings.get("near_threshold", 0.8)
    for label, codes in FAMILIES:
        found = [f for f in report.findings if f.code in codes]
        label = f"{label} (similarity ≥ {threshold:.2f})" if "near" in codes[0] else label
        table.add_row(label, _status(found, applies=has_val or "leak" not in codes[0]))
    return table


def _tokens_table(report: CheckReport) -> Table:
    table = Table(title=f"Tokens (max_len {report.settings['max_len']})", title_justify="left")
    table.add_column("")
    files = report.files
    for f in files:
        table.add_column(f.role, justify="right")

    def row(label: str, get: Any) -> None:
        table.add_row(label, *[str(get(f)) for f in files])

    row("valid rows", lambda f: f"{f.valid} of {f.rows}")
    row("kept for training", lambda f: f.stats.kept)
    row("truncated to max_len", lambda f: f.stats.truncated)
    row("dropped (overlong / nothing trained)", lambda f: f"{f.stats.dropped_overlong} / {f.stats.dropped_untrained}")
    row("tokens per epoch / per validation pass", lambda f: f"{f.stats.tokens:,}")
    row("of which trained (assistant)", lambda f: _share(f))
    row("length p50 / p95 / max", lambda f: f"{f.percentile(0.5)} / {f.percentile(0.95)} / {max(f.lengths, default=0)}")
    return table


def _share(f: FileReport) -> str:
    s = f.stats
    return f"{s.trained_tokens:,} ({s.trained_tokens / s.tokens:.0%})" if s.tokens else "0"


def _histogram(f: FileReport) -> None:
    bins = f.histogram()
    top = max((b["count"] for b in bins), default=0) or 1
    _out(Text(f"Sequence lengths ({f.role}, tokens after the chat template)", style="bold"))
    for b in bins:
        label = f"{b['lo']:>6}–{b['hi']:<6}" if b["hi"] is not None else f"  > {f.max_len:<10}"
        bar = "█" * round(30 * b["count"] / top)
        tail = "  ← truncated or dropped" if b["hi"] is None and b["count"] else ""
        _out(Text(f"  {label} {bar:<30} {b['count']}{tail}", style="red" if tail else ""))
    _out()


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _duration(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def _estimate_table(est: dict[str, Any]) -> Table:
    table = Table(title=f"Pre-flight estimate on this machine ({est['device']})", title_justify="left")
    price = est.get("price_per_hour")
    for col in ("method", "trained", "per epoch", "whole run", "peak memory"):
        table.add_column(col, justify="left" if col == "method" else "right")
    if price is not None:
        table.add_column("cost", justify="right")
    ranked = [m["per_rank"] for m in est["methods"] if m.get("per_rank")]
    if ranked:
        table.add_column(f"per process (x{ranked[0]['nproc']})", justify="right")
    for m in est["methods"]:
        cells = [
            m["method"],
            f"{m['trainable_params'] / 1e6:.2f}M / {m['total_params'] / 1e6:.0f}M",
            _duration(m["seconds_per_epoch"]),
            f"{_duration(m['seconds_total'])} ({m['epochs']} ep.)",
            _gib(m["memory"]["peak"]),
        ]
        if price is not None:
            cells.append(f"{m['cost_total']:.2f}")
        if ranked:
            r = m.get("per_rank") or {}
            cells.append(f"{_gib(r['peak'])} ({r['strategy']})" if r else "-")
        table.add_row(*cells)
    return table


def _estimate_note(est: dict[str, Any]) -> list[str]:
    lines = [f"  measured: a {est['probe_seconds']:.0f} s probe (load, then 1-2 real optimizer steps per method)"]
    if est.get("price_per_hour") is not None:
        lines.append(f"  cost: the whole run at {est['price_per_hour']:g} per hour")
    for m in est["methods"]:
        mem = m["memory"]
        lines.append(
            f"  {m['method']}: {m['precision']}, batch {m['batch_size']} (micro {m['micro_batch_size']}"
            f"{', packed' if m['packing'] else ''}), {m['probe_tokens_per_s']:.0f} tok/s; peak = weights "
            f"{_gib(mem['weights'])} + gradients {_gib(mem['gradients'])} + AdamW {_gib(mem['optimizer'])} "
            f"+ activations {_gib(mem['activations'])}"
        )
        r = m.get("per_rank")
        if r:
            parts = " + ".join(
                f"{k} {_gib(r[k])}" for k in ("weights", "gradients", "optimizer", "unsharded", "activations") if k in r
            )
            lines.append(f"  {m['method']} per process, {r['strategy']} over {r['nproc']}: {parts}")
    return lines


def print_check(report: CheckReport, estimate: dict[str, Any] | None, strict: bool) -> None:
    color = console.console.is_terminal
    files = " · ".join(f"{f.role} {f.path} ({f.format or 'unknown format'}, {f.rows} rows)" for f in report.files)
    _out(Text(f"tunesmith check  {files} · model {report.settings.get('model', '?')}", style="bold"))
    _out()
    for ex in report.examples:
        print_example(ex, color)
    _findings(report.findings)
    _out(_checks_table(report))
    _out(_tokens_table(report))
    train = next((f for f in report.files if f.role == "train"), None)
    if train is not None and train.lengths:
        _histogram(train)
    if estimate is not None:
        _out(_estimate_table(estimate))
        for line in _estimate_note(estimate):
            _out(Text(line, style="dim"))
        _out()
    errors, warnings = len(report.errors), len(report.warnings)
    code = report.exit_code(strict)
    if not errors and not warnings:
        _out(Text("✓ clean: nothing found that would spoil a fine-tune", style="bold green"))
    else:
        style = "bold red" if errors else "bold yellow"
        what = f"{errors} error(s), {warnings} warning(s)"
        hint = "train refuses to start on errors" if errors else "warnings only"
        _out(Text(f"{'✗' if errors else '⚠'} {what}: {hint} (exit {code})", style=style))
