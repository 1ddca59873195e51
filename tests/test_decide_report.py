"""The bakeoff result and report from hand-made measurements (so every number is known), and bakeoff.html
in headless Chromium."""

import json
import re
from pathlib import Path

import pytest

from tunesmith.decide import report
from tunesmith.decide.bakeoff import assemble
from tunesmith.decide.options import BakeoffOptions
from tunesmith.eval.rows import EvalRow

from .test_eval_report import chromium

REFS = ['{"c": "a"}', '{"c": "b"}', '{"c": "a"}', '{"c": "b"}']


def method(name: str, label: str, right: int, tokens: float, seconds: float | None = None) -> dict:
    """A measured method that got ``right`` of the 4 rows right with ``tokens`` prompt tokens each."""
    texts = REFS[:right] + ["nope"] * (len(REFS) - right)
    acc = right / len(REFS)
    training = None if seconds is None else {"source": "trained here", "run": f"out/{name}-run", "seconds": seconds}
    return {
        "name": name,
        "label": label,
        "status": "ran",
        "metrics": {"mean_field_accuracy": acc, "json_valid": acc, "stop_rate": 1.0, "field_accuracy": {"c": acc}},
        "prompt_tokens_per_request": tokens,
        "prompt_tokens_max": tokens,
        "completion_tokens_per_request": 5.0,
        "generation_s": 2.0,
        "seconds_per_request_batched": 0.5,
        "latency_samples_s": [1.0, 1.2, 1.1],
        "latency_s": 1.1,
        "rows": [{"text": t, "finish_reason": "stop", "prompt_tokens": tokens, "score": 1.0} for t in texts],
        "model": "base" if seconds is None else f"out/{name}-run",
        "training": training,
    }


def fake_bakeoff(requests_per_month: float | None = None, lora_seconds: float = 360.0) -> dict:
    rows = [EvalRow(f"t.jsonl:{i}", [{"role": "user", "content": f"mail <{i}>"}], r) for i, r in enumerate(REFS)]
    results = {
        "prompt": method("prompt", "prompt (base + instructions)", 1, 330.0),
        "fewshot": method("fewshot", "few-shot (base + instructions + 4 fixed examples)", 3, 730.0),
        "rag": method("rag", "RAG (base + instructions + 4 retrieved examples, bm25)", 3, 750.0),
        "lora": method("lora", "LoRA (no instructions)", 4, 130.0, lora_seconds),
    }
    results["rag"]["retrieval_s_per_request"] = 0.001
    options = BakeoffOptions(
        train=Path("train.jsonl"),
        test=Path("t.jsonl"),
        methods=("prompt", "fewshot", "rag", "lora", "full"),
        price_per_1k_input_tokens=0.0005,
        price_per_hour=1.0,
        requests_per_month=requests_per_month,
    )
    return assemble(
        options=options,
        rows=rows,
        results=results,
        skipped={"full": "full fine-tuning needs about 3.10 GiB (estimated peak 2.58 GiB + 20%), more than 1.00 GiB"},
        notes=["a note for the reader"],
        task="json",
        schema=None,
        model_name="tiny-base",
        max_new=16,
        docs=None,
        rag={"retriever": "bm25", "index_s": 0.01, "k": 4},
        wall_s=10.0,
        instructions_chars=120,
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict[str, Path]]:
    result = fake_bakeoff()
    return result, report.write_reports(result, tmp_path_factory.mktemp("bakeoff"))


def test_costs_break_even_and_winner(written) -> None:
    result, paths = written
    m = result["methods"]
    assert result["quality_metric"] == "mean_field_accuracy" and m["lora"]["quality"] == 1.0
    assert m["lora"]["training_cost"] == pytest.approx(0.1), "360 s at 1.0 per hour"
    assert m["fewshot"]["training_cost"] is None and m["fewshot"]["cost_per_request"] == pytest.approx(730 * 0.0005e-3)
    be = m["lora"]["break_even"]
    # 0.1 / ((730 - 130) tokens x 0.0005 per 1k) = 333.3 requests
    assert be["fewshot"]["tokens_saved_per_request"] == 600 and be["fewshot"]["requests"] == pytest.approx(1000 / 3)
    assert be["rag"]["requests"] == pytest.approx(0.1 / (620 * 0.0005e-3))
    assert result["winner"] == "lora" and result["ranking"]["order"][0] == "lora"
    assert report.best_baseline(result) == "fewshot", "fewshot and rag tie on quality; fewshot is shorter"
    saved = json.loads(paths["json"].read_text())["methods"]["lora"]["break_even"]["fewshot"]
    assert saved["requests"] == pytest.approx(1000 / 3)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_table(written) -> None:
    md = written[1]["markdown"].read_text()
    assert "| method | Field accuracy (mean) | stopped on its own | prompt tokens / request |" in md
    assert "| LoRA (no instructions) | 100.0% | 100.0% | 130.0 | 1.10 | 360.0 | 0.10 | 334 |" in md
    assert "| few-shot (base + instructions + 4 fixed examples) | 75.0% | 100.0% | 730.0 | 1.10 | – | – | – |" in md
    assert "| full: skipped | full fine-tuning needs about 3.10 GiB" in md
    assert "**Winner: LoRA (no instructions): ranked by field accuracy: lora has the best quality, 100.0%.**" in md
    assert "0.0005 per 1k input tokens and 1 per hour" in md


def test_a_partial_result_names_no_winner() -> None:
    result = {**fake_bakeoff(), "complete": False}
    assert report.winner_line(result).startswith("Leader so far (partial result): LoRA (no instructions)")


def test_break_even_text() -> None:
    assert report.requests_text(None) == "never"
    assert report.requests_text(0.0) == "at once"
    assert report.requests_text(333.3) == "334"
    assert report.requests_text(0.4) == "< 1"


def test_bakeoff_html_in_headless_chromium(written, tmp_path: Path) -> None:
    page = written[1]["html"].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page) and "<link" not in page
    assert page.count("<svg") == 1 and 'id="breakeven"' in page and 'id="skipped"' in page
    proc = chromium(tmp_path, "--virtual-time-budget=2000", "--dump-dom", written[1]["html"].as_uri())
    dom = proc.stdout
    assert proc.returncode == 0 and "</html>" in dom, proc.stderr[-2000:]
    assert re.search(r'<div class="card chart" id="chart-quality"><svg', dom)
    assert len(re.findall(r"<path ", dom)) > 10, "the chart has drawn shapes"
    body = dom[dom.index('id="methods-table"') :]
    assert re.findall(r'<tr data-method="(\w+)"', body)[:5] == ["prompt", "fewshot", "rag", "lora", "full"]
    assert re.search(r'<tr data-method="lora" class="winner">', body)
    assert re.search(r'<tr data-method="full" class="skipped">', body)
    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1400", written[1]["html"].as_uri())
    from PIL import Image

    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "a blank page has a handful of colours"
    pixels = dict((rgb, n) for n, rgb in colours)
    assert pixels.get((0x1A, 0x73, 0xE8), 0) > 50, "the LoRA point (blue) is drawn"
