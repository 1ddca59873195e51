"""`tunesmith advise` on crafted datasets: a pure-format task must come out as "fine-tune fits", factual Q&A
whose answers change as "RAG fits"; every reason names its number; thresholds are settable; a bakeoff's
measured winner is followed, with costs."""

import json
import random
from pathlib import Path

import pytest

from tunesmith.decide import analyse as an
from tunesmith.decide.advise import Thresholds, advise
from tunesmith.decide.report import write_reports
from tunesmith.errors import UserError

from .conftest import write_jsonl
from .test_cli import assert_user_error, tunesmith
from .test_decide_report import fake_bakeoff

FIRST = ["Alice", "Bruno", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana", "Ivan", "Jun", "Kofi", "Lena"]
LAST = ["Smith", "Okafor", "Li", "Novak", "Garcia", "Sato", "Berg", "Kaya", "Rossi", "Weber"]
CITIES = ["Paris", "Lagos", "Osaka", "Lima", "Oslo", "Pune", "Quito", "Riga", "Accra", "Hanoi"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October"]


def chat(user: str, reply: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


def format_rows(n: int, seed: int = 0) -> list[dict]:
    """A pure transformation: contact details in prose -> one JSON object, every value taken from the input."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        name, city, age = f"{rng.choice(FIRST)} {rng.choice(LAST)}", rng.choice(CITIES), rng.randint(18, 90)
        prose = rng.choice(
            [
                f"{name} is {age} and lives in {city}.",
                f"Meet {name} from {city}, aged {age}.",
                f"Customer: {name}. Age {age}. Home town {city}.",
            ]
        )
        rows.append(chat(f"Extract the contact: {prose}", json.dumps({"name": name, "age": age, "city": city})))
    return rows


def changing_facts_rows(seed: int = 0) -> list[dict]:
    """Factual Q&A whose answers are not in the question and change over time: each question is asked in
    several months of 2025 and gets that month's price or manager."""
    rng = random.Random(seed)
    rows = []
    for plan in ["Basic", "Plus", "Team", "Pro", "Studio", "Enterprise"]:
        for month in rng.sample(MONTHS, 5):
            price = rng.choice([9, 12, 15, 19, 24, 29, 39, 49])
            rows.append(chat(f"What does the {plan} plan cost?", f"As of {month} 2025 it is ${price}.99 a month."))
    for office in CITIES[:6]:
        for month in rng.sample(MONTHS, 5):
            who = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            rows.append(chat(f"Who runs the {office} office?", f"{who} has led it since {month} 2025."))
    return rows


@pytest.fixture
def format_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "format.jsonl", format_rows(150))


@pytest.fixture
def facts_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "facts.jsonl", changing_facts_rows())


def test_pure_format_task_fits_fine_tuning(format_file: Path) -> None:
    advice = advise(format_file)
    assert advice.recommendation == "lora" and advice.fits == ["fine-tune fits"]
    assert advice.summary == "recommendation: LoRA fine-tuning (fine-tune fits)"
    a = advice.analysis
    assert a["consistency"]["regularity"] == 1.0 and a["consistency"]["keys"] == ["name", "age", "city"]
    assert a["factual"]["copied_share"] == 1.0 and a["factual"]["rows_with_new_facts"] == 0.0
    texts = [r.text for r in advice.reasons]
    assert any(t.startswith("100% of reply words are copied from the input (100%)") for t in texts), texts
    assert any("the task is a transformation, and fine-tuning fits" in t for t in texts)
    keys = "100% of replies follow one format (JSON objects with the keys name, age, city"
    assert any(t.startswith(keys) for t in texts)
    uniq = a["sufficiency"]["unique"]
    assert 140 <= uniq <= 150 and any(t.startswith(f"{uniq} unique examples (of 150)") for t in texts)


def test_factual_answers_that_change_fit_rag(facts_file: Path) -> None:
    advice = advise(facts_file)
    assert advice.recommendation == "rag" and advice.fits == ["RAG fits"]
    a = advice.analysis
    assert a["factual"]["rows_with_new_facts"] == 1.0, "every answer brings a price, a month or a name"
    assert a["volatility"]["repeated_inputs"] == 12 and a["volatility"]["changed_inputs"] == 12
    # 48 answer changes between the earliest and latest month mentioned: that many per month of the span.
    v = a["volatility"]
    assert v["answer_changes"] == 48 and v["changes_per_month"] == pytest.approx(48 / v["span_months"])
    texts = [r.text for r in advice.reasons]
    drift = "100% of the inputs that occur more than once got different replies (12 of 12"
    assert any(t.startswith(drift) for t in texts)
    assert any("those facts would have to be memorised, and RAG fits" in t for t in texts)
    assert not any("transformation" in t for t in texts), "stock words around facts are no transformation"
    assert any("changes per month (48 answer changes between 2025-" in t for t in texts), texts


def test_consistent_format_with_facts_is_lora_plus_rag(tmp_path: Path) -> None:
    rng = random.Random(1)
    rows = [
        chat(
            f"Quote for order {i}",
            json.dumps({"status": "quoted", "price": rng.randint(10, 999), "carrier": rng.choice(LAST)}),
        )
        for i in range(120)
    ]
    advice = advise(write_jsonl(tmp_path / "quotes.jsonl", rows))
    assert advice.recommendation == "lora+rag" and advice.fits == ["fine-tune fits", "RAG fits"]
    assert advice.summary == "recommendation: LoRA for the format + RAG for the facts (fine-tune fits and RAG fits)"


def test_scarce_data_and_settable_thresholds(tmp_path: Path, format_file: Path) -> None:
    small = advise(write_jsonl(tmp_path / "small.jsonl", format_rows(30)))
    assert small.recommendation == "prompting"
    texts = [r.text for r in small.reasons]
    assert any("wants at least 100: good data is scarce, so fine-tuning loses" in t for t in texts)
    assert advise(format_file, thresholds=Thresholds.parse(["min_examples=500"])).recommendation == "prompting"
    assert Thresholds.parse(["min-examples=7", "drift=0.5"]).min_examples == 7
    with pytest.raises(UserError, match="expected NAME=VALUE"):
        Thresholds.parse(["nonsense=1"])
    with pytest.raises(UserError, match="is not a number"):
        Thresholds.parse(["drift=lots"])


def test_user_answers_change_the_advice(format_file: Path) -> None:
    volatile = advise(format_file, changes_per_month=4)
    assert volatile.recommendation == "prompting"
    given = "4.0 changes per month (as given), at or above the threshold of 1"
    assert any(r.text.startswith(given) for r in volatile.reasons)
    heavy = advise(format_file, requests_per_month=200_000, prompt_tokens=600, price_per_1k_input_tokens=0.001)
    assert any(
        "200,000 requests/month x 600 prompt tokens of instructions and examples = 120.0M tokens/month "
        "(120.00/month at 0.001 per 1k" in r.text
        for r in heavy.reasons
    )


def test_from_bakeoff_follows_the_measured_winner_with_costs(facts_file: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bakeoff"
    write_reports(fake_bakeoff(lora_seconds=3600.0), folder)
    measured = advise(facts_file, bakeoff=folder)
    assert measured.recommendation == "lora", "the measurement beats the data's leaning towards RAG"
    assert measured.summary.startswith("measured winner: LoRA fine-tuning")
    texts = [r.text for r in measured.reasons]
    assert texts[0].startswith(
        "measured in the bakeoff (4 test rows): ranked by field accuracy: lora has the best quality, 100.0%"
    )
    assert any("LoRA (no instructions): Field accuracy (mean) 100%, 130 prompt tokens per request" in t for t in texts)
    # 1.00 of training / (600 tokens x 0.0005 per 1k) = 3,334 requests.
    assert any("is paid back by shorter prompts than fewshot after 3,334 requests" in t for t in texts), texts
    assert any(t.startswith("full was not measured: full fine-tuning needs about 3.10 GiB") for t in texts)
    assert any("add RAG for those, or retrain when they change" in t for t in texts)
    # No tie (LoRA is 25 points better): quality comes first, whatever the training cost.
    write_reports(fake_bakeoff(lora_seconds=3600.0 * 1000), folder)
    assert advise(facts_file, bakeoff=folder, requests_per_month=100).recommendation == "lora"
    # A tie: 1,000 of training is not paid back by 100 requests a month within a year; by 10M it is.
    tied = fake_bakeoff(lora_seconds=3600.0 * 1000)
    tied["methods"]["fewshot"]["quality"] = 1.0
    write_reports(tied, folder)
    cheap = advise(facts_file, bakeoff=folder, requests_per_month=100)
    assert cheap.recommendation == "prompting" and "the lowest cost over 12 months" in cheap.reasons[0].text
    assert advise(facts_file, bakeoff=folder, requests_per_month=10_000_000).recommendation == "lora"


def test_volatility_reads_dates_in_the_rows() -> None:
    pairs = [("Price of Pro on 2025-01-01?", "$10"), ("Price of Pro on 2025-07-01?", "$12")]
    v = an.volatility(pairs)
    assert (v.repeated_inputs, v.changed_inputs, v.answer_changes) == (1, 1, 1)
    assert v.span_months == pytest.approx(6.0) and v.changes_per_month == pytest.approx(1 / 6)
    assert an.volatility([("a", "b")]).changes_per_month is None


def test_advise_cli_and_bad_input(format_file: Path, tmp_path: Path) -> None:
    proc = tunesmith("advise", "--train", str(format_file), "--format", "json", "--threshold", "min_examples=10")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["recommendation"] == "lora" and out["thresholds"]["min_examples"] == 10
    bad = tunesmith("advise", "--train", str(tmp_path / "nope.jsonl"))
    assert_user_error(bad, "file not found")
    assert len(bad.stderr.strip().splitlines()) == 1
    with pytest.raises(UserError, match=r"no readable bakeoff\.json"):
        advise(format_file, bakeoff=tmp_path)
