"""The report from hand-made completions (so every number is known), and report.html in headless Chromium."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from tunesmith.eval import report, runner
from tunesmith.eval import rows as eval_rows
from tunesmith.eval.forgetting import Forgetting
from tunesmith.eval.metrics import infer_schema
from tunesmith.generate import Completion
from tunesmith.runs import RunInfo

REFS = ['{"c": "a", "p": "x"}', '{"c": "b", "p": "y"}', '{"c": "a", "p": "y"}', '{"c": "b", "p": "x"}', None]
BASE = ["hello", '{"c": "a"}', "no", '{"c": "b", "p": "x"}', "what"]  # row 4 exactly right
PROMPTED = ['{"c": "a", "p": "x"}', "x", "x", "x", "x"]
TUNED = ['{"c": "a", "p": "x"}', '{"c": "b", "p": "y"}', '{"c": "a", "p": "y"}', '{"c": "a", "p": "x"}', '{"c": "a"}']


def condition(name: str, label: str, texts: list[str], prompt_tokens: int, loss: float | None) -> dict:
    finish = ["stop" if t.startswith("{") else "length" for t in texts]
    return {
        "name": name,
        "label": label,
        "completions": [Completion(t, f, prompt_tokens, 5) for t, f in zip(texts, finish, strict=True)],
        "losses": [None if r is None or loss is None else (loss * 10, 10) for r in REFS],
        "generation_s": 1.0,
        "rows_per_s": 5.0,
        "prompt_tokens_per_request": float(prompt_tokens),
    }


def fake_result(run: Path) -> dict:
    run.mkdir(parents=True, exist_ok=True)
    lines = [{"step": s, "loss": 2.0 / s} for s in range(1, 11)] + [{"step": 10, "val_loss": 0.4}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    rows = [
        eval_rows.EvalRow(f"t.jsonl:{i}", [{"role": "user", "content": f"email <{i}>"}], r) for i, r in enumerate(REFS)
    ]
    conditions = {
        "base": condition("base", "base", BASE, 10, 2.0),
        # As the runner does: no loss behind the long instructions.
        "base_prompted": condition("base_prompted", "base + instructions + 2-shot", PROMPTED, 110, None),
        "tuned": condition("tuned", "tuned", TUNED, 10, 0.1),
    }
    schema = infer_schema([r for r in REFS if r] * 2)
    return runner.assemble(
        run,
        Path("t.jsonl"),
        RunInfo(base_model="tiny-base", method="lora", weights_dir="adapter", steps=10),
        rows,
        conditions,
        Forgetting(20.0, 25.0, 3000, 0.10),
        task="json",
        schema=schema,
        schema_source="inferred from the training replies",
        markers=None,
        options=runner.EvalOptions(few_shot=2, price_per_1k_input_tokens=0.5),
        max_new=32,
        notes=["a note for the reader"],
        wall_s=1.0,
        instructions="Reply in JSON.",
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict[str, Path]]:
    tmp = tmp_path_factory.mktemp("report")
    result = fake_result(tmp / "run")
    return result, report.write_reports(result, tmp / "out")


def test_numbers_in_the_result(written) -> None:
    result, paths = written
    by = {h["key"]: h for h in result["headline"]}
    assert by["json_valid"]["base"] == 0.4 and by["json_valid"]["tuned"] == 1.0
    assert by["mean_field_accuracy"]["base"] == 0.25 and by["mean_field_accuracy"]["tuned"] == 0.875
    assert by["mean_field_accuracy"]["verdict"] == "better" and by["perplexity"]["verdict"] == "better"
    assert "chrf" not in by, "chrF is for free text, not JSON replies"
    assert by["loss"]["tuned"] == pytest.approx(0.1) and by["loss"]["base_prompted"] is None
    # The row without a reference counts for JSON validity but not for field accuracy or loss.
    assert result["conditions"]["tuned"]["metrics"]["field_accuracy"] == {"c": 0.75, "p": 1.0}
    assert [r["change"] for r in result["rows_detail"]] == ["improved"] * 3 + ["regressed", "improved"]
    s = result["savings"]
    assert s["tokens_saved_per_request"] == 100 and s["saved_per_1m_requests"] == pytest.approx(50_000)
    assert result["forgetting"]["regressed"] and result["forgetting"]["change"] == pytest.approx(0.25)
    assert json.loads(paths["json"].read_text())["headline"] == result["headline"], "eval.json has every number"


def test_markdown_has_the_headline_table(written) -> None:
    md = written[1]["markdown"].read_text()
    for section in ("## Headline", "## Field accuracy", "## Token savings", "## Forgetting check", "## Notes"):
        assert section in md
    assert "| measure | base | base + instructions + 2-shot | tuned | tuned vs base |" in md
    assert "| JSON valid | 40.0% | 20.0% | 100.0% | better |" in md
    assert "| Perplexity on references | 7.39 | – | 1.11 | better |" in md
    assert "| Field accuracy (mean) | 25.0% | 25.0% | 87.5% | better |" in md
    assert "| prompt tokens per request | 110.0 | 10.0 |" in md
    assert "per 1M requests: 100,000,000 tokens, worth 50,000.00 at 0.5 per 1k input tokens." in md
    assert "+25.0%" in md and "**REGRESSION**" in md
    assert "Tuned beats base on field accuracy (mean): 25.0% → 87.5%" in md
    assert "4 rows improved, 1 regressed, 0 unchanged" in md


def test_html_sections_numbers_and_no_network(written) -> None:
    page = written[1]["html"].read_text()
    for section in ("summary", "headline", "charts", "savings", "forgetting", "rows"):
        assert f'id="{section}"' in page
    assert page.count("<svg") == 3, "loss curve, measures and perplexity charts, inline"
    assert page.count('data-change="regressed"') == 1 and page.count('data-change="improved"') == 4
    assert "87.5%" in page and "50,000.00" in page and "regressions (1)" in page
    assert "email &lt;3&gt;" in page, "user text is escaped"
    # Self-contained: nothing is fetched (SVG namespace declarations are names, not requests).
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page


def test_diff_marks_what_differs() -> None:
    assert report.diff_html('{"c": "a"}', '{"c": "b"}') == '{"c": "<del>b</del><ins>a</ins>"}'
    assert report.diff_html("same text", "same text") == "same text"
    assert report.diff_html("<b>&", None) == "&lt;b&gt;&amp;"
    assert report.diff_html("x<y", "x") == "x<ins>&lt;y</ins>"


# ---- headless Chromium ------------------------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed (`make test` installs it: apt-get install chromium)")
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"  # a fresh profile for every start
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
    )


def test_report_renders_in_headless_chromium(written, tmp_path: Path) -> None:
    html_path = written[1]["html"]
    # The DOM after scripts ran, opened on the regressions filter: 4 of 5 rows must be hidden.
    proc = chromium(tmp_path, "--virtual-time-budget=3000", "--dump-dom", f"{html_path.as_uri()}#regressed")
    dom = proc.stdout
    assert proc.returncode == 0 and "</html>" in dom, proc.stderr[-2000:]
    charts = re.findall(r'<div class="card chart" id="chart-(\w+)"><h3>[^<]*</h3><svg', dom)
    assert charts == ["loss", "metrics", "perplexity"]
    assert len(re.findall(r"<path ", dom)) > 20, "the charts have drawn shapes"
    body = dom[dom.index('<table class="rows"') :]
    assert len(re.findall(r'<tr class="(improved|regressed|same)"', body)) == 5
    assert len(re.findall(r'<tr class="improved"[^>]*style="display: none;"', body)) == 4
    assert re.search(r'<tr class="regressed"[^>]*data-change="regressed">', body), "the regression stays visible"

    shot = tmp_path / "shot.png"
    proc = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", html_path.as_uri())
    assert shot.is_file(), proc.stderr[-2000:]
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 1600)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "a blank page has a handful of colours, not hundreds"
    pixels = dict((rgb, n) for n, rgb in colours)
    assert pixels.get((0x1A, 0x73, 0xE8), 0) > 500, "the tuned model's blue bars are on screen"
    non_white = sum(n for n, rgb in colours if sum(rgb) < 720)
    assert non_white > 0.05 * 1280 * 1600
