"""`tunesmith train --method rft`: prompts + a grader through the one loop, on the tiny model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tunesmith.cli.main import main

from .conftest import write_jsonl

COLOURS = ["red", "green", "blue", "amber", "violet", "teal"]
THINGS = ["car", "house", "kite", "door", "scarf", "boat", "lamp"]


def prompt_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        c, t = rng.choice(COLOURS), rng.choice(THINGS)
        rows.append({"messages": [{"role": "user", "content": f"Paint the {t} {c}"}], "colour": c, "object": t})
    return rows


def fuzzy(reference: str = "{{item.colour}}") -> dict:
    return {
        "type": "text_similarity",
        "name": "fuzzy",
        "input": "{{sample.output_text}}",
        "reference": reference,
        "evaluation_metric": "fuzzy_match",
    }


def cli(capsys, *argv: object) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
        raise SystemExit(0)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def train_args(tmp_path: Path, model: Path, grader: dict, rows: list[dict], *extra: object) -> list[object]:
    g = tmp_path / "grader.json"
    g.write_text(json.dumps(grader))
    data = write_jsonl(tmp_path / "prompts.jsonl", rows)
    return ["train", "--method", "rft", "--grader", g, "--data", data, "--model", model, "--out", tmp_path / "run",
            "--max-completion-len", 8, "--generations", 4, *extra]  # fmt: skip


def test_rft_run_logs_rewards_and_validates_on_the_grade(
    tmp_path: Path, tiny_model_dir: Path, capsys, monkeypatch
) -> None:
    """A run from the base model: every automatic choice printed, metrics.jsonl has the reward metrics and
    the time split per step, validation is the mean grade, and run.json records the RFT objective."""
    from tunesmith import runs

    monkeypatch.setenv("TUNESMITH_QUIET", "0")  # the printed choices are what is tested

    args = train_args(tmp_path, tiny_model_dir, fuzzy(), prompt_rows(20), "--max-steps", 4, "--eval-every", 2)
    code, out, err = cli(capsys, *args)
    assert code == 0, out + err
    said = out + err
    for choice in ("sampling temperature 1", "learning rate 0.0001", "held out 4 of 20 prompts", "no KL term"):
        assert choice in said
    assert "mean grade of greedy completions (temperature 0, up to 8 tokens)" in said
    assert "probe: 8 prompts x 4 samples" in said
    lines = [json.loads(x) for x in (tmp_path / "run" / runs.METRICS).read_text().splitlines()]
    steps = [x for x in lines if "reward_mean" in x]
    vals = [x for x in lines if "val_grade" in x]
    assert len(steps) == 4 and [v["step"] for v in vals] == [0, 2, 4]  # the start is validated too
    keys = {"reward_mean", "reward_std", "zero_variance_groups", "completion_len", "sample_s", "grade_s", "train_s"}
    assert keys <= steps[0].keys()
    assert steps[0]["trained_tokens"] == 4 * 4 * 8  # 4 prompts x K 4 x 8 tokens (a random model never stops)
    assert 0 < steps[0]["reward_mean"] < 1 and steps[0]["grad_norm"] > 0
    assert vals[0]["val_loss"] == -vals[0]["val_grade"]
    info = runs.read_run(tmp_path / "run")
    assert info.objective == "rft" and info.method == "lora"
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()

    # `tunesmith eval RUN --grader`: base against tuned on the mean grade, every row's grades in the report
    held = write_jsonl(tmp_path / "held.jsonl", prompt_rows(5, seed=9))
    code, out, err = cli(capsys, "eval", tmp_path / "run", "--grader", tmp_path / "grader.json", "--data", held)
    assert code == 0, out + err
    report = json.loads((tmp_path / "run" / "eval" / "grades.json").read_text())
    assert report["decoding"].startswith("greedy (temperature 0), up to 8 new tokens")
    assert report["base"]["model"] == str(tiny_model_dir) and len(report["rows"]) == 5
    assert report["tuned"]["mean_grade"] == pytest.approx(sum(r["tuned"] for r in report["rows"]) / 5)
    assert all(0 <= r["base"] <= 1 and isinstance(r["tuned_reply"], str) for r in report["rows"])
    assert "| 5 |" in (tmp_path / "run" / "eval" / "grades.md").read_text()


def _run_with_scripted_grades(
    tmp_path: Path, model: Path, capsys, monkeypatch, grades: list[list[float]], steps: int, every: int
) -> str:
    """An RFT run whose validations (the start's first) return the next per-prompt grades: a random model's
    own are noise, and the loop's bookkeeping and the weights kept are what is tested. Returns its output."""
    from tunesmith.train.objectives.rft import GRPO

    script = iter(grades)

    def scripted(self, model, prompts):
        rows = next(script)
        assert len(rows) == len(prompts)
        mean = sum(rows) / len(rows)
        return {"loss": -mean, "grade": mean, "rows": [-g for g in rows]}

    monkeypatch.setattr(GRPO, "evaluate", scripted)
    monkeypatch.setenv("TUNESMITH_QUIET", "0")
    args = train_args(tmp_path, model, fuzzy(), prompt_rows(20), "--max-steps", steps, "--eval-every", every,
                      "--lr", 0.05)  # fmt: skip
    code, out, err = cli(capsys, *args)
    assert code == 0, out + err
    return out + err


def _lora_b_is_zero(run: Path) -> bool:
    from safetensors.torch import load_file

    tensors = load_file(run / "adapter" / "adapter_model.safetensors")
    b = [t for name, t in tensors.items() if "lora_B" in name]
    assert b
    return all(float(t.abs().max()) == 0.0 for t in b)  # a fresh adapter: the start's weights


def test_the_start_is_kept_when_every_step_grades_clearly_worse(
    tmp_path: Path, tiny_model_dir: Path, capsys, monkeypatch
) -> None:
    """The start's held-out grade is measured first: when every later validation is clearly worse (on every
    prompt here), the run ends on the start's weights (LoRA's B matrices all zero), and says so."""
    grades = [[1.0, 1.0, 0.8, 0.8], [0.5] * 4, [0.4] * 4, [0.3] * 4]
    said = _run_with_scripted_grades(tmp_path, tiny_model_dir, capsys, monkeypatch, grades, steps=3, every=1)
    assert "kept step 0's weights (validation grade 0.9000) (every later validation graded clearly worse" in said
    assert _lora_b_is_zero(tmp_path / "run"), "the trained weights were kept, not the start's"
    steps = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(x.get("grad_norm", 0) > 0 for x in steps), "the steps did train"


def test_a_drop_within_noise_keeps_the_trained_weights(
    tmp_path: Path, tiny_model_dir: Path, capsys, monkeypatch
) -> None:
    """A few dozen prompts grade in coarse steps: one prompt that flips is noise, not a reason to throw the
    training away. The last validation is a little below the start's (one prompt of four lost a quarter),
    so the run ends on its weights, not the start's."""
    grades = [[1.0, 1.0, 0.75, 0.5], [1.0, 1.0, 0.75, 0.25]]
    said = _run_with_scripted_grades(tmp_path, tiny_model_dir, capsys, monkeypatch, grades, steps=2, every=2)
    assert "kept step 2's weights (validation grade 0.7500)" in said
    assert not _lora_b_is_zero(tmp_path / "run"), "the start's weights were kept over a drop within noise"


def test_the_probe_stops_a_start_that_never_passes(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    never = {"type": "string_check", "name": "never", "input": "{{sample.output_text}}",
             "reference": "ZZZ {{item.colour}}", "operation": "eq"}  # fmt: skip
    code, out, err = cli(capsys, *train_args(tmp_path, tiny_model_dir, never, prompt_rows(12)))
    assert code == 2
    assert "the start never passes this grader" in err
    assert "start from an SFT run or loosen the grader" in err
    assert "Traceback" not in out + err
    assert not (tmp_path / "run" / "metrics.jsonl").exists(), "no step was spent"


def test_eval_data_after_an_rft_run_is_graded(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    held = write_jsonl(tmp_path / "held.jsonl", prompt_rows(3, seed=5))
    args = train_args(tmp_path, tiny_model_dir, fuzzy(), prompt_rows(8), "--max-steps", 1, "--eval-data", held)
    code, out, err = cli(capsys, *args)
    assert code == 0, out + err
    report = json.loads((tmp_path / "run" / "eval" / "grades.json").read_text())
    assert report["grader"] == "fuzzy" and len(report["rows"]) == 3


def test_a_failing_python_grader_scores_zero_and_says_so(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    """A python grader that raises on some samples: those score 0 with a warning, the run goes on (here with
    the KL term, which metrics.jsonl logs)."""
    source = (
        "def grade(sample, item):\n"
        "    if len(sample['output_text']) % 2:\n"
        "        raise ValueError('odd')\n"
        "    return 1.0\n"
    )
    grader = {"type": "python", "name": "flaky", "source": source}
    args = train_args(tmp_path, tiny_model_dir, grader, prompt_rows(8), "--max-steps", 3, "--beta", 0.04, "--lr", 0.05)
    code, out, err = cli(capsys, *args)
    assert code == 0, out + err
    assert "grader:" in out + err and "(scored 0)" in out + err and "Traceback" not in out + err
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum(x.get("grader_errors", 0) for x in lines) > 0
    steps = [x for x in lines if "reward_mean" in x]
    assert steps[0]["kl"] == 0.0 and steps[-1]["kl"] > 0, "the KL term: 0 at the start, then the policy moves"
    assert "reference_s" in steps[0]


@pytest.mark.parametrize(
    ("rows", "grader", "message"),
    [
        ([{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]}], fuzzy(),
         "ends with a 'assistant' message"),
        (prompt_rows(4), fuzzy("{{item.size}}"), "names {{item.size}}, which no row has"),
        (prompt_rows(4), {"type": "python", "name": "p", "source": "def nope(:"}, "python"),
        (prompt_rows(4), {"type": "no_such_type", "name": "x"}, "no_such_type"),
        (prompt_rows(4), fuzzy(), "--beta (a KL term to the start) needs LoRA"),
    ],
)  # fmt: skip
def test_bad_rows_and_graders_are_one_line_and_exit_2(tmp_path, tiny_model_dir, capsys, rows, grader, message) -> None:
    extra = ("--objective", "rft", "--method", "full", "--beta", 0.04) if "--beta" in message else ()
    code, out, err = cli(capsys, *train_args(tmp_path, tiny_model_dir, grader, rows), *extra)
    assert code == 2, out + err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists(), "refused before the run folder is made"


def test_the_shipped_triage_grader_scores_each_label_field() -> None:
    """The RFT example's python grader: 1 for the reference labels, 3/4 with one label wrong, 0 for prose;
    the shipped files are what the generator writes."""
    from tunesmith.examples import make_triage_rft as gen
    from tunesmith.graders import load_grader, sample_from_text

    folder = gen.OUT_DIR
    rows = [json.loads(x) for x in (folder / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 60 and rows[0]["messages"][-1]["role"] == "user"
    item = rows[0]
    right = {f: item[f] for f in gen.FIELDS} | {"summary": "anything"}
    one_off = right | {"priority": "urgent" if item["priority"] != "urgent" else "low"}
    replies = [json.dumps(right), json.dumps(one_off), "The category is " + item["category"], "[1, 2]"]
    with load_grader(folder / "grader.json") as grader:
        grader.check_items(rows)
        grades = grader.grade([sample_from_text(r) for r in replies], [item] * 4)
    assert [g.score for g in grades] == [1.0, 0.75, 0.0, 0.0]
    assert all(g.error is None for g in grades)
    assert len((folder / "sft.jsonl").read_text().splitlines()) == gen.SFT_ROWS


def test_the_kept_grade_is_the_latest_within_noise_of_the_highest() -> None:
    """The bookkeeping on its own: a drop on one prompt of 24 is noise, a drop on every prompt is not; later
    validations are compared with the highest so far (not the last kept one, so small drops cannot add up),
    and early stopping counts only the clearly worse ones."""
    from tunesmith.train.loop_state import LoopState
    from tunesmith.train.validation import clearly_worse, note_validation

    def losses(good: int, n: int = 24) -> list[float]:  # `good` prompts graded 1, the rest 0.5 (loss = -grade)
        return [-1.0] * good + [-0.5] * (n - good)

    assert not clearly_worse(losses(11), losses(12)) and not clearly_worse(losses(12), losses(12))
    assert clearly_worse([-0.5] * 24, [-0.75] * 24)
    assert not clearly_worse(losses(12), losses(11)), "better is never worse"

    state, kept = LoopState(), []
    for step, good in [(0, 12), (10, 18), (20, 16), (30, 15), (40, 8), (50, 9)]:
        rows, state.step = losses(good), step
        if note_validation(state, sum(rows) / len(rows), 2, None, rows):
            kept.append(step)
        if state.stopped_early:
            break
    # 16 and 15 of 24 are within noise of the highest (18 at step 10): kept; 8 and 9 are clearly below it
    assert kept == [0, 10, 20, 30] and state.best_step == 30 and state.top_rows == losses(18)
    assert state.stopped_early and state.step == 50
