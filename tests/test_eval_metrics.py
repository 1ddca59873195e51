"""Every metric of `tunesmith eval` on hand-made cases, including broken JSON, missing fields and wrong types."""

import json

import pytest

from tunesmith.eval import metrics as m
from tunesmith.eval import scoring

REF = json.dumps({"category": "billing", "priority": "high", "count": 2})


def test_json_validity_counts_only_objects() -> None:
    preds = ['{"a": 1}', '  {"a": 1}\n', '{"a": 1', "[1, 2]", '"text"', 'Sure! {"a": 1}', ""]
    assert m.json_validity(preds) == pytest.approx(2 / 7)
    assert m.json_validity([]) == 0.0


def test_field_accuracy_broken_missing_and_wrong_types() -> None:
    preds = [
        REF,  # all right
        '{"category": "billing", "priority": "low", "count": 2}',  # one wrong value
        '{"category": "billing"}',  # missing fields
        '{"category": "billing", "priority": "high", "count": "2"}',  # wrong type: string, not integer
        '{"category": "billing", "priority": "high", "count": true',  # broken JSON: nothing counts
    ]
    acc = m.field_accuracy(preds, [REF] * 5)
    assert acc == {"category": 4 / 5, "priority": 2 / 5, "count": 2 / 5}
    # True == 1 in Python, but a boolean is not the integer the reference has.
    assert m.field_accuracy(['{"n": true}'], ['{"n": 1}']) == {"n": 0.0}
    assert m.row_field_accuracy(preds[1], REF) == pytest.approx(2 / 3)
    assert m.row_field_accuracy("anything", "not json") is None


def test_exact_match_and_stop_rate() -> None:
    assert m.exact_match([" yes\n", "no", "Yes"], ["yes", "yes", "yes"]) == pytest.approx(1 / 3)
    assert m.stop_rate(["stop", "length", "stop", "stop"]) == 0.75
    assert m.stop_rate([]) == 0.0


def test_infer_schema_types_required_and_enums() -> None:
    replies = [json.dumps({"cat": c, "n": i, "note": f"free text number {i}"}) for i, c in enumerate("ababab")]
    replies.append(json.dumps({"cat": "a", "n": 7}))  # no "note": so "note" is not required
    schema = m.infer_schema(replies)
    assert schema["properties"]["cat"] == {"type": "string", "enum": ["a", "b"]}
    assert schema["properties"]["n"] == {"type": "integer"}
    assert "enum" not in schema["properties"]["note"], "seven distinct values in seven rows is prose, not a category"
    assert schema["required"] == ["cat", "n"]
    assert m.infer_schema(["plain text", "more text", '{"a": 1}']) is None


def test_schema_adherence_catches_each_kind_of_violation() -> None:
    schema = m.infer_schema([json.dumps({"cat": c, "n": 1}) for c in "aabb"])
    preds = [
        '{"cat": "a", "n": 3}',  # ok
        '{"cat": "c", "n": 3}',  # not an allowed value
        '{"cat": "a", "n": "3"}',  # wrong type
        '{"cat": "a"}',  # missing required field
        '{"cat": "a", "n": 3, "extra": 1}',  # unknown field
        '{"cat": "a", "n": 3',  # broken JSON
    ]
    assert m.schema_checks(preds, schema) == [True, False, False, False, False, False]
    assert m.schema_adherence(preds, schema) == pytest.approx(1 / 6)
    given = {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}
    assert m.schema_checks(['{"x": 1.5}', '{"x": null}'], given) == [True, False]


def test_chrf_and_rouge_l() -> None:
    ref = "The parcel will arrive on Tuesday morning."
    assert m.chrf([ref], [ref]) == pytest.approx(100.0)
    close, far = m.chrf(["The parcel arrives Tuesday morning."], [ref]), m.chrf(["Bananas are yellow."], [ref])
    assert 40 < close < 100 and far < 20
    assert m.row_chrf("", ref) == 0.0
    assert m.rouge_l(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1.0)
    assert m.rouge_l(["the cat sat"], ["the cat sat on the mat"]) == pytest.approx(2 * 1 * 0.5 / 1.5)
    # Non-Latin text must score too (rouge-score's own tokenizer would see no words at all).
    assert m.rouge_l(["привет мир"], ["привет мир"]) == pytest.approx(1.0)


def test_length_ratio() -> None:
    assert m.length_ratio(["abcd", "ab"], ["ab", "ab"]) == pytest.approx(1.5)
    assert m.length_ratio(["x"], [""]) == 0.0


def test_style_markers_found_and_checked() -> None:
    replies = [
        "Hi there, thanks for reaching out. Your order ships today. Best regards, Ana",
        "Hi there, thanks for reaching out. We refunded you. Best regards, Ana",
        "Hi there, thanks for writing. Try restarting. Best regards, Ana",
        "Hello. It is fixed now. Best regards, Ana",
    ]
    markers = m.find_style_markers(replies, min_share=0.5)
    assert markers.openings == ["hi there, thanks for"]
    assert markers.closings == ["best regards, ana"]
    assert m.uses_style("Hi there, thanks for the note. Done. Best regards, Ana", markers)
    assert not m.uses_style("Hi there, thanks for the note. Done.", markers), "closing missing"
    assert not m.uses_style("Hello. Done. Best regards, Ana", markers), "opening missing"
    assert m.style_adherence(["Hi there, thanks for x. best regards, ana", "nope"], markers) == 0.5
    assert not m.find_style_markers(["one reply", "another different"], min_share=0.5)


def test_style_markers_match_whole_words() -> None:
    markers = m.StyleMarkers(openings=["thanks"], closings=[])
    assert m.uses_style("Thanks, done", markers) is False  # "thanks," is a different word than "thanks"
    assert m.uses_style("thanks so much", markers) and not m.uses_style("thanksgiving plans", markers)


def test_scoring_reports_only_measures_that_apply() -> None:
    texts, finish = ['{"cat": "a"}', "oops"], ["stop", "length"]
    refs: list = ['{"cat": "a"}', None]
    schema = m.infer_schema(['{"cat": "a"}', '{"cat": "a"}'])
    got = scoring.score_condition(texts, finish, refs, [(1.0, 2), None], task="json", schema=schema, markers=None)
    assert got["json_valid"] == 0.5 and got["schema_adherence"] == 0.5 and got["exact_match"] == 1.0
    assert got["loss"] == 0.5 and "chrf" not in got and "style_adherence" not in got
    text = scoring.score_condition(["hi"], ["stop"], ["hi"], [None], task="text", schema=None, markers=None)
    assert {"chrf", "rouge_l", "length_ratio", "exact_match", "stop_rate"} <= text.keys()
    assert "json_valid" not in text and "loss" not in text
    # A row without a reference is scored on reference-free checks only: here, stopping and valid JSON.
    assert scoring.row_score('{"cat": "a"}', "stop", None, task="json", schema=None, markers=None) == 1.0
    assert scoring.row_score("oops", "stop", None, task="json", schema=None, markers=None) == 0.5
    assert scoring.detect_task(['{"a": 1}', "text"], None) == "json"
    assert scoring.detect_task(["text", "more", '{"a": 1}'], None) == "text"


def test_verdict_directions() -> None:
    by = scoring.BY_KEY
    assert scoring.verdict(by["json_valid"], 0.2, 0.9) == "better"
    assert scoring.verdict(by["perplexity"], 3.0, 9.0) == "worse"
    assert scoring.verdict(by["length_ratio"], 2.5, 1.1) == "better"
    assert scoring.verdict(by["chrf"], 50.0, 50.1) == "same"
