"""`tunesmith bakeoff` end to end on the tiny model with every method (prompt, fewshot, rag, lora, full; the
runs trained here for two steps), reuse of an existing run, methods that cannot run, and bad input."""

import json
from pathlib import Path

import pytest

from tunesmith import runs
from tunesmith.data.render import Renderer
from tunesmith.decide import economics as econ
from tunesmith.decide.bakeoff import run_bakeoff
from tunesmith.decide.options import BakeoffOptions, parse_methods
from tunesmith.decide.report import write_reports
from tunesmith.errors import UserError
from tunesmith.eval.rows import load_rows, prompted
from tunesmith.models.load import load_model

from .conftest import chat_rows, write_jsonl
from .test_cli import assert_user_error, tunesmith

# Longer than the default system prompt that SmolLM2's template adds when a conversation has none.
INSTRUCTIONS = (
    "You turn painting requests into data. Reply with one JSON object on one line with exactly two keys: "
    '"object", the thing to paint, and "colour", the colour asked for. Write nothing before or after it.'
)
CONFIG = """\
data: {val_split: 0.0, max_len: 256}
lora: {r: 4, alpha: 8}
train: {batch_size: 4, micro_batch_size: 4, learning_rate: 0.005, max_steps: 2}
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("bakeoff-data")
    docs = tmp / "docs"
    docs.mkdir()
    (docs / "colours.md").write_text("# Colours\n\nAmber is a warm yellow. Teal is a blue green.\n")
    (tmp / "instructions.txt").write_text(INSTRUCTIONS + "\n")
    (tmp / "train.yaml").write_text(CONFIG)
    return {
        "train": write_jsonl(tmp / "train.jsonl", chat_rows(16)),
        "test": write_jsonl(tmp / "test.jsonl", chat_rows(4, seed=9)),
        "docs": docs,
        "instructions": tmp / "instructions.txt",
        "config": tmp / "train.yaml",
    }


@pytest.fixture(scope="module")
def bakeoff(files: dict[str, Path], tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("bakeoff") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNESMITH_QUIET", "0")  # the terminal table is part of what is tested
        proc = run_cli(files, tiny_model_dir, out)
    return proc, out


def run_cli(files: dict[str, Path], tiny_model_dir: Path, out: Path):
    return tunesmith(
        "bakeoff", "--train", str(files["train"]), "--test", str(files["test"]),
        "--instructions", str(files["instructions"]), "--docs", str(files["docs"]), "--k", "2",
        "--methods", "prompt,fewshot,rag,lora,full", "--model", str(tiny_model_dir), "--config", str(files["config"]),
        "--max-tokens", "6", "--latency-samples", "1", "--price-per-hour", "3.6", "--out", str(out),
        "--price-per-1k-input-tokens", "0.01",
    )  # fmt: skip


def test_every_method_runs_on_the_same_rows(bakeoff, files: dict[str, Path], tiny_model_dir: Path) -> None:
    proc, out = bakeoff
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "bakeoff.json").read_text())
    m = result["methods"]
    assert list(m) == ["prompt", "fewshot", "rag", "lora", "full"] and result["skipped"] == {} and result["complete"]
    assert result["task"] == "json" and result["quality_metric"] == "mean_field_accuracy"
    assert result["decoding"]["max_new_tokens"] == 6
    assert all(r[n]["prompt_tokens"] > 0 for r in result["rows_detail"] for n in m)

    # Prompt tokens are the rendered prompts, tokenized: recompute them for the first row.
    _, tok, _ = load_model(str(tiny_model_dir))
    row = load_rows(files["test"])[0]
    renderer = Renderer(tok)
    first = result["rows_detail"][0]
    assert first["prompt"]["prompt_tokens"] == len(renderer.prompt_ids(prompted(row.prompt, INSTRUCTIONS, [])))
    assert first["lora"]["prompt_tokens"] == first["full"]["prompt_tokens"] == len(renderer.prompt_ids(row.prompt))
    tokens = {n: r["prompt_tokens_per_request"] for n, r in m.items()}
    assert tokens["lora"] == tokens["full"] < tokens["prompt"] < tokens["fewshot"]
    assert tokens["rag"] > tokens["prompt"] + 5, "the doc chunk"
    assert first["rag"]["retrieved"] == ["colours.md:1"], "with docs, the examples are left out by default"

    for name in ("lora", "full"):
        t = m[name]["training"]
        assert t["source"] == "trained here" and t["steps"] == 2 and t["seconds"] > 0
        assert runs.is_run(Path(t["run"])) and runs.read_run(Path(t["run"])).method == name
        assert m[name]["training_cost"] == pytest.approx(t["seconds"] / 3600 * 3.6)
        be = m[name]["break_even"]["fewshot"]
        saved = tokens["fewshot"] - tokens[name]
        assert be["requests"] == pytest.approx(econ.break_even_requests(m[name]["training_cost"], saved, 0.01))
    for r in m.values():
        assert r["latency_s"] > 0 and len(r["latency_samples_s"]) == 1 and r["quality"] is not None
    assert m["rag"]["retrieval_s_per_request"] >= 0 and result["rag"]["retriever"] == "bm25"
    assert result["winner"] in m
    assert {p.name for p in out.iterdir()} >= {"bakeoff.json", "bakeoff.md", "bakeoff.html", "bakeoff.png"}
    assert "tunesmith bakeoff" in proc.stdout and "Winner:" in proc.stdout


def test_reuse_and_methods_that_cannot_run(bakeoff, files: dict[str, Path], tmp_path: Path) -> None:
    _, first = bakeoff
    options = BakeoffOptions(
        train=files["train"],
        test=files["test"],
        docs=tmp_path / "no-docs",
        k=1,
        methods=("prompt", "rag", "lora", "full"),
        lora_run=first / "lora-run",  # reused: its base model becomes the prompting methods' model
        config=files["config"],
        max_new_tokens=4,
        latency_samples=1,
        max_memory_gb=1e-6,
    )
    seen: list[dict] = []
    result = run_bakeoff(options, tmp_path / "out", on_progress=seen.append)
    assert list(result["methods"]) == ["prompt", "rag", "lora"] and result["complete"]
    # After each method, the result so far: what a stopped bakeoff leaves behind.
    assert [list(x["methods"]) for x in seen] == [["prompt"], ["prompt", "rag"], ["prompt", "rag", "lora"]]
    assert not seen[0]["complete"] and "partial result: still to run rag, lora, full" in seen[0]["notes"]
    lora = result["methods"]["lora"]["training"]
    assert lora["source"] == "reused" and lora["seconds"] == runs.read_run(first / "lora-run").wall_time_s
    assert result["skipped"]["full"].startswith("full fine-tuning needs about ")
    assert "more than the 0.00 GiB --max-memory-gb" in result["skipped"]["full"]
    assert any("is not a folder; RAG retrieved from the training examples only" in n for n in result["notes"])
    paths = write_reports(result, tmp_path / "out")
    assert "full: skipped" in paths["markdown"].read_text()


def test_nothing_runnable_still_reports(files: dict[str, Path], tmp_path: Path) -> None:
    options = BakeoffOptions(train=files["train"], test=files["test"], methods=("lora",), lora_run=tmp_path)
    result = run_bakeoff(options, tmp_path / "out")
    assert result["methods"] == {} and result["winner"] is None
    assert result["skipped"] == {"lora": f"--lora-run {tmp_path} is not a finished tunesmith run (no run.json)"}
    paths = write_reports(result, tmp_path / "out")
    assert "No method could be scored" in paths["html"].read_text()


def test_bad_input_is_one_line_exit_2(files: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    proc = tunesmith("bakeoff", "--train", str(files["train"]), "--test", str(empty))
    assert_user_error(proc, "empty.jsonl")
    assert len(proc.stderr.strip().splitlines()) == 1
    # The same UserError path as above, without paying for another process start.
    with pytest.raises(UserError, match="unknown method magic"):
        parse_methods("prompt,magic")
    with pytest.raises(UserError, match="--k must be at least 1"):
        run_bakeoff(BakeoffOptions(train=files["train"], test=files["test"], methods=("fewshot",), k=0), tmp_path)
