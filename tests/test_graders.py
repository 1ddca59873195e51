"""Graders in OpenAI's format: the types, templating, the safe formula evaluator, validation, the
text metrics, multi graders, the model judges on the tiny model, and `tunesmith grade`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith.graders import Grade, GraderError, Sample, load_grader, sample_from_text
from tunesmith.graders.formula import evaluate, parse_formula
from tunesmith.graders.template import MissingField, render

ITEM = {"answer": "Paris", "city": {"name": "Paris", "tags": ["capital", "big"]}, "n": 3}


def check(input_: str, reference: str, op: str = "eq") -> dict:
    return {"type": "string_check", "name": "s", "input": input_, "reference": reference, "operation": op}


def grade_one(spec: dict, reply: str, item: dict | None = None) -> Grade:
    with load_grader(spec) as g:
        return g.grade([sample_from_text(reply)], [item if item is not None else ITEM])[0]


def test_sample_parses_json_only_when_the_whole_reply_is_json() -> None:
    assert sample_from_text('{"a": 1}') == Sample('{"a": 1}', {"a": 1}, None)
    assert sample_from_text(" [1, 2] ").output_json == [1, 2]
    assert sample_from_text("42").output_json == 42
    assert sample_from_text('The answer is {"a": 1}').output_json is None
    assert sample_from_text("{not json").output_json is None
    calls = [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]
    assert sample_from_text("", calls).output_tools == calls


def test_templates_fill_nested_paths_and_name_what_is_missing() -> None:
    ns = {"item": ITEM, "sample": sample_from_text('{"city": {"name": "Rome"}}').namespace()}
    assert render("{{ item.answer }}/{{item.city.name}}/{{item.city.tags.1}}", ns) == "Paris/Paris/big"
    assert render("{{sample.output_json.city.name}} {{item.n}}", ns) == "Rome 3"
    assert render("{{item.city.tags}}", ns) == '["capital", "big"]'  # non-strings as JSON
    with pytest.raises(MissingField, match=r"item\.nope"):
        render("{{item.nope}}", ns)


@pytest.mark.parametrize(
    ("op", "reply", "score"),
    [
        ("eq", "Paris", 1),
        ("eq", "paris", 0),
        ("ne", "Rome", 1),
        ("like", "It is Paris.", 1),
        ("like", "paris", 0),
        ("ilike", "it is PARIS", 1),
        ("ilike", "Rome", 0),
    ],
)
def test_string_check_operations(op: str, reply: str, score: float) -> None:
    assert grade_one(check("{{sample.output_text}}", "{{item.answer}}", op), reply).score == score


@pytest.mark.parametrize(
    "metric", ["fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5"]
)
def test_similarity_metrics_are_one_for_a_match_and_lower_for_a_miss(metric: str) -> None:
    spec = {
        "type": "text_similarity",
        "name": "t",
        "input": "{{sample.output_text}}",
        "reference": "{{item.ref}}",
        "evaluation_metric": metric,
    }
    ref = "the quick brown fox jumps over the lazy dog today"
    item = {"ref": ref}
    same = grade_one(spec, ref, item)
    near = grade_one(spec, "the quick brown fox jumps over a lazy dog", item)
    far = grade_one(spec, "completely unrelated words here", item)
    assert same.error is None and same.score == pytest.approx(1.0, abs=1e-3)
    assert 0.0 <= far.score < near.score < same.score + 1e-9


def test_multi_combines_named_sub_graders_with_the_formula() -> None:
    spec = {
        "type": "multi",
        "name": "m",
        "graders": {
            "city": check("{{sample.output_json.city}}", "{{item.answer}}"),
            "short": check("{{sample.output_text}}", "x", "ne"),
        },
        "calculate_output": "0.75 * city + 0.25 * short - 0 * max(city, abs(-1)) ^ 2",
    }
    good = grade_one(spec, '{"city": "Paris"}')
    assert good.score == pytest.approx(1.0) and good.sub_scores == {"city": 1.0, "short": 1.0}
    # A reply that is not JSON: the city sub-grader fails (0, with its error), the formula still runs.
    plain = grade_one(spec, "Paris")
    assert plain.score == pytest.approx(0.25) and "city:" in (plain.error or "")


def test_formula_evaluator_refuses_what_is_not_arithmetic() -> None:
    names = {"a", "b"}
    assert (
        evaluate(parse_formula("min(a, b) + sqrt(4) * 2 ** 2 - -1 + floor(1.5) + ceil(0.2)", names), {"a": 1, "b": 2})
        == 12
    )
    assert evaluate(parse_formula("log(exp(a)) + (a + b) / 2", names), {"a": 1.0, "b": 3.0}) == pytest.approx(3.0)
    for bad in [
        "a.__class__",
        "__import__('os').system('x')",
        "open('f')",
        "c + 1",
        "a if b else 1",
        "[a, b]",
        "'x'",
        "a < b",
        "lambda: 1",
        "min(a, key=b)",
        "a; b",
        "True + a",
        "(lambda x: x)(1)",
        "a[0]",
        "a @ b",
    ]:
        with pytest.raises(GraderError):
            parse_formula(bad, names)


def test_formula_arithmetic_errors_fail_the_sample_not_the_caller() -> None:
    spec = {"type": "multi", "name": "m", "graders": {"a": check("x", "y")}, "calculate_output": "1 / a"}
    g = grade_one(spec, "anything")
    assert g.score == 0.0 and "calculate_output" in (g.error or "")
    spec["calculate_output"] = "10 ** 10 ** 10"
    assert "calculate_output" in (grade_one(spec, "x").error or "")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "regex", "name": "x"}, "unknown grader type"),
        ({"type": "string_check", "name": "x", "input": "a", "reference": "b"}, "missing 'operation'"),
        (check("a", "b", "contains"), "unknown operation"),
        (check("{{itme.answer}}", "b"), "names neither item"),
        ({"type": "text_similarity", "name": "x", "input": "a", "reference": "b", "evaluation_metric": "bert"}, "bert"),
        ({"type": "python", "name": "p", "source": "def grade(s, i):\n  return ("}, "syntax error on line"),
        ({"type": "python", "name": "p", "source": "def score(s, i): return 1"}, "must define grade"),
        ({"type": "multi", "name": "m", "graders": {"a": check("a", "b")}, "calculate_output": "a + b"}, "'b'"),
        ({"type": "multi", "name": "m", "graders": {"a": check("a", "b")}, "calculate_output": "a.real"}, "Attribute"),
        (
            {"type": "label_model", "name": "l", "model": "m", "input": [{"role": "user", "content": "x"}]}
            | {"labels": ["a"], "passing_labels": ["b"]},
            "subset",
        ),
        (
            {"type": "score_model", "name": "s", "model": "m", "input": [{"role": "user", "content": "x"}]}
            | {"range": [1, 0]},
            "range",
        ),
    ],
)
def test_invalid_specs_are_one_clear_error(spec: dict, message: str) -> None:
    with pytest.raises(GraderError, match=message):
        load_grader(spec)


def test_check_items_names_a_field_no_row_has() -> None:
    g = load_grader(check("{{sample.output_text}}", "{{item.answr}}"))
    with pytest.raises(GraderError, match=r"\{\{item.answr\}\}, which no row has"):
        g.check_items([ITEM])
    load_grader(check("{{sample.output_text}}", "{{item.city.name}}")).check_items([{}, ITEM])
    with pytest.raises(GraderError, match="not a sample field"):
        load_grader(check("{{sample.text}}", "a")).check_items([ITEM])
    # At grading time, a row without the field scores 0 with the reason; the other rows are graded.
    grades = g.grade([sample_from_text("Paris")] * 2, [{"answr": "Paris"}, {}])
    assert grades[0].score == 1.0 and grades[1].score == 0.0 and "item.answr" in (grades[1].error or "")


def test_load_grader_reads_a_dict_json_text_or_a_file(tmp_path: Path) -> None:
    spec = check("{{sample.output_text}}", "{{item.answer}}")
    path = tmp_path / "g.json"
    path.write_text(json.dumps(spec))
    for source in (spec, json.dumps(spec), path, str(path)):
        assert load_grader(source).spec == spec
    path.write_text("{broken")
    with pytest.raises(GraderError, match="not valid JSON"):
        load_grader(path)


def test_model_judges_on_the_tiny_model_never_raise(tiny_model_dir: Path) -> None:
    from tunesmith.graders.judge import ModelJudge

    messages = [
        {"role": "developer", "content": "Rate the reply."},
        {"role": "user", "content": "{{sample.output_text}}"},
    ]
    score = {"type": "score_model", "name": "s", "model": str(tiny_model_dir), "input": messages, "range": [0, 10]}
    label = {"type": "label_model", "name": "l", "model": str(tiny_model_dir), "input": messages}
    label |= {"labels": ["good", "bad"], "passing_labels": ["good"]}
    for spec in (score, label):
        with load_grader(spec | {"sampling_params": {"max_completions_tokens": 4}}) as g:
            grades = g.grade([sample_from_text("hello"), sample_from_text("bye")], [{}, {}])
        # A random model answers nonsense: each sample is 0 with the judge's reason, or a valid grade.
        assert all(0.0 <= gr.score <= 10.0 and (gr.error is None or "judge" in gr.error) for gr in grades)
    # How replies are read, independent of what the tiny model says.
    assert ModelJudge(score).parse(" 7 out of 10").score == 7.0
    assert "outside its range" in (ModelJudge(score).parse("11").error or "")
    assert ModelJudge(label).parse("Good.").score == 1.0 and ModelJudge(label).parse("bad").score == 0.0
    assert "none of the labels" in (ModelJudge(label).parse("maybe").error or "")
    with load_grader(score | {"model": "/nonexistent/judge"}) as g:
        assert "judge model failed" in (g.grade([sample_from_text("x")], [{}])[0].error or "")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tunesmith", *args], capture_output=True, text=True, timeout=300)


def test_grade_command_with_replies_and_with_a_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    grader = tmp_path / "g.json"
    grader.write_text(json.dumps(check("{{sample.output_text}}", "{{item.answer}}")))
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": q}], "answer": a}) + "\n"
            for q, a in [("2+2?", "4"), ("3+3?", "6")]
        )
    )
    replies = tmp_path / "replies.jsonl"
    replies.write_text('"4"\n{"output_text": "7"}\n')
    out = run_cli("grade", "--grader", str(grader), "--data", str(rows), "--replies", str(replies), "--format", "json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["mean"] == 0.5 and [g["score"] for g in report["grades"]] == [1.0, 0.0]
    text = run_cli("grade", "--grader", str(grader), "--data", str(rows), "--replies", str(replies))
    assert "mean grade 0.5000 over 2 rows" in text.stdout
    generated = run_cli(
        "grade",
        "--grader",
        str(grader),
        "--data",
        str(rows),
        "--model",
        str(tiny_model_dir),
        "--max-tokens",
        "4",
        "--format",
        "json",
    )
    assert generated.returncode == 0, generated.stderr
    assert json.loads(generated.stdout)["rows"] == 2
    # Bad input: one line, exit 2.
    grader.write_text(json.dumps(check("{{sample.output_text}}", "{{item.missing}}")))
    bad = run_cli("grade", "--grader", str(grader), "--data", str(rows), "--replies", str(replies))
    assert bad.returncode == 2 and "which no row has" in bad.stderr and "Traceback" not in bad.stderr
    grader.write_text('{"type": "python", "name": "p", "source": "def grade(:"}')
    bad = run_cli("grade", "--grader", str(grader), "--data", str(rows), "--replies", str(replies))
    assert bad.returncode == 2 and "syntax error" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    replies.write_text('"4"\n')
    bad = run_cli("grade", "--grader", str(tmp_path / "g.json"), "--data", str(rows), "--replies", str(replies))
    assert bad.returncode == 2
