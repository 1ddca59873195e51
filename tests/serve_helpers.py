"""Helpers shared by the server tests: a real `tunesmith serve` subprocess on a free 127.0.0.1 port, the official
openai client pointed at it, and the checks every error answer must pass."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

KEY = "sk-test-" + "k" * 24
ASK = [{"role": "user", "content": "Paint the kite teal please"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str], home: Path, log: Path, timeout: float = 180) -> tuple[subprocess.Popen, str]:
    """`python -m tunesmith serve ARGS` on a free port; returns once /health answers (or fails the test)."""
    port = free_port()
    # One thread: the tiny model gains nothing from more, and on a shared CPU spinning OpenMP threads of the
    # server and its training processes slow each other down many times over.
    env = {**os.environ, "TUNESMITH_HOME": str(home), "TUNESMITH_QUIET": "1", "OMP_NUM_THREADS": "1"}
    env.pop("TUNESMITH_API_KEY", None)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tunesmith", "serve", *args, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    pytest.fail(f"server did not answer /health within {timeout}s:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def health(url: str) -> dict:
    return httpx.get(f"{url}/health", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()


def client(url: str, key: str = KEY) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def assert_openai_error(r: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict:
    """An error answer in OpenAI's shape with this status (and code/param when given); returns its `error`."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json"), r.headers
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"], err
    if code is not None:
        assert err["code"] == code, err
    if param is not None:
        assert err["param"] == param, err
    return err


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")
