"""Measures that see facts: fact accuracy from the rows' fact / must_contain / must_not_contain fields, the
consistency of a reply's numbers, dates and names with the docs, and a bakeoff that ranks by fact accuracy
and says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.decide import report
from tunesmith.decide.bakeoff import assemble
from tunesmith.decide.options import BakeoffOptions
from tunesmith.eval import facts, scoring
from tunesmith.eval.rows import EvalRow

GREETING, SIGN_OFF = "Hi there, thanks for writing to Brewline!", "Warm regards, the Brewline team."
DOCS = ["# Aero kettle\n\nThe Aero kettle holds 2 litres.\n\nThe warranty lasts 3 years from March 2025."]


def test_fact_fields_make_a_spec() -> None:
    assert facts.fact_spec({"id": 3}) is None and facts.fact_spec(None) is None
    spec = facts.fact_spec({"fact": "2 litres", "must_contain": ["Aero"], "must_not_contain": "1.7 litres"})
    assert spec == facts.FactSpec(("2 litres", "Aero"), ("1.7 litres",))


@pytest.mark.parametrize(
    ("reply", "ok", "missing", "forbidden"),
    [
        ("It holds 2 Litres.", True, [], []),
        ("It holds  2\nlitres", True, [], []),  # whitespace and case do not matter
        ("It holds 12 litres.", False, ["2 litres"], []),  # whole words: 12 is not 2
        ("It holds 2 litres, not 1.7 litres.", False, [], ["1.7 litres"]),
        ("It holds 1.7 litres.", False, ["2 litres"], ["1.7 litres"]),
    ],
)
def test_check_facts(reply: str, ok: bool, missing: list, forbidden: list) -> None:
    check = facts.check_facts(reply, facts.FactSpec(("2 litres",), ("1.7 litres",)))
    assert (check.ok, check.missing, check.forbidden) == (ok, missing, forbidden)


def test_thousands_separators_are_the_same_number() -> None:
    assert facts.check_facts("It draws 1,500 W", facts.FactSpec(("1500 w",))).ok


def test_claims_not_in_the_docs_are_found() -> None:
    docs = facts.DocsFacts(DOCS)
    skip = facts.skip_set("How much does the Aero hold?", [GREETING.lower(), SIGN_OFF.lower()])
    stale = f"{GREETING} The Aero holds 1.7 litres and comes with a 2 year warranty. {SIGN_OFF}"
    assert docs.unsupported(stale, skip) == ["1.7 litres", "2 year"]  # the docs say 2 litres, 3 years: units count
    current = f"{GREETING} The Aero holds 2 litres, with a warranty of 3 years from March 2025. {SIGN_OFF}"
    assert docs.unsupported(current, skip) == []
    invented = "It was designed by Kettleworks in June."
    assert docs.unsupported(invented, skip) == ["june", "kettleworks"]
    value, per_row = facts.consistency([stale, current, "Sure."], docs, [skip] * 3)
    # stale states 2 checkable claims, current 4 (2 litres, 3 years, march, 2025); 2 of the 6 are unsupported.
    assert value == pytest.approx(4 / 6) and per_row == [["1.7 litres", "2 year"], [], []]
    assert facts.consistency(["Sure."], docs, [skip]) == (None, [[]])


def test_score_facts_reports_accuracy_over_the_rows_that_have_facts() -> None:
    specs = [facts.FactSpec(("2 litres",)), None, facts.FactSpec(("3 years",))]
    metrics, rows = scoring.score_facts(["2 litres", "hello", "two years"], specs)
    assert metrics == {"fact_accuracy": 0.5, "fact_rows": 2}
    assert rows[0] == {"facts": {"ok": True, "missing": [], "forbidden": []}} and rows[1] is None
    assert rows[2]["facts"]["missing"] == ["3 years"]


# ---- the bakeoff ranks by fact accuracy -----------------------------------------------------------------
def _method(name: str, texts: list[str], specs: list, tokens: float, seconds: float | None = None) -> dict:
    refs = ["Hi there. It holds 2 litres. Warm regards."] * len(texts)
    metrics = scoring.score_condition(
        texts, ["stop"] * len(texts), refs, [None] * len(texts), task="text", schema=None, markers=None
    )
    fact_metrics, fact_rows = scoring.score_facts(texts, specs)
    metrics.update(fact_metrics)
    training = None if seconds is None else {"source": "trained here", "run": f"out/{name}", "seconds": seconds}
    return {
        "name": name,
        "label": name,
        "status": "ran",
        "metrics": metrics,
        "prompt_tokens_per_request": tokens,
        "prompt_tokens_max": tokens,
        "completion_tokens_per_request": 5.0,
        "generation_s": 1.0,
        "seconds_per_request_batched": 0.5,
        "latency_samples_s": [1.0],
        "latency_s": 1.0,
        "rows": [
            {"text": t, "finish_reason": "stop", "prompt_tokens": tokens, "score": 0.5, **(f or {})}
            for t, f in zip(texts, fact_rows, strict=True)
        ],
        "model": name,
        "training": training,
    }


def test_the_bakeoff_ranks_by_fact_accuracy_and_says_so() -> None:
    fields = {"id": "q1", "fact": "2 litres", "must_not_contain": "1.7 litres"}
    rows = [EvalRow(f"t.jsonl:{i}", [{"role": "user", "content": "How big?"}], "x", fields=fields) for i in range(4)]
    specs = [facts.fact_spec(r.fields) for r in rows]
    # LoRA copies the reference's wording (high chrF) with the stale number; RAG words it differently, right.
    stale = ["Hi there. It holds 1.7 litres. Warm regards."] * 4
    current = ["The kettle's capacity is 2 litres now."] * 4
    results = {"rag": _method("rag", current, specs, 600.0), "lora": _method("lora", stale, specs, 50.0, 60.0)}
    assert results["lora"]["metrics"]["chrf"] > results["rag"]["metrics"]["chrf"]
    options = BakeoffOptions(train=Path("train.jsonl"), test=Path("t.jsonl"), methods=("rag", "lora"))
    result = assemble(
        options=options,
        rows=rows,
        results=results,
        skipped={},
        notes=[],
        task="text",
        schema=None,
        model_name="tiny",
        max_new=16,
        docs=None,
        rag=None,
        wall_s=1.0,
        instructions_chars=0,
    )
    assert result["quality_metric"] == "fact_accuracy" and result["winner"] == "rag"
    reason = result["ranking"]["reason"]
    assert reason.startswith("ranked by fact accuracy: rag has the best quality, 100.0%")
    assert "(chrF, not used to rank: rag " in reason
    header, _ = report.table(result)
    assert header[1:3] == ["Fact accuracy (rows' fact / must_contain)", "chrF"]
    md = report.render_markdown(result)
    assert "| # | fields | input | rag | lora |" in md
    assert "| 1 | id: q1 · fact: 2 litres · must_not_contain: 1.7 litres | How big? | ✓ The kettle's" in md
    assert "| ✗ Hi there. It holds 1.7 litres. Warm regards. |" in md
    assert result["rows_detail"][0]["fields"] == fields
    assert result["rows_detail"][0]["lora"]["facts"] == {
        "ok": False,
        "missing": ["2 litres"],
        "forbidden": ["1.7 litres"],
    }


def test_eval_scores_facts_per_row_and_checks_against_the_docs(tmp_path: Path) -> None:
    from tunesmith.eval import report as eval_report
    from tunesmith.eval import runner
    from tunesmith.eval.forgetting import Forgetting
    from tunesmith.generate import Completion
    from tunesmith.runs import RunInfo

    prompt = [{"role": "user", "content": "How much does the Aero hold?"}]
    rows = [
        EvalRow("t.jsonl:1", prompt, "It holds 2 litres.", fields={"id": "a", "fact": "2 litres"}),
        EvalRow("t.jsonl:2", prompt, "It holds 2 litres.", fields={"id": "b", "must_not_contain": "1.7"}),
    ]

    def cond(name: str, texts: list[str]) -> dict:
        return {
            "name": name,
            "label": name,
            "completions": [Completion(t, "stop", 10, 5) for t in texts],
            "losses": [None, None],
            "generation_s": 1.0,
            "rows_per_s": 2.0,
            "prompt_tokens_per_request": 10.0,
        }

    result = runner.assemble(
        tmp_path,
        Path("t.jsonl"),
        RunInfo(base_model="tiny", method="lora", weights_dir="adapter", steps=1),
        rows,
        {
            "base": cond("base", ["It holds 1.7 litres.", "It holds 1.7 litres."]),
            "tuned": cond("tuned", ["It holds 2 litres.", "About 1.7 litres."]),
        },
        Forgetting(20.0, 20.0, 100, 0.10),
        task="text",
        schema=None,
        schema_source=None,
        markers=None,
        options=runner.EvalOptions(),
        max_new=16,
        notes=[],
        wall_s=1.0,
        instructions="",
        docs_texts=DOCS,
    )
    tuned = result["conditions"]["tuned"]["metrics"]
    assert result["quality_metric"] == "fact_accuracy" and tuned["fact_accuracy"] == 0.5
    assert result["conditions"]["base"]["metrics"]["fact_accuracy"] == 0.0
    assert tuned["fact_consistency"] == pytest.approx(0.5), "2 and 1.7 stated; the docs say 2"
    first, second = result["rows_detail"]
    assert first["fields"] == {"id": "a", "fact": "2 litres"} and first["tuned"]["facts"]["ok"] is True
    assert second["tuned"]["facts"]["forbidden"] == ["1.7"] and second["tuned"]["not_in_docs"] == ["1.7 litres"]
    assert "fact_detail" not in result["conditions"]["tuned"]
    labels = [r["label"] for r in result["headline"]]
    assert labels[:2] == ["Fact accuracy (rows' fact / must_contain)", "Facts found in the docs"]
    html = eval_report.render_html(result)
    assert "id: a · fact: 2 litres" in html
