"""`tunesmith eval` on tool-calling rows: the call measures on hand-made replies (every number known), the
report sections, and a real evaluation of a tiny model that has memorised its tool rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.eval import metrics, report, runner, scoring
from tunesmith.eval import rows as eval_rows
from tunesmith.eval.forgetting import Forgetting
from tunesmith.generate import Completion
from tunesmith.runs import RunInfo

from .conftest import write_jsonl
from .tool_fixtures import TOOLS, tiny_base, tool_rows, train_tool_model


def qwen(name: str, args: dict) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"


REF = [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}]


@pytest.mark.parametrize(
    ("reply", "parsed", "name", "exact", "args"),
    [
        (qwen("get_weather", {"unit": "C", "city": "Paris"}), True, True, True, [True, True]),  # key order is free
        ('{"name": "get_weather", "parameters": {"city": "Paris", "unit": "C"}}', True, True, True, [True, True]),
        (qwen("get_weather", {"city": "Paris", "unit": "F"}), True, True, False, [True, False]),
        (qwen("get_weather", {"city": "Paris"}), True, True, False, [True, False]),  # a missing argument
        (qwen("get_time", {"city": "Paris", "unit": "C"}), True, False, False, [False, False]),  # wrong function
        (
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": Paris}}\n</tool_call>',
            False,
            False,
            False,
            [False, False],
        ),
        ("It is sunny in Paris.", False, False, False, [False, False]),
        (
            qwen("get_weather", {"city": "Paris", "unit": "C"}) + qwen("get_weather", {"city": "Rome"}),
            True,
            False,
            False,
            [True, True],
        ),
    ],
    ids=["exact", "llama-json", "wrong-value", "missing-arg", "wrong-function", "invalid-json", "text", "extra-call"],
)
def test_one_reply_against_its_reference_call(reply: str, parsed: bool, name: bool, exact: bool, args: list) -> None:
    s = metrics.score_call(reply, REF)
    assert (s.parsed, s.name, s.exact) == (parsed, name, exact)
    assert list(s.args.values()) == args and list(s.args) == ["get_weather.city", "get_weather.unit"]


def test_corpus_measures_and_no_call_rows() -> None:
    texts = [qwen("get_weather", {"city": "Paris", "unit": "C"}), qwen("get_weather", {"city": "Rome", "unit": "C"}),
             "garbage", "Hello!", qwen("get_weather", {"city": "X"})]  # fmt: skip
    calls = [REF, REF, REF, None, None]
    out, scores = scoring.score_tools(texts, calls, [True] * 5)
    assert out["tool_call_rows"] == 3 and out["tool_call_exact"] == pytest.approx(1 / 3)
    assert out["tool_name_accuracy"] == pytest.approx(2 / 3) and out["tool_args_valid"] == pytest.approx(2 / 3)
    assert out["tool_arg_accuracy"] == pytest.approx(3 / 6)
    assert out["tool_arguments"] == {"get_weather.city": pytest.approx(1 / 3), "get_weather.unit": pytest.approx(2 / 3)}
    assert out["no_call_rows"] == 2 and out["no_call_accuracy"] == 0.5  # row 5 called where no call is needed
    assert [scoring.tool_row_score(s) for s in scores[:3]] == [1.0, pytest.approx(0.5 + 0.49 / 2), 0.0]
    # Data without tools reports no tool measure at all.
    assert scoring.score_tools(["a"], [None], [False])[0] == {}


def test_load_rows_keeps_tools_and_reference_calls(tmp_path: Path) -> None:
    rows = eval_rows.load_rows(write_jsonl(tmp_path / "t.jsonl", tool_rows()))
    call, loop, rome, hello = rows
    assert call.reference is None and call.reference_calls == REF and call.tools == TOOLS
    assert loop.reference == "It is sunny and 21 C in Paris." and loop.reference_calls is None
    assert [m["role"] for m in loop.prompt] == ["user", "assistant", "tool"] and loop.prompt[1]["tool_calls"]
    assert rome.reference_calls[0]["arguments"] == {"city": "Rome", "unit": "F"}
    assert hello.reference == "Hello!" and hello.tools == TOOLS


def _condition(name: str, texts: list[str]) -> dict:
    return {
        "name": name,
        "label": name,
        "completions": [Completion(t, "stop", 50, 10) for t in texts],
        "losses": [None] * len(texts),
        "generation_s": 1.0,
        "rows_per_s": 4.0,
        "prompt_tokens_per_request": 50.0,
    }


def test_report_puts_the_tool_measures_beside_the_others(tmp_path: Path) -> None:
    rows = eval_rows.load_rows(write_jsonl(tmp_path / "t.jsonl", tool_rows()))
    paris = qwen("get_weather", {"city": "Paris", "unit": "C"})
    rome = qwen("get_weather", {"city": "Rome", "unit": "F"})
    conditions = {
        "base": _condition("base", ["Sure.", "It is sunny and 21 C in Paris.", paris, "Hello!"]),
        "tuned": _condition("tuned", [paris, "It is sunny and 21 C in Paris.", rome, "Hello!"]),
    }
    info = RunInfo(base_model="b", method="full", weights_dir="model")
    result = runner.assemble(
        tmp_path / "run", tmp_path / "t.jsonl", info, rows, conditions,
        Forgetting(10.0, 10.5, 100, 0.1), task="text", schema=None, schema_source=None, markers=None,
        options=runner.EvalOptions(), max_new=64, notes=[], wall_s=1.0, instructions="",
    )  # fmt: skip
    base, tuned = result["conditions"]["base"]["metrics"], result["conditions"]["tuned"]["metrics"]
    assert base["tool_call_exact"] == 0.0 and tuned["tool_call_exact"] == 1.0
    assert base["tool_name_accuracy"] == 0.5 and base["tool_arguments"]["get_weather.city"] == 0.0
    assert base["no_call_accuracy"] == tuned["no_call_accuracy"] == 1.0
    assert result["quality_metric"] == "tool_call_exact" and result["rows_with_reference_call"] == 2
    keys = [h["key"] for h in result["headline"]]
    assert keys[:5] == ["tool_call_exact", "tool_name_accuracy", "tool_args_valid", "tool_arg_accuracy",
                        "no_call_accuracy"] and "chrf" in keys  # fmt: skip
    assert [r["change"] for r in result["rows_detail"]] == ["improved", "same", "improved", "same"]
    md = report.render_markdown(result)
    assert "Tool call exact (function + arguments) | 0.0% | 100.0% | better" in md.replace("  ", " ")
    assert "## Tool calls" in md and "get_weather.unit" in md
    html = report.render_html(result)
    assert 'id="tool-arguments"' in html and "&lt;tool_call&gt;" in html  # the reference call is shown


def test_eval_of_a_model_that_learned_its_calls(tmp_path: Path, tokenizer) -> None:
    """Base (random) against tuned (memorised the rows), prompts rendered with the rows' tools."""
    run = train_tool_model(tiny_base(tokenizer, tmp_path / "base"), tmp_path)
    data = write_jsonl(tmp_path / "test.jsonl", tool_rows())
    result, paths = report.evaluate_and_report(run, data, tmp_path / "eval", runner.EvalOptions(batch_size=4))
    base, tuned = result["conditions"]["base"]["metrics"], result["conditions"]["tuned"]["metrics"]
    assert tuned["tool_call_exact"] == 1.0 and tuned["tool_arg_accuracy"] == 1.0 and tuned["no_call_accuracy"] == 1.0
    assert base["tool_call_exact"] == 0.0
    assert result["rows_detail"][0]["tuned"]["text"].startswith("<tool_call>")
    assert json.loads(paths["json"].read_text())["conditions"]["tuned"]["metrics"]["tool_call_rows"] == 2
