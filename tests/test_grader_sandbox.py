"""Hostile python graders are contained: each scores 0 with an error line, the caller carries on, and the
secret under the tunesmith home stays unread. Every test waits on the grade itself (no sleeps)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tunesmith import paths
from tunesmith.graders import Grade, load_grader, sample_from_text
from tunesmith.graders.sandbox import SandboxLimits

LIMITS = SandboxLimits(timeout_s=3, workers=2)
SECRET = "tunesmith-secret-" + "s" * 16


def run(source: str, n: int = 2) -> list[Grade]:
    with load_grader({"type": "python", "name": "hostile", "source": source}, limits=LIMITS) as g:
        return g.grade([sample_from_text("x")] * n, [{"k": 1}] * n)


def assert_contained(grades: list[Grade], *words: str) -> None:
    for g in grades:
        assert g.score == 0.0, g
        assert g.error and any(w in g.error for w in words), g


@pytest.fixture
def secret_file() -> Path:
    """A key-like file in the tunesmith home (the server keeps its job database and files there)."""
    home = paths.home()
    home.mkdir(parents=True, exist_ok=True)
    path = home / "server.key"
    path.write_text(SECRET)
    yield path
    path.unlink(missing_ok=True)


def test_a_grader_that_loops_forever_is_killed_at_the_timeout() -> None:
    start = time.monotonic()
    grades = run("def grade(sample, item):\n    while True:\n        pass\n")
    assert_contained(grades, "timed out")
    assert time.monotonic() - start < 4 * LIMITS.timeout_s  # two workers in parallel, killed, not waited on


def test_a_grader_that_allocates_10_gb_fails_alone() -> None:
    grades = run("def grade(sample, item):\n    block = bytearray(10 * 1024**3)\n    return 1.0\n")
    assert_contained(grades, "memory", "killed")


def test_a_grader_cannot_open_a_socket() -> None:
    source = (
        "import socket\n"
        "def grade(sample, item):\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        "    s.connect(('127.0.0.1', 9))\n"
        "    return 1.0\n"
    )
    assert_contained(run(source), "socket")


def test_a_grader_cannot_read_the_tunesmith_home_or_the_servers_environment(secret_file: Path) -> None:
    os.environ["TUNESMITH_API_KEY"] = SECRET  # as a server started with a key has it
    try:
        reads = (
            f"def grade(sample, item):\n    return 1.0 if {SECRET!r} in open({str(secret_file)!r}).read() else 0.5\n"
        )
        assert_contained(run(reads), "refused", "No such file", "Permission")
        env = f"import os\ndef grade(sample, item):\n    return 1.0 if {SECRET!r} in str(os.environ) else 0.5\n"
        assert [g.score for g in run(env)] == [0.5, 0.5]  # an empty environment: nothing to find
        environ = f"/proc/{os.getpid()}/environ"
        parent = f"def grade(sample, item):\n    return float({SECRET!r}.encode() in open({environ!r}, 'rb').read())\n"
        assert all(g.score == 0.0 for g in run(parent))
        listing = f"import os\ndef grade(sample, item):\n    return float(len(os.listdir({str(paths.home())!r})))\n"
        assert all(g.score == 0.0 and g.error for g in run(listing))
    finally:
        del os.environ["TUNESMITH_API_KEY"]
    assert secret_file.read_text() == SECRET


def test_crashes_non_numbers_and_exits_score_zero_and_the_batch_goes_on() -> None:
    source = (
        "import os\n"
        "def grade(sample, item):\n"
        "    kind = sample['output_text']\n"
        "    if kind == 'exit': os._exit(3)\n"
        "    if kind == 'raise': raise ValueError('nope')\n"
        "    if kind == 'text': return 'one'\n"
        "    if kind == 'nan': return float('nan')\n"
        "    if kind == 'sys': raise SystemExit(0)\n"
        "    return 0.75\n"
    )
    kinds = ["ok", "exit", "ok", "raise", "text", "nan", "sys", "ok"]
    with load_grader({"type": "python", "name": "p", "source": source}, limits=LIMITS) as g:
        grades = g.grade([sample_from_text(k) for k in kinds], [{}] * len(kinds))
    by_kind = dict(zip(kinds, grades, strict=True))
    assert [g.score for k, g in zip(kinds, grades, strict=True) if k == "ok"] == [0.75, 0.75, 0.75]
    assert "exited with code 3" in (by_kind["exit"].error or "")
    assert "ValueError: nope" in (by_kind["raise"].error or "")
    assert "not a number" in (by_kind["text"].error or "")
    assert "nan" in (by_kind["nan"].error or "")
    assert "SystemExit" in (by_kind["sys"].error or "")


def test_workers_are_reused_across_a_batch_and_kept_for_the_next() -> None:
    source = "import os\ndef grade(sample, item):\n    return float(os.getpid())\n"
    with load_grader({"type": "python", "name": "p", "source": source}, limits=LIMITS) as g:
        first = g.grade([sample_from_text("x")] * 20, [{}] * 20)
        start = time.monotonic()
        second = g.grade([sample_from_text("x")] * 200, [{}] * 200)
        elapsed = time.monotonic() - start
    assert len({x.score for x in first}) <= LIMITS.workers  # 20 samples, at most 2 processes
    assert {x.score for x in second} <= {x.score for x in first}  # the same processes, still warm
    assert elapsed < 5, f"200 samples on warm workers took {elapsed:.1f} s"


def test_a_source_that_fails_at_load_fails_each_sample_once_without_retrying_forever() -> None:
    grades = run("raise RuntimeError('broken at import')\ndef grade(sample, item):\n    return 1.0\n", n=5)
    assert_contained(grades, "broken at import")
