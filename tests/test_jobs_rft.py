"""Reinforcement fine-tuning through the jobs API and the official openai client, on the tiny model:
method type "reinforcement" with a grader; a bad grader is refused at creation with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
import yaml

from .conftest import write_jsonl
from .serve_helpers import client
from .test_jobs import DONE, job_dir, upload, wait_for
from .test_rft_train import fuzzy, prompt_rows


def test_a_reinforcement_job_through_the_official_client(jobs_server: tuple[str, Path], tmp_path: Path) -> None:
    url, home = jobs_server
    c = client(url, key="sk-unused")
    file_id = upload(c, write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(12)))
    assert c.files.retrieve(file_id).filename == "prompts.jsonl"
    hp = {
        "n_epochs": 1,
        "batch_size": 4,
        "compute_multiplier": 0.5,  # K = 0.5 x the 8 tunesmith picks for 12 prompts
        "eval_interval": 1,
        "reasoning_effort": "high",
    }
    method = {"type": "reinforcement", "reinforcement": {"grader": fuzzy(), "hyperparameters": hp}}
    job = c.fine_tuning.jobs.create(model="tiny", training_file=file_id, method={**method, "tunesmith": {"lora_r": 4}})
    assert job.method.type == "reinforcement" and job.method.reinforcement.grader.type == "text_similarity"
    done = lambda: (j := c.fine_tuning.jobs.retrieve(job.id)).status in DONE and j  # noqa: E731
    job = wait_for("the job to finish", done, timeout=900)  # sampling is slow on a loaded 2-core machine
    assert job.status == "succeeded", job.error
    assert job.method.reinforcement.hyperparameters.n_epochs == 1
    run = json.loads((job_dir(home, job.id) / "run.json").read_text())
    assert run["objective"] == "rft" and run["steps"] == 2  # 8 training prompts (4 held out), 4 a step
    cfg = yaml.safe_load((job_dir(home, job.id) / "config.yaml").read_text())
    assert cfg["train"]["generations"] == 4 and cfg["train"]["eval_every"] == 1
    events = c.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert any("reasoning_effort 'high' ignored" in e.message and e.level == "warn" for e in events)
    metrics = [e.data for e in events if e.type == "metrics"]
    assert metrics and all("train_reward_mean" in m and "train_zero_variance_groups" in m for m in metrics)
    assert any("valid_reward_mean" in m for m in metrics)
    assert sorted(m["step"] for m in metrics) == [1, 2]  # the start's validation stays in the run's metrics.jsonl
    lines = [json.loads(x) for x in (job_dir(home, job.id) / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["step"] == 0 and "val_grade" in lines[0]


@pytest.mark.parametrize(
    ("grader", "reason"),
    [
        ({"type": "no_such_type", "name": "x"}, "no_such_type"),
        ({"type": "python", "name": "p", "source": "def grade(sample, item:\n    return 1"}, "python"),
        ({"type": "python", "name": "p", "source": "def other(sample, item):\n    return 1"}, "grade"),
        ({"type": "string_check", "name": "s", "input": "{{sample.output_text}}"}, "reference"),
        (fuzzy("{{item.size}}"), "{{item.size}}, which no row has"),
    ],
)
def test_a_bad_grader_is_refused_at_creation(jobs_server, tmp_path: Path, grader: dict, reason: str) -> None:
    url, _ = jobs_server
    c = client(url, key="sk-unused")
    file_id = upload(c, write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(6)))
    method = {"type": "reinforcement", "reinforcement": {"grader": grader}}
    with pytest.raises(openai.BadRequestError, match="invalid grader") as e:
        c.fine_tuning.jobs.create(model="tiny", training_file=file_id, method=method)
    assert reason in str(e.value)
    assert not c.fine_tuning.jobs.list().data or all(j.status != "queued" for j in c.fine_tuning.jobs.list().data)
