"""The rest of the SDK's `client.fine_tuning.jobs`, through the official openai client against a real
server: pause and resume (a checkpoint at the step boundary, and the resumed job continues exactly
there), metadata and `jobs.list(metadata=...)`, estimated_finish, the results CSV in result_files, and
the 400s (pausing a finished job, integrations, too much metadata). One training job in all.

Every job, file and event the server returns is validated again, strictly, with the SDK's own pydantic
types (the client itself parses leniently, so that alone would prove little). The one value outside
those types is the status `paused`: OpenAI's status after jobs.pause, which the SDK's Literal does not
list (its lenient parsing keeps it, as the test shows)."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types import FileObject
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent

from .conftest import chat_rows, write_jsonl
from .serve_helpers import client
from .test_jobs import DONE, job_dir, training_stopped, upload, wait_for

RESULTS_HEADER = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]


def strict_job(job: FineTuningJob) -> FineTuningJob:
    """The job validated by the SDK's type, not just constructed ("paused" swapped for a listed status)."""
    raw = job.model_dump()
    if raw["status"] == "paused":
        raw["status"] = "queued"
    return FineTuningJob.model_validate(raw)


def metric_lines(run: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_refused_before_any_training(jobs_server: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = jobs_server
    c = client(url, key="sk-unused")
    file_id = upload(c, write_jsonl(tmp_path / "train.jsonl", chat_rows(8)))
    integration = {"type": "wandb", "wandb": {"project": "p"}}
    with pytest.raises(openai.BadRequestError, match="integrations are not supported") as e:
        c.fine_tuning.jobs.create(model="tiny", training_file=file_id, integrations=[integration])
    assert e.value.body["param"] == "integrations"
    with pytest.raises(openai.BadRequestError, match="at most 16 key-value pairs") as e:
        c.fine_tuning.jobs.create(model="tiny", training_file=file_id, metadata={f"k{i}": "v" for i in range(17)})
    assert e.value.body["param"] == "metadata"
    with pytest.raises(openai.BadRequestError, match="longer than 512"):
        c.fine_tuning.jobs.create(model="tiny", training_file=file_id, metadata={"k": "v" * 513})
    with pytest.raises(openai.BadRequestError, match="metadata filters are metadata"):
        c.fine_tuning.jobs.list(extra_query={"metadata": "team"})
    with pytest.raises(openai.NotFoundError):
        c.fine_tuning.jobs.pause("ftjob-" + "0" * 24)
    assert c.fine_tuning.jobs.list(metadata={"nobody": "here"}).data == []


def test_pause_resume_metadata_and_results(jobs_server: tuple[str, Path], tmp_path: Path) -> None:
    url, home = jobs_server
    c = client(url, key="sk-unused")
    file_id = upload(c, write_jsonl(tmp_path / "train.jsonl", chat_rows(24)))
    val_id = upload(c, write_jsonl(tmp_path / "val.jsonl", chat_rows(8, seed=1)))
    # Checkpoints only at the end (save_every is huge): the one a pause leaves is the pause's own.
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 30, "batch_size": 4}}}
    method["tunesmith"] = {"lora_r": 4, "save_every": 100_000}
    a = c.fine_tuning.jobs.create(
        model="tiny",
        training_file=file_id,
        validation_file=val_id,
        seed=5,
        method=method,
        metadata={"team": "search", "run": "a"},
    )
    assert a.metadata == {"team": "search", "run": "a"} and a.estimated_finish is None
    # B waits behind A (one job trains at a time): paused while queued, it never starts.
    b = c.fine_tuning.jobs.create(model="tiny", training_file=file_id, metadata={"team": "search", "run": "b"})
    b = c.fine_tuning.jobs.pause(b.id)
    assert b.status == "paused" and strict_job(b).metadata == {"team": "search", "run": "b"}
    with pytest.raises(openai.BadRequestError, match="already paused"):
        c.fine_tuning.jobs.pause(b.id)

    # Running: the estimate appears with the first steps, in the future of the job's start.
    run = job_dir(home, a.id)
    running = wait_for(
        "an estimated finish", lambda: (j := c.fine_tuning.jobs.retrieve(a.id)).estimated_finish and j, every=0.1
    )
    assert running.status == "running" and running.estimated_finish >= running.created_at
    assert running.estimated_finish < time.time() + 3600, "a tiny model's job ends within the hour"
    strict_job(running)

    paused = c.fine_tuning.jobs.pause(a.id)
    assert paused.status == "paused" and paused.estimated_finish is None
    stopped = wait_for(
        "the pause's checkpoint",
        lambda: (
            training_stopped(home, a.id)
            and next(
                (e.message for e in c.fine_tuning.jobs.list_events(a.id).data if "Training paused" in e.message), 0
            )
        ),
    )
    step = int(re.search(r"after step (\d+); checkpoint saved", stopped).group(1))
    total = next(x["total_steps"] for x in metric_lines(run) if "total_steps" in x)
    assert 0 < step < total, "paused mid-job"
    assert [p.name for p in (run / "checkpoints").glob("step-*")] == [f"step-{step:06d}"]
    before = metric_lines(run)
    assert max(x["step"] for x in before) == step, "the checkpoint is at the last step trained: none is lost"
    time.sleep(1)  # a paused job stays paused: nothing trains it
    assert c.fine_tuning.jobs.retrieve(a.id).status == "paused" and metric_lines(run) == before

    # While both are paused: metadata filters, as the SDK sends them (metadata[k]=v), newest first, paged.
    ids = lambda **kw: [j.id for j in c.fine_tuning.jobs.list(**kw).data]  # noqa: E731
    assert ids(metadata={"team": "search"}) == [b.id, a.id]
    assert ids(metadata={"team": "search", "run": "a"}) == [a.id]
    assert ids(metadata={"team": "other"}) == []
    first = c.fine_tuning.jobs.list(metadata={"team": "search"}, limit=1)
    assert [j.id for j in first.data] == [b.id] and first.has_more
    assert ids(metadata={"team": "search"}, after=b.id, limit=1) == [a.id]
    assert not {a.id, b.id} & set(ids(extra_query={"metadata": "null"}))

    cancelled = c.fine_tuning.jobs.cancel(b.id)  # a paused job can be cancelled
    assert cancelled.status == "cancelled"
    with pytest.raises(openai.BadRequestError, match="only a paused job can be resumed"):
        c.fine_tuning.jobs.resume(b.id)

    resumed = c.fine_tuning.jobs.resume(a.id)
    assert resumed.status == "queued"
    done = wait_for("the job to finish", lambda: (j := c.fine_tuning.jobs.retrieve(a.id)).status in DONE and j)
    assert done.status == "succeeded", done.error
    assert done.estimated_finish is None and done.metadata == {"team": "search", "run": "a"}
    after = metric_lines(run)
    assert [x["step"] for x in after if "loss" in x] == list(range(1, total + 1)), "no gap, no repeat"
    assert after[: len(before)] == before, "steps up to the pause are those trained before it"
    events = list(c.fine_tuning.jobs.list_events(a.id, limit=100))  # every page
    assert len([e for e in events if e.type == "metrics"]) == total
    messages = [e.message for e in events if e.type == "message"]
    assert {"Job paused", "Job resumed", "Job resumed from its last checkpoint"} <= set(messages), messages
    for event in events:
        FineTuningJobEvent.model_validate(event.model_dump())

    # The results file: OpenAI's columns, one row per step, the values of metrics.jsonl.
    assert len(done.result_files) == 1
    info = FileObject.model_validate(c.files.retrieve(done.result_files[0]).model_dump())
    assert info.purpose == "fine-tune-results" and info.filename == "step_metrics.csv"
    text = c.files.content(info.id).text
    assert info.bytes == len(text.encode())
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == RESULTS_HEADER and len(rows) == total + 1
    losses = {x["step"]: x["loss"] for x in after if "loss" in x}
    assert all(float(r[1]) == pytest.approx(losses[int(r[0])], abs=1e-5) for r in rows[1:])
    assert all(0.0 <= float(r[2]) <= 1.0 for r in rows[1:])
    valid = {x["step"]: x["val_loss"] for x in after if "val_loss" in x}
    assert valid and total in valid, "validation runs every few steps and at the end"
    assert {int(r[0]): float(r[3]) for r in rows[1:] if r[3]} == pytest.approx(valid, abs=1e-5)
    assert info.id in [f.id for f in c.files.list(purpose="fine-tune-results").data]

    with pytest.raises(openai.BadRequestError, match="cannot pause the job: the job has already succeeded"):
        c.fine_tuning.jobs.pause(a.id)
    with pytest.raises(openai.BadRequestError, match="only a paused job can be resumed, and this one is succeeded"):
        c.fine_tuning.jobs.resume(a.id)
    strict_job(done)
