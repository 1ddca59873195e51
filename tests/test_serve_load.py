"""Sustained load on a real server: 32 clients for TUNESMITH_LOAD_SECONDS (default 60) against the tiny model,
mixing plain, streamed and abandoned streams (clients disconnecting mid-reply), with a concurrency limit
below the client count so that the bounded queue answers 429 too. It runs `benchmarks/serve_load.py --soak`,
the command the README's numbers come from, and prints its result.

Every request is answered 200 or 429 (nothing else, no 5xx, no broken stream); afterwards the engine holds
no sequence and no KV cache, and the server's memory is back near where it was after warm-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .serve_helpers import KEY, health, rss_mb, start_server, stop_server

REPO = Path(__file__).resolve().parents[1]
SECONDS = float(os.environ.get("TUNESMITH_LOAD_SECONDS", "60"))
CLIENTS = 32
LIMIT = 24  # sequences in flight: fewer than the clients, so some requests must be refused with 429


def soak(url: str, seconds: float, clients: int, out: Path) -> dict:
    cmd = [sys.executable, str(REPO / "benchmarks" / "serve_load.py"), "--url", f"{url}/v1", "--api-key", KEY,
           "--model", "tiny", "--soak", str(seconds), "--clients", str(clients), "--max-tokens", "32",
           "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def settled(url: str, timeout: float = 30) -> dict:
    """The engine's gauges once nothing is in flight (or the last reading, for the assertion to show)."""
    deadline = time.monotonic() + timeout
    while True:
        engine = health(url)["engine"]
        if (engine["in_flight"] == 0 and engine["active_sequences"] == 0) or time.monotonic() > deadline:
            return engine
        time.sleep(0.2)


@pytest.mark.slow
def test_sustained_mixed_load(tmp_path: Path, tiny_model_dir: Path) -> None:
    args = [f"tiny={tiny_model_dir}", "--api-key", KEY, "--no-jobs", "--max-concurrency", str(LIMIT)]
    proc, url = start_server(args, tmp_path / "home", tmp_path / "server.log")
    try:
        warm = soak(url, 5, 8, tmp_path / "warm.json")
        assert warm["statuses"].get("200", 0) > 0, warm
        settled(url)
        baseline = rss_mb(proc.pid)

        result = soak(url, SECONDS, CLIENTS, tmp_path / "soak.json")
        print(f"\nsustained load, {CLIENTS} clients for {SECONDS:.0f} s: {json.dumps(result)}")
        statuses = result["statuses"]
        assert set(statuses) <= {"200", "429", "disconnected"}, statuses
        assert statuses.get("200", 0) > CLIENTS, "most clients completed several requests"
        assert statuses.get("429", 0) > 0, "more clients than --max-concurrency: the bounded queue refused some"
        assert statuses.get("disconnected", 0) > 0

        engine = settled(url)
        assert engine["in_flight"] == 0 and engine["queued"] == 0, engine
        assert engine["active_sequences"] == 0 and engine["kv_cache_tokens"] == 0, engine
        assert engine["kv_cache_layers"] == 0, "the KV cache is freed once the last sequence leaves"
        assert engine["max_rows"] > 1, "requests were batched"
        after = rss_mb(proc.pid)
        print(f"server RSS: {baseline:.0f} MB after warm-up, {after:.0f} MB after the load")
        assert after < baseline * 1.25 + 50, f"RSS grew from {baseline:.0f} MB to {after:.0f} MB"
    finally:
        stop_server(proc)
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log and "Exception in ASGI" not in log, log[-3000:]
