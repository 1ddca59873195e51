"""The graders API on a real `tunesmith serve`, driven by the official client's
`client.fine_tuning.alpha.graders.validate/run`; a hostile python grader leaves the server answering."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.serve_helpers import client

STRING = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.a}}"}
STRING |= {"operation": "eq"}


@pytest.fixture(scope="module")
def server(jobs_server: tuple[str, Path]) -> str:
    return jobs_server[0]


def test_validate_and_run_through_the_official_client(server: str) -> None:
    c = client(server)
    assert c.fine_tuning.alpha.graders.validate(grader=STRING).grader.name == "exact"
    ok = c.fine_tuning.alpha.graders.run(grader=STRING, model_sample="4", item={"a": "4"})
    assert ok.reward == 1.0 and ok.metadata.name == "exact" and ok.metadata.type == "string_check"
    assert not ok.metadata.errors.invalid_variable_error and ok.metadata.execution_time >= 0
    multi = {
        "type": "multi",
        "name": "m",
        "graders": {
            "exact": STRING,
            "py": {
                "type": "python",
                "name": "py",
                "source": "def grade(s, i):\n    return s['output_json']['v'] / 2\n",
            },
        },
        "calculate_output": "0.5 * exact + py",
    }
    out = c.fine_tuning.alpha.graders.run(grader=multi, model_sample='{"v": 1}', item={"a": '{"v": 1}'})
    assert out.reward == pytest.approx(1.0) and out.sub_rewards == {"exact": 1.0, "py": 0.5}
    missing = c.fine_tuning.alpha.graders.run(grader=STRING, model_sample="4", item={})
    assert missing.reward == 0.0 and missing.metadata.errors.invalid_variable_error
    with pytest.raises(openai.BadRequestError, match="unknown operation"):
        c.fine_tuning.alpha.graders.validate(grader=STRING | {"operation": "contains"})
    with pytest.raises(openai.BadRequestError, match="syntax error"):
        c.fine_tuning.alpha.graders.run(
            grader={"type": "python", "name": "p", "source": "def grade(:"}, model_sample="x"
        )
    with pytest.raises(openai.BadRequestError, match="not served here"):
        judge = {"type": "score_model", "name": "j", "model": "/etc", "input": [{"role": "user", "content": "x"}]}
        c.fine_tuning.alpha.graders.validate(grader=judge)


def test_a_hostile_python_grader_leaves_the_server_answering(server: str) -> None:
    c = client(server)
    loop = {"type": "python", "name": "loop", "source": "def grade(s, i):\n    while True:\n        pass\n"}
    result: dict = {}

    def call() -> None:
        result["run"] = c.fine_tuning.alpha.graders.run(grader=loop, model_sample="x")

    worker = threading.Thread(target=call)
    worker.start()
    answered_during = False
    while worker.is_alive():  # the grader runs ~10 s (the sandbox's timeout); the server keeps answering
        start = time.monotonic()
        assert httpx.get(f"{server}/health", timeout=5).status_code == 200
        assert time.monotonic() - start < 2
        answered_during = answered_during or worker.is_alive()
        worker.join(timeout=0.2)
    assert answered_during
    run = result["run"]
    assert run.reward == 0.0 and run.metadata.errors.unresponsive_reward_error
    memory = {"type": "python", "name": "mem", "source": "def grade(s, i):\n    return len(bytearray(10 * 1024**3))\n"}
    out = c.fine_tuning.alpha.graders.run(grader=memory, model_sample="x")
    assert out.reward == 0.0 and out.metadata.errors.python_grader_runtime_error
    assert "memory" in (out.metadata.errors.python_grader_runtime_error_details or "")
    sock = "import socket\ndef grade(s, i):\n    socket.create_connection(('127.0.0.1', 80))\n    return 1.0\n"
    out = c.fine_tuning.alpha.graders.run(grader={"type": "python", "name": "s", "source": sock}, model_sample="x")
    assert out.reward == 0.0 and "socket" in (out.metadata.errors.python_grader_runtime_error_details or "")
    # After all of that, the server still grades and still serves the model.
    assert c.fine_tuning.alpha.graders.run(grader=STRING, model_sample="4", item={"a": "4"}).reward == 1.0
    reply = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert reply.choices[0].message is not None
