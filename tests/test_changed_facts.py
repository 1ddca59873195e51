"""Deciding right when facts change (issue 23), end to end on the tiny model and the changed-facts set
(examples/make_changed_facts.py): training with doc context (train --docs), eval's tuned + docs condition,
the lora+rag bakeoff method, the drift check (check --docs) and advise's verdict, both ways."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tunesmith import runs
from tunesmith.data.context import DOCS_HEADER, add_docs_context
from tunesmith.data.formats import read_examples
from tunesmith.decide.advise import advise, render_text
from tunesmith.decide.bakeoff import run_bakeoff
from tunesmith.decide.options import BakeoffOptions
from tunesmith.decide.report import write_reports
from tunesmith.decide.retrieval import DocsIndex
from tunesmith.examples.make_changed_facts import GREETING, write_changed_facts

from .conftest import run_cli

CONFIG = """\
data: {val_split: 0.0, max_len: 384}
lora: {r: 4, alpha: 8}
train: {batch_size: 4, micro_batch_size: 4, learning_rate: 0.005, max_steps: 2}
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = write_changed_facts(tmp_path_factory.mktemp("changed") / "set", n_train=24, n_test=6)
    (out / "train.yaml").write_text(CONFIG)
    return out


def test_the_set_has_a_voice_stale_facts_and_docs_with_the_new_ones(data: Path) -> None:
    test = [json.loads(x) for x in (data / "test.jsonl").read_text().splitlines()]
    assert {r["topic"] for r in test} == {"capacity", "warranty", "temperatures"}
    docs = (data / "docs" / "aero-kettle.md").read_text()
    assert all(r["fact"] in docs and r["must_not_contain"] not in docs for r in test)
    train = (data / "train.jsonl").read_text()
    assert "1.7 litres" in train and "2.2 litres" not in train and train.count(GREETING) == 24


def _stale_rows(convs: list) -> list:
    stale = [c for c in convs if "1.7 litres" in c.messages[-1].content or "2-year" in c.messages[-1].content]
    return stale + [c for c in convs if "4 temperature" in c.messages[-1].content]


def test_stale_rows_drop_leaves_out_the_rows_the_docs_contradict(data: Path) -> None:
    convs = read_examples(data / "train.jsonl").examples
    out, line = add_docs_context(convs, DocsIndex(data / "docs"), 2, stale_rows="drop")
    stale = _stale_rows(convs)
    assert len(stale) == 9 and f"{24 - 9} of 24 training rows get their 2 nearest chunks" in line
    assert "9 replies state facts the docs do not" in line and "those rows are left out" in line
    kept = [c for c in convs if c not in stale]
    assert len(out) == len(kept) == 15, "the rows that teach the old facts are not trained"
    for before, after in zip(kept, out, strict=True):
        assert after.messages[0].role == "system" and DOCS_HEADER in after.messages[0].content
        assert after.messages[1:] == before.messages and after.source == before.source


def test_stale_rows_plain_trains_them_whole_without_context(data: Path) -> None:
    convs = read_examples(data / "train.jsonl").examples
    out, line = add_docs_context(convs, DocsIndex(data / "docs"), 2, stale_rows="plain")
    stale = _stale_rows(convs)
    assert f"{24 - 9} of 24 training rows get their 2 nearest chunks" in line
    assert len(out) == 24 and "train without context" in line and "(--stale-rows plain)" in line
    for before, after in zip(convs, out, strict=True):
        if before in stale:
            assert after is before, "a row the docs contradict trains without context"
        else:
            assert DOCS_HEADER in after.messages[0].content


def test_by_default_stale_rows_train_with_context_but_not_their_stale_facts(data: Path, tiny_model_dir: Path) -> None:
    from tunesmith.data.render import IGNORE, Renderer
    from tunesmith.models.load import load_tokenizer

    convs = read_examples(data / "train.jsonl").examples
    out, line = add_docs_context(convs, DocsIndex(data / "docs"), 2)
    assert "24 of 24 training rows get their 2 nearest chunks" in line
    assert "9 train with context but without those facts' sentences (--stale-rows mask)" in line
    renderer = Renderer(load_tokenizer(str(tiny_model_dir)), max_len=1024)
    tok = renderer.tokenizer
    for before, after in zip(convs, out, strict=True):
        assert DOCS_HEADER in after.messages[0].content and after.messages[1:] == before.messages
        r = renderer.render(after)
        trained = tok.decode([i for i, x in zip(r.input_ids, r.labels, strict=True) if x != IGNORE])
        reply = before.messages[-1].content
        assert GREETING in trained, "the voice is trained on every row"
        if before in _stale_rows(convs):
            assert after.untrained and not any(old in trained for old in ("1.7", "2-year", "4 temperature"))
            sentence = reply[after.untrained[0][0] : after.untrained[0][1]]
            assert sentence.endswith(".") and sentence not in trained
            plain = renderer.render(dataclasses.replace(after, untrained=()))
            assert r.input_ids == plain.input_ids and r.n_trained < plain.n_trained
        else:
            assert not after.untrained and reply.split("!")[-1].strip()[:20] in trained


def test_claim_spans_run_from_the_stale_value_to_the_end_of_its_sentence() -> None:
    from tunesmith.data.span_mask import claim_spans

    text = "Hi! The Aero comes with a 2-year warranty from the date of purchase. Enjoy. Holds 1.7 litres."
    spans = claim_spans(text, ["2 year", "1.7 litres", "not there"])
    assert [text[a:b] for a, b in spans] == ["2-year warranty from the date of purchase.", "1.7 litres."]


def test_when_every_row_is_stale_they_train_plain_rather_than_nothing(data: Path) -> None:
    stale = _stale_rows(read_examples(data / "train.jsonl").examples)
    out, line = add_docs_context(stale, DocsIndex(data / "docs"), 2, stale_rows="drop")
    assert out == stale and "every row is stale, so none is left out" in line


def test_check_docs_lists_the_rows_the_docs_contradict(data: Path, capsys, tiny_model_dir: Path) -> None:
    args = ["check", str(data / "train.jsonl"), "--model", str(tiny_model_dir), "--no-estimate"]
    rc, out, _ = run_cli(capsys, *args, "--docs", str(data / "docs"), "--format", "json")
    stale = [f for f in json.loads(out)["findings"] if f["code"] == "stale-fact"]
    assert rc == 0 and len(stale) == 9 and all(f["severity"] == "warning" for f in stale)
    assert "'1.7 litres'" in stale[0]["message"] and stale[0]["line"] == 1


@pytest.fixture(scope="module")
def docs_run(data: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from tunesmith.cli.main import main

    run = tmp_path_factory.mktemp("docs-run") / "run"
    args = ["train", "--data", str(data / "train.jsonl"), "--model", str(tiny_model_dir), "--out", str(run)]
    main([*args, "--config", str(data / "train.yaml"), "--docs", str(data / "docs")])
    return run, ""


def test_train_with_docs_then_eval_with_the_same_context(docs_run, data: Path) -> None:
    run, _ = docs_run
    choices = runs.read_run(run).choices
    line = next(c for c in choices if c.startswith("context: 24 of 24 training rows get their 4 nearest chunks"))
    assert "9 train with context but without those facts' sentences" in line, "the run summary says what was done"
    from tunesmith.eval.runner import EvalOptions, evaluate_run

    result = evaluate_run(run, data / "test.jsonl", EvalOptions(max_new_tokens=8, batch_size=8))
    conds = result["conditions"]
    assert set(conds) == {"base", "tuned", "tuned_rag"}, "docs from the run's config: tuned + docs is measured"
    assert conds["tuned_rag"]["prompt_tokens_per_request"] > conds["tuned"]["prompt_tokens_per_request"] + 50
    assert result["quality_metric"] == "fact_accuracy" and "fact_accuracy" in conds["tuned_rag"]["metrics"]
    assert result["rows_detail"][0]["fields"]["topic"] == "capacity"


def test_train_warns_about_stale_rows_in_its_check(data: Path, tmp_path: Path, capsys, tiny_model_dir: Path) -> None:
    args = ["train", "--data", str(data / "train.jsonl"), "--model", str(tiny_model_dir), "--out", str(tmp_path / "r")]
    rc, _, err = run_cli(
        capsys, *args, "--config", str(data / "train.yaml"), "--docs", str(data / "docs"), "--max-steps", "1"
    )
    assert rc == 0 and "9 stale-fact" in err, "the drift check runs in train's pre-flight check"


def test_serve_answers_a_docs_run_with_its_context(docs_run, tmp_path: Path) -> None:
    from .serve_helpers import client, start_server, stop_server

    run, _ = docs_run
    proc, url = start_server([str(run)], tmp_path / "home", tmp_path / "serve.log")
    try:
        ask = [{"role": "user", "content": "How much water does the Aero kettle hold?"}]
        api = client(url)
        models = [m.id for m in api.models.list().data]
        tuned = api.chat.completions.create(model="run", messages=ask, max_tokens=2)
        base = api.chat.completions.create(model=models[0], messages=ask, max_tokens=2)
    finally:
        stop_server(proc)
    assert models[0] != "run" and "run" in models
    # The same request: the run's prompt carries its nearest doc chunks, as it trained; the base's does not.
    assert tuned.usage.prompt_tokens > base.usage.prompt_tokens + 50


@pytest.fixture(scope="module")
def bakeoff(data: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bakeoff")
    options = BakeoffOptions(
        train=data / "train.jsonl",
        test=data / "test.jsonl",
        docs=data / "docs",
        k=2,
        methods=("rag", "lora", "lora+rag"),
        model=str(tiny_model_dir),
        config=data / "train.yaml",
        max_new_tokens=8,
        latency_samples=1,
    )
    result = run_bakeoff(options, out)
    write_reports(result, out)
    return result, out


def test_the_bakeoff_measures_lora_with_retrieval_and_ranks_by_facts(bakeoff) -> None:
    result, out = bakeoff
    m = result["methods"]
    assert list(m) == ["rag", "lora", "lora+rag"] and result["skipped"] == {}
    assert m["lora+rag"]["training"]["docs"] == str(result["docs"]["folder"])
    assert runs.read_run(out / "lora-rag-run").method == "lora"
    assert m["lora+rag"]["prompt_tokens_per_request"] > m["lora"]["prompt_tokens_per_request"] + 50
    first = result["rows_detail"][0]
    assert all(s.startswith(("aero-kettle.md:", "nova-grinder.md:")) for s in first["lora+rag"]["retrieved"])
    assert result["quality_metric"] == "fact_accuracy" and result["ranking"]["metric"] == "fact accuracy"
    assert result["ranking"]["reason"].startswith("ranked by fact accuracy: ")
    assert first["fields"] == {"id": "q01", "topic": "capacity", "fact": "2.2 litres", "must_not_contain": "1.7 litres"}
    assert "facts" in first["lora"]
    md = (out / "bakeoff.md").read_text()
    assert "| LoRA + retrieval (2 doc chunks, adapter trained with them) |" in md


def test_advise_first_line_is_the_verdict_and_json_has_its_evidence(bakeoff, data: Path, capsys) -> None:
    """On the tiny random model lora+rag states no fact: the verdict says what it would take."""
    _, out = bakeoff
    advice = advise(data / "train.jsonl", bakeoff=out, changes_per_month=2)
    first = render_text(advice).splitlines()[0]
    assert first.startswith("Measured winner: ") and "not yet LoRA for the voice + retrieval for the facts" in first
    assert "would need LoRA + retrieval to state the current facts" in first or "to keep the voice" in first
    ev = advice.evidence
    assert ev is not None and ev["fact_metric"] == "fact_accuracy" and set(ev["facts"]) == {"rag", "lora", "lora+rag"}
    assert (
        "2 changes per month, as given" in ev["facts_change"] and "the docs contradict 9 training" in ev["facts_change"]
    )
    rc, text, _ = run_cli(
        capsys, "advise", "--train", str(data / "train.jsonl"), "--from-bakeoff", str(out), "--format", "json"
    )
    parsed = json.loads(text)
    assert rc == 0 and parsed["verdict"] == advice.summary and parsed["method"] == advice.recommendation
    assert parsed["evidence"]["facts"] == ev["facts"]


def _with(result: dict, name: str, facts: float, voice: float) -> None:
    result["methods"][name]["metrics"].update(fact_accuracy=facts, style_adherence=voice)
    result["methods"][name]["quality"] = facts


def test_the_verdict_when_lora_with_retrieval_wins_on_facts_and_keeps_the_voice(
    bakeoff, data: Path, tmp_path: Path
) -> None:
    result, _ = bakeoff
    result = json.loads(json.dumps(result))
    _with(result, "rag", 0.9, 0.0)  # the base model reads the docs, in no voice
    _with(result, "lora", 0.0, 1.0)  # the voice, with the stale facts
    _with(result, "lora+rag", 0.9, 0.97)
    (tmp_path / "bakeoff.json").write_text(json.dumps(result))
    advice = advise(data / "train.jsonl", bakeoff=tmp_path)  # the docs contradict the training replies
    assert advice.recommendation == "lora+rag"
    assert advice.summary.startswith("measured winner: LoRA for the voice + retrieval for the facts (LoRA + retrieval")
    assert "fact accuracy 90%, rag 90%, lora 0%; voice kept in 97% of replies (LoRA alone 100%)" in advice.summary
    _with(result, "lora+rag", 0.9, 0.5)  # the facts, but the voice is lost
    (tmp_path / "bakeoff.json").write_text(json.dumps(result))
    lost = advise(data / "train.jsonl", bakeoff=tmp_path)
    assert lost.recommendation != "lora+rag" and "it would need it to keep the voice (voice kept in 50%" in lost.summary


def test_bad_docs_and_options_are_one_line(data: Path, tmp_path: Path, capsys, tiny_model_dir: Path) -> None:
    args = ["train", "--data", str(data / "train.jsonl"), "--model", str(tiny_model_dir), "--out", str(tmp_path / "r")]
    rc, _, err = run_cli(capsys, *args, "--docs", str(tmp_path / "nowhere"), "--skip-check")
    assert rc == 2 and "is not a folder" in err and "Traceback" not in err and not (tmp_path / "r").exists()
    bake = ["bakeoff", "--train", str(data / "train.jsonl"), "--test", str(data / "test.jsonl")]
    rc, _, err = run_cli(
        capsys, *bake, "--docs", str(data / "docs"), "--rag-examples", "all", "--out", str(tmp_path / "b")
    )
    assert rc == 2 and "--rag-examples: 'all'; expected one of style, none, turns" in err


def test_lora_rag_without_docs_training_reuses_the_lora_adapter(bakeoff, data: Path, tmp_path: Path) -> None:
    """--no-train-with-docs: the LoRA trained without context, given retrieval at inference (what the
    adapter trained with doc context is measured against)."""
    _, first = bakeoff
    options = BakeoffOptions(
        train=data / "train.jsonl",
        test=data / "test.jsonl",
        docs=data / "docs",
        k=2,
        methods=("lora", "lora+rag"),
        lora_run=first / "lora-run",
        train_with_docs=False,
        max_new_tokens=4,
        latency_samples=1,
    )
    result = run_bakeoff(options, tmp_path / "out")
    m = result["methods"]
    assert m["lora+rag"]["model"] == m["lora"]["model"] == str(first / "lora-run")
    assert m["lora+rag"]["training"]["docs"] is None and m["lora+rag"]["label"].endswith("LoRA adapter)")
    assert m["lora+rag"]["prompt_tokens_per_request"] > m["lora"]["prompt_tokens_per_request"] + 50
    assert not (tmp_path / "out" / "lora-rag-run").exists(), "nothing was trained"


def test_training_rows_get_their_chunks_in_a_shuffled_order_that_a_seed_repeats(data: Path) -> None:
    """Retrieval ranks the answering chunk first for most training questions; trained on that order, the model
    copies the first chunk. With a seed (training rows) each row's chunks are shuffled, the same every time."""
    import re

    convs = read_examples(data / "train.jsonl").examples
    index = DocsIndex(data / "docs")

    def order(out: list) -> list[list[str]]:
        return [re.findall(r"\[\d\] (.{30})", o.messages[0].content) for o in out]

    ranked, ranked_line = add_docs_context(convs, index, 4)
    shuffled, line = add_docs_context(convs, index, 4, shuffle_seed=7)
    assert "shuffled order" in line and "shuffled" not in ranked_line
    assert order(shuffled) == order(add_docs_context(convs, index, 4, shuffle_seed=7)[0])
    assert order(shuffled) != order(add_docs_context(convs, index, 4, shuffle_seed=8)[0])
    assert all(sorted(a) == sorted(b) for a, b in zip(order(ranked), order(shuffled), strict=True))
    first_kept = sum(a[0] == b[0] for a, b in zip(order(ranked), order(shuffled), strict=True))
    assert first_kept < len(convs) * 0.6, "the nearest chunk is no longer first on most rows"
