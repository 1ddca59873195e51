"""The jobs API's reinforcement fine-tuning: prompt files accepted at upload, the grader validated at job
creation (a 400 with the reason, never a job that fails later), and the grader shown back in the job's
``method``. The training itself is `tunesmith train --method rft` (``worker.job_overrides``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.serve.jobs import Store
from tunesmith.serve.schemas import ApiError, JobRequest


def rft_rows(path: Path) -> int | None:
    """How many reinforcement fine-tuning rows the file holds, or None if it is not such a file."""
    from tunesmith.data.rft import read_prompts
    from tunesmith.errors import UserError

    try:
        return len(read_prompts(path))
    except UserError:
        return None


def check_data(store: Store, job: dict[str, Any]) -> None:
    """A reinforcement job's files are prompts, and its grader's templates name fields their rows have."""
    from tunesmith.data.rft import read_prompts
    from tunesmith.errors import UserError
    from tunesmith.graders import load_grader

    items = []
    for param in ("training_file", "validation_file"):
        if job[param]:
            try:
                items += [p.item for p in read_prompts(store.file_path(job[param]))]
            except UserError as e:
                message = f"{param}: {e}".replace(str(store.root), "$TUNESMITH_HOME/serve")
                raise ApiError(400, message, param=param) from None
    with load_grader(job["options"]["grader"]) as grader:
        try:
            grader.check_items(items)
        except UserError as e:
            raise ApiError(400, f"invalid grader: {e}", param="method.reinforcement.grader") from None


def valid_grader(body: JobRequest) -> dict[str, Any] | None:
    """A reinforcement job's grader, validated (an unknown type, a missing field, a bad formula, python
    source that does not compile or lacks grade: 400 with the reason); None for other methods."""
    from tunesmith.graders import GraderError, load_grader

    if body.method is None or body.method.reinforcement is None:
        return None
    spec = body.method.reinforcement.grader
    try:
        load_grader(spec).close()
    except GraderError as e:
        raise ApiError(400, f"invalid grader: {e}", param="method.reinforcement.grader") from None
    return spec


def method_body(job: dict[str, Any], hp: dict[str, Any]) -> dict[str, Any]:
    grader = job["options"].get("grader")
    return {"hyperparameters": hp, **({"grader": grader} if grader is not None else {})}
