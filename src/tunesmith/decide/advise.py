"""`tunesmith advise`: a recommendation (prompting, RAG, LoRA, full fine-tuning, or LoRA for format plus RAG
for facts) with reasons that each name the number they rest on.

The evidence is the dataset analysis (``analyse.py``), the user's answers (changes per month, traffic,
prompt tokens) and, with ``--from-bakeoff DIR``, the measured bakeoff: then the recommendation follows the
measured winner (``rank.py``, costs included) and the analysis adds caveats. The rules, in order:

1. replies carry facts that their inputs do not (names, numbers, dates)  -> RAG
   (+ LoRA when the format is also consistent and there is enough data: LoRA for format, RAG for facts)
2. the task itself keeps changing (changes per month)                     -> prompting
3. a consistent format or a transformation of the input, with enough data -> LoRA (full with plenty)
4. the same, with too little data                                          -> prompting (few-shot)
5. nothing stands out: prompting, unless prompt tokens at the stated traffic outweigh training -> LoRA

Every threshold below is a field of ``Thresholds``, settable with ``--threshold NAME=VALUE``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from tunesmith.decide import analyse as an
from tunesmith.decide import economics as econ
from tunesmith.errors import UserError

NAMES = {
    "prompting": "prompting (instructions and few-shot examples)",
    "rag": "RAG (retrieval-augmented generation)",
    "lora": "LoRA fine-tuning",
    "full": "full fine-tuning",
    "lora+rag": "LoRA for the format + RAG for the facts",
}
FITS = {"prompting": "prompting fits", "rag": "RAG fits", "lora": "fine-tune fits", "full": "fine-tune fits"}
FROM_METHOD = {"prompt": "prompting", "fewshot": "prompting", "rag": "rag", "lora": "lora", "full": "full"}
FROM_METHOD["lora+rag"] = "lora+rag"


@dataclass
class Thresholds:
    consistent: float = 0.8  # share of replies in the dominant format (JSON key set or style markers)
    transformation: float = 0.7  # share of reply words copied from the input or the replies' shared vocabulary
    copied: float = 0.3  # ... of which at least this share from the input itself, when the replies carry facts
    factual_rows: float = 0.3  # share of replies with a name, number or date their input does not have
    fact_tokens: float = 0.1  # ... or share of reply words that are such facts
    min_examples: int = 100  # unique examples before fine-tuning is worth it
    full_examples: int = 20_000  # unique examples before full fine-tuning is worth its cost over LoRA
    min_label_examples: int = 5  # the rarest label value of a JSON field should have at least this many
    drift: float = 0.1  # share of repeated inputs whose replies changed: the answers change
    changes_per_month: float = 1.0  # changes of the task or its facts per month that make weights go stale
    heavy_tokens_per_month: float = 10_000_000  # prompt-overhead tokens a month that outweigh a training run

    @classmethod
    def parse(cls, items: list[str]) -> Thresholds:
        t = cls()
        known = {f.name: f.type for f in fields(cls)}
        for item in items:
            name, _, value = item.partition("=")
            name = name.strip().replace("-", "_")
            if name not in known or not value:
                raise UserError(f"--threshold {item}: expected NAME=VALUE with NAME one of {', '.join(known)}")
            try:
                setattr(t, name, (int if known[name] in (int, "int") else float)(value))
            except ValueError:
                raise UserError(f"--threshold {item}: {value!r} is not a number") from None
        return t


@dataclass
class Reason:
    text: str
    points_to: str  # prompting | rag | fine-tune | caveat | measured


@dataclass
class Advice:
    recommendation: str
    summary: str
    fits: list[str]
    reasons: list[Reason]
    analysis: dict[str, Any]
    thresholds: dict[str, Any]
    bakeoff: dict[str, Any] | None = None
    evidence: dict[str, Any] | None = None  # the facts verdict's numbers (decide/verdict.py), when facts change

    def as_dict(self) -> dict[str, Any]:
        # The verdict first, as a program reads it: the first line of the text output, the method, its evidence.
        return {"verdict": self.summary, "method": self.recommendation, **asdict(self)}


def _pct(x: float) -> str:
    return f"{x:.0%}"


def evidence(a: an.Analysis, t: Thresholds, answers: dict[str, Any]) -> dict[str, Any]:
    """The booleans the rules use, each with the reason that names its number."""
    c, f, s, v = a.consistency, a.factual, a.sufficiency, a.volatility
    out: dict[str, Any] = {"reasons": []}

    def say(text: str, points_to: str) -> None:
        out["reasons"].append(Reason(text, points_to))

    fmt_cut = f"{c.dominant}; threshold {_pct(t.consistent)}"
    out["consistent"] = c.regularity >= t.consistent
    if out["consistent"]:
        text = f"{_pct(c.regularity)} of replies follow one format ({fmt_cut}): a consistent output format is "
        say(text + "what fine-tuning teaches best, so fine-tuning fits", "fine-tune")
    else:
        text = f"only {_pct(c.regularity)} of replies follow one format ({fmt_cut}): "
        say(text + "no single format for fine-tuning to lock in", "prompting")
    out["factual"] = f.rows_with_new_facts >= t.factual_rows or f.new_fact_share >= t.fact_tokens
    examples = f" (e.g. {', '.join(f.examples[:4])})" if f.examples else ""
    limits = f"thresholds {_pct(t.factual_rows)} of replies, {_pct(t.fact_tokens)} of words"
    if out["factual"]:
        say(
            f"{_pct(f.rows_with_new_facts)} of replies contain names, numbers or dates that are not in their input"
            f"{examples}; they are {_pct(f.new_fact_share)} of reply words ({limits}): those facts would have to "
            "be memorised, and RAG fits",
            "rag",
        )
    else:
        say(
            f"{_pct(f.rows_with_new_facts)} of replies bring names, numbers or dates that their input lacks "
            f"({limits}): little to memorise",
            "fine-tune",
        )
    # Words from a shared vocabulary make a transformation only with the input's own words, or without
    # new facts (a label set: classification); around facts they are just the sentence frame.
    out["transformation"] = f.derivable_share >= t.transformation and (f.copied_share >= t.copied or not out["factual"])
    if out["transformation"]:
        parts = f"input ({_pct(f.copied_share)}) or from the replies' shared vocabulary ({_pct(f.recurring_share)}"
        kind = "a transformation" if f.copied_share >= t.copied else "a choice among recurring labels and phrases"
        say(
            f"{_pct(f.derivable_share)} of reply words are copied from the {parts}; thresholds "
            f"{_pct(t.transformation)}, {_pct(t.copied)} from the input): the task is {kind}, and fine-tuning fits",
            "fine-tune",
        )
    drifting = v.repeated_inputs > 0 and v.drift >= t.drift
    out["facts_change"] = drifting
    if drifting:
        say(
            f"{_pct(v.drift)} of the inputs that occur more than once got different replies ({v.changed_inputs} "
            f"of {v.repeated_inputs}; threshold {_pct(t.drift)}): the answers change, and facts that change "
            "belong in retrieval, not in weights, so RAG fits",
            "rag",
        )
    cpm = answers.get("changes_per_month")
    cpm_source = "as given"
    if cpm is None and v.changes_per_month is not None:
        cpm = v.changes_per_month
        cpm_source = f"{v.answer_changes} answer changes between {v.first_date} and {v.last_date} in the data"
    out["volatile"] = cpm is not None and cpm >= t.changes_per_month
    if cpm is not None:
        points = "fine-tune"
        if out["volatile"]:
            points = "rag" if out["factual"] or drifting else "prompting"
        word = "at or above" if out["volatile"] else "below"
        then = "a fine-tune would need retraining that often" if out["volatile"] else "weights would stay current"
        say(
            f"{cpm:.1f} changes per month ({cpm_source}), {word} the threshold of {t.changes_per_month:g}: {then}",
            points,
        )
    out["enough"] = s.unique >= t.min_examples
    out["plenty"] = s.unique >= t.full_examples
    need = f"{s.unique} unique examples (of {s.examples}); fine-tuning wants at least {t.min_examples}"
    if out["enough"]:
        say(f"{need}, full fine-tuning {t.full_examples}", "fine-tune")
    else:
        say(f"{need}: good data is scarce, so fine-tuning loses", "prompting")
    if s.rarest_label is not None and s.rarest_label_count is not None and s.rarest_label_count < t.min_label_examples:
        say(
            f"the rarest label, {s.rarest_label}, has {s.rarest_label_count} examples (threshold "
            f"{t.min_label_examples}): collect more of it before relying on a fine-tune for it",
            "caveat",
        )
    if s.test_label_coverage is not None and s.test_label_coverage < 1.0:
        say(f"{_pct(1 - s.test_label_coverage)} of the test labels never occur in the training data", "caveat")
    if s.test_word_coverage is not None:
        say(
            f"{_pct(s.test_word_coverage)} of the distinct words in the test inputs occur in the training inputs",
            "caveat",
        )
    out["heavy"] = False
    rpm, pt = answers.get("requests_per_month"), answers.get("prompt_tokens")
    if rpm and pt:
        tokens = rpm * pt
        price = answers.get("price_per_1k_input_tokens") or econ.DEFAULT_PRICE_PER_1K_INPUT_TOKENS
        out["heavy"] = tokens >= t.heavy_tokens_per_month
        volume = (
            f"{rpm:,.0f} requests/month x {pt:,.0f} prompt tokens of instructions and examples = "
            f"{tokens / 1e6:,.1f}M tokens/month ({tokens / 1000 * price:,.2f}/month at {price:g} per 1k; "
            f"threshold {t.heavy_tokens_per_month / 1e6:,.0f}M)"
        )
        if out["heavy"]:
            say(f"{volume}: at this scale prompt tokens cost more than training, so fine-tuning fits", "fine-tune")
        else:
            say(f"{volume}: prompt overhead is cheap at this scale", "prompting")
    return out


def decide(e: dict[str, Any]) -> str:
    """The rules of the module docstring, in order."""
    if e["factual"] or e["facts_change"]:
        # Facts belong in retrieval; a consistent format on top of them is still the fine-tune's job.
        return "lora+rag" if e["consistent"] and e["enough"] else "rag"
    if e["volatile"]:
        return "prompting"
    if e["consistent"] or e["transformation"]:
        if not e["enough"]:
            return "prompting"
        return "full" if e["plenty"] else "lora"
    return "lora" if e["heavy"] and e["enough"] else "prompting"


def _fits(rec: str) -> list[str]:
    return [FITS[p] for p in rec.split("+")]


def read_bakeoff(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "bakeoff.json" if Path(folder).is_dir() else Path(folder)
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(result["methods"], dict) or not isinstance(result["prices"], dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"--from-bakeoff {folder}: no readable bakeoff.json there (run `tunesmith bakeoff`)") from None
    return result


def from_bakeoff(folder: Path, answers: dict[str, Any]) -> tuple[str, list[Reason], dict[str, Any]]:
    """The measured winner, re-ranked with the user's traffic when given, and the reasons in numbers."""
    from tunesmith.decide.rank import rank_methods
    from tunesmith.decide.report import best_baseline, requests_text
    from tunesmith.eval import scoring

    result = read_bakeoff(folder)
    methods, prices = result["methods"], result["prices"]
    if not methods:
        raise UserError(f"--from-bakeoff {folder}: the bakeoff has no measured method")
    rpm = answers.get("requests_per_month") or prices.get("requests_per_month")
    price = answers.get("price_per_1k_input_tokens") or prices["price_per_1k_input_tokens"]
    scale = 100.0 if result.get("quality_metric") == "chrf" else 1.0
    items = [
        {
            "name": n,
            "quality": r["quality"],
            "prompt_tokens_per_request": r["prompt_tokens_per_request"],
            "training_cost": r["training_cost"],
        }
        for n, r in methods.items()
    ]
    metric = scoring.metric_name(result.get("quality_metric"))
    ranking = rank_methods(
        items, quality_scale=scale, price_per_1k_input_tokens=price, requests_per_month=rpm, metric=metric
    )
    winner = ranking["winner"]
    if winner is None:
        raise UserError(f"--from-bakeoff {folder}: no method could be scored")
    q = result.get("quality_label") or "quality"
    reasons = [Reason(f"measured in the bakeoff ({result['rows']} test rows): {ranking['reason']}", "measured")]
    for n in ranking["order"]:
        r = methods[n]
        value = "–" if r["quality"] is None else (f"{r['quality']:.1f}" if scale != 1 else _pct(r["quality"]))
        tokens = r["prompt_tokens_per_request"]
        reasons.append(Reason(f"{r['label']}: {q} {value}, {tokens:,.0f} prompt tokens per request", "measured"))
    base = best_baseline(result)
    w = methods[winner]
    if w.get("training") and base:
        be = econ.break_even_requests(
            w["training_cost"] or 0.0,
            methods[base]["prompt_tokens_per_request"] - w["prompt_tokens_per_request"],
            price,
        )
        months = econ.break_even_months(be, rpm)
        when = f" ({months:.1f} months at {rpm:,.0f} requests/month)" if months is not None else ""
        reasons.append(
            Reason(
                f"its training cost {w['training_cost'] or 0:,.2f} ({w['training']['seconds'] or 0:,.0f} s) is paid "
                f"back by shorter prompts than {base} after {requests_text(be)} requests{when}",
                "measured",
            )
        )
    for n, why in result.get("skipped", {}).items():
        reasons.append(Reason(f"{n} was not measured: {why}", "caveat"))
    return FROM_METHOD[winner], reasons, {"folder": str(folder), "ranking": ranking}


def advise(
    train: Path,
    *,
    test: Path | None = None,
    thresholds: Thresholds | None = None,
    changes_per_month: float | None = None,
    requests_per_month: float | None = None,
    prompt_tokens: float | None = None,
    price_per_1k_input_tokens: float | None = None,
    bakeoff: Path | None = None,
) -> Advice:
    from tunesmith.data.formats import read_examples

    t = thresholds or Thresholds()
    pairs = an.pairs_of(read_examples(train).examples)
    if not pairs:
        raise UserError(f"{train}: no example ends on an assistant reply to analyse")
    test_pairs = None
    if test is not None:
        from tunesmith.eval.rows import load_rows  # (imports torch: only when there is test data)

        test_pairs = [(r.prompt[-1]["content"], r.reference) for r in load_rows(test) if r.reference is not None]
    analysis = an.analyse(pairs, test_pairs)
    answers = {
        "changes_per_month": changes_per_month,
        "requests_per_month": requests_per_month,
        "prompt_tokens": prompt_tokens,
        "price_per_1k_input_tokens": price_per_1k_input_tokens,
    }
    e = evidence(analysis, t, answers)
    reasons: list[Reason] = e["reasons"]
    measured, verdict = None, None
    rec = decide(e)
    if bakeoff is not None:
        rec_measured, measured_reasons, measured = from_bakeoff(bakeoff, answers)
        verdict = _facts_verdict(train, read_bakeoff(bakeoff), changes_per_month, measured_reasons)
        if verdict is not None and verdict.method:
            rec_measured = verdict.method
        elif verdict is not None and rec_measured == "lora+rag":  # it ranked first, but not on facts with the voice
            others = [n for n in measured["ranking"]["order"] if n != "lora+rag"]
            rec_measured = FROM_METHOD[others[0]] if others else rec_measured
        if rec_measured != rec:
            reasons.append(Reason(f"the data alone points to {NAMES[rec]}; the measurement decides", "caveat"))
        if rec_measured in ("lora", "full") and (e["factual"] or e["facts_change"]) and verdict is None:
            reasons.append(Reason("the replies carry facts: add RAG for those, or retrain when they change", "caveat"))
        rec = rec_measured
        reasons = measured_reasons + reasons
    fits = _fits(rec)
    lead = "measured winner" if bakeoff is not None else "recommendation"
    summary = f"{lead}: {NAMES[rec]} ({' and '.join(fits)})"
    if verdict is not None:
        summary = f"{lead}: {verdict.line}" if verdict.method else f"{summary}; {verdict.line}"
    evidence_out = verdict.evidence if verdict is not None else None
    return Advice(rec, summary, fits, reasons, analysis.as_dict(), asdict(t), measured, evidence_out)


def _facts_verdict(train: Path, result: dict[str, Any], changes_per_month: float | None, reasons: list[Reason]) -> Any:
    """decide/verdict.py's verdict when the facts change (as the user says, or as the docs show), else None."""
    from tunesmith.decide.verdict import facts_verdict

    why = []
    if changes_per_month:
        why.append(f"{changes_per_month:g} changes per month, as given")
    stale = _stale_rows(train, (result.get("docs") or {}).get("folder"))
    if stale:
        why.append(f"the docs contradict {stale} training replies (`tunesmith check --docs` lists them)")
    if not why:
        return None
    methods = ",".join(dict.fromkeys([*result.get("methods_requested", []), "lora+rag"]))
    docs = (result.get("docs") or {}).get("folder") or "DOCS"
    rerun = f"`tunesmith bakeoff --train {train} --test {result.get('test')} --docs {docs} --methods {methods}`"
    verdict = facts_verdict(result, "; ".join(why), rerun)
    reasons.insert(0, Reason(f"facts change: {'; '.join(why)}", "measured"))
    return verdict


def _stale_rows(train: Path, docs: str | None) -> int:
    """How many training replies state facts the docs do not (the drift check), or 0 without docs."""
    if not docs or not Path(docs).is_dir():
        return 0
    from tunesmith.data.formats import read_examples
    from tunesmith.decide.retrieval import load_docs
    from tunesmith.eval.facts import stale_replies

    chunks = load_docs(Path(docs)).chunks
    if not chunks:
        return 0
    return sum(bool(c) for c in stale_replies(read_examples(train).examples, [c.text for c in chunks]))


def render_text(advice: Advice) -> str:
    lines = [advice.summary[0].upper() + advice.summary[1:], "", "Because:"]
    order = {"measured": 0, "rag": 1, "fine-tune": 1, "prompting": 1, "caveat": 2}
    for r in sorted(advice.reasons, key=lambda r: order.get(r.points_to, 1)):
        lines.append(f"  - [{r.points_to}] {r.text}")
    return "\n".join(lines)
