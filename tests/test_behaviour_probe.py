"""The behavioural forgetting probe: the matcher, the shipped set, scoring with real generation on tiny models,
the threshold, and the reports with and without the probe's result."""

from pathlib import Path

import pytest
import torch

from tunesmith.eval import behaviour as bh
from tunesmith.eval import forgetting, report
from tunesmith.models.load import load_model

from .test_eval_report import fake_result


def test_matcher_is_whole_words_case_and_punctuation_blind() -> None:
    assert bh.answered("The capital of France is PARIS.", ["Paris"])
    assert bh.answered("D-O-G", ["d o g"]) and bh.answered("It is 1,000 grams", ["1,000"])
    assert bh.answered("**Answer:** carbon-dioxide", ["carbon dioxide"])
    assert not bh.answered("14", ["4"]), "a number inside another is not the answer"
    assert not bh.answered("Parisian food", ["Paris"]) and not bh.answered("", ["Paris"])
    assert not bh.answered("anything at all", ["", "!!"]), "an answer that normalizes to nothing never matches"
    assert bh.normalize("  Ça  va?\tOUI ") == "ça va oui"
    # Gemma 3 270M (a base model) echoes questions with a word swapped: a question is never an answer.
    assert not bh.answered("What is the opposite of cold? Answer in one word.\n\n### assistant:", ["cold"])
    assert bh.answered("Is it cold? It is cold.", ["cold"]) and bh.answered("Paris? Paris!", ["paris"])


def test_shipped_set_is_packaged_and_checkable() -> None:
    items = bh.load_items()
    assert 30 <= len(items) <= 60
    assert len({it.prompt for it in items}) == len(items)
    for it in items:
        assert it.answers and all(bh.normalize(a) for a in it.answers)
        assert not bh.answered(it.prompt, it.answers), f"an echo of the question would score: {it.prompt}"
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"examples/*.json"' in pyproject, "the set ships in the wheel"


def test_drop_threshold_and_aggregation() -> None:
    items = [bh.Item(f"q{i}", ("a",)) for i in range(10)]
    base = [True] * 10
    lose = lambda n: [i >= n for i in range(10)]  # noqa: E731 - tuned loses the first n base-right items
    one = bh.Behaviour(items, base, lose(1), 0.10)
    assert one.kept == 9 and one.drop == pytest.approx(0.1) and not one.regressed, "at the threshold: ok"
    two = bh.Behaviour(items, base, lose(2), 0.10)
    assert two.drop == pytest.approx(0.2) and two.regressed
    assert not bh.Behaviour(items, base, lose(2), 0.25).regressed, "the threshold is settable"
    # Only items the base got right count: the tuned model gains nothing by answering what base missed.
    half = [i < 5 for i in range(10)]
    mixed = bh.Behaviour(items, half, [not x for x in half], 0.10)
    d = mixed.as_dict()
    assert (d["base_correct"], d["tuned_correct_of_those"], d["tuned_correct"]) == (5, 0, 5)
    assert d["drop"] == 1.0 and d["regressed"] and [x["prompt"] for x in d["lost"]] == ["q0", "q1", "q2", "q3", "q4"]
    few = [i < 4 for i in range(10)]  # a base that answers 4: one lost is 25 points, yet only one answer
    assert not bh.Behaviour(items, few, [i < 3 for i in range(10)], 0.10).regressed, "one lost answer is noise"
    assert bh.Behaviour(items, few, [i < 2 for i in range(10)], 0.10).regressed
    none = bh.Behaviour(items, [False] * 10, [True] * 10, 0.0)
    assert none.drop == 0.0 and not none.regressed, "a base that answers nothing cannot be forgotten"
    assert "nothing to keep" in bh.summary(none.as_dict())


@pytest.fixture(scope="module")
def tiny_pair(tiny_model_dir: Path):
    """Two tiny Llamas with different random weights, drawn wide enough that greedy decoding writes words
    (the saved tiny model's small init only writes newlines): two models that answer differently."""
    models = []
    for seed in (1, 2):
        model, tok, _ = load_model(str(tiny_model_dir))
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.5)
        models.append(model)
    return models[0], models[1], tok


def test_scoring_with_real_generation(tiny_pair) -> None:
    base, other, tok = tiny_pair
    prompts = [bh.Item(f"Say something about {w}.", ("placeholder",)) for w in ("cats", "rain", "maps", "tea")]
    said = bh.replies(base, tok, prompts)
    # Items whose accepted answer is exactly what the tiny base generates: base is right on each by construction.
    items = [bh.Item(it.prompt, (text,)) for it, text in zip(prompts, said, strict=True)]
    assert all(bh.normalize(t) for t in said), "the tiny model writes words the matcher can see"
    base_reading = forgetting.probe(base, tok, items)
    same = forgetting.compare(base_reading, forgetting.probe(base, tok, items), items=items)
    assert same.behaviour is not None and same.behaviour.as_dict()["base_correct"] == len(items)
    assert same.behaviour.drop == 0.0 and not same.behaviour.regressed, "base against itself loses nothing"
    changed = forgetting.compare(base_reading, forgetting.probe(other, tok, items), 0.10, 0.5, items=items)
    d = changed.as_dict()
    assert d["behaviour"]["tuned_correct_of_those"] == 0 and d["behaviour"]["regressed"]
    said = bh.replies(other, tok, items)
    assert [x["reply"] for x in d["behaviour"]["lost"]] == said[: bh.LOST_SHOWN], "what tuned said instead"
    assert d["behaviour"]["threshold"] == 0.5 and d["threshold"] == 0.10, "both thresholds travel separately"
    assert d["base_perplexity"] == base_reading.perplexity and d["regressed"] == (d["change"] > 0.10)


def _with_behaviour(result: dict, regressed: bool) -> dict:
    items = [bh.Item(f"What is {i} + 1?", (str(i + 1),)) for i in range(8)]
    tuned = [i >= (3 if regressed else 0) for i in range(8)]
    b = bh.Behaviour(items, [True] * 8, tuned, 0.10, [f'{{"category": "{i}"}}' for i in range(8)])
    result["forgetting"] = forgetting.Forgetting(20.0, 21.0, 3000, 0.10, b).as_dict()
    return result


def test_reports_show_the_probe_and_still_render_old_results(tmp_path: Path, capsys, monkeypatch) -> None:
    old = fake_result(tmp_path / "run")
    assert "behaviour" not in old["forgetting"]
    md, page = report.render_markdown(old), report.render_html(old)
    assert "## Forgetting check" in md and "Everyday questions" not in md and "Everyday questions" not in page

    new = _with_behaviour(fake_result(tmp_path / "run2"), regressed=True)
    md = report.render_markdown(new)
    assert "base answered 8 right and tuned still answers 5 of those (drop 37.5%, threshold 10%): **REGRESSION**" in md
    assert """lost: `What is 0 + 1?` (tuned: `{"category": "0"}`), `What is 1 + 1?` (tuned:""" in md
    page = report.render_html(new)
    assert "tuned still answers 5 of those" in page and "no longer answers some questions" in page
    assert "<q>What is 0 + 1?</q> (tuned: <code>{&#34;category&#34;: &#34;0&#34;}</code>)" in page

    fine = _with_behaviour(fake_result(tmp_path / "run3"), regressed=False)
    assert "(drop 0.0%, threshold 10%): ok." in report.render_markdown(fine)
    monkeypatch.setenv("TUNESMITH_QUIET", "0")
    report.print_headline(fine)
    out = capsys.readouterr().out
    assert "tuned still answers 8 of those" in out and "general-English perplexity" in out
