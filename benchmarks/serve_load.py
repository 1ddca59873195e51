"""Requests/s and generated tokens/s of a running `tunesmith serve`, at several client concurrencies; or, with
--soak, a sustained mixed load for a fixed time.

    TUNESMITH_HOME=/tmp/tshome tunesmith serve demo=runs/demo &
    python benchmarks/serve_load.py --model demo --concurrency 1 8
    python benchmarks/serve_load.py --model demo --soak 60 --clients 32

Each client is the official openai package in its own thread, sending the held-out support-triage emails
(chat, greedy, max_tokens 64) one after another; a client's next request starts when its reply is
complete. Every client sends the same number of requests. Tokens are the server's own `usage` counts.

--soak: every client loops until the time is up, cycling through four kinds of request: two plain, one
streamed to the end, and one stream it drops after two chunks (a client disconnecting mid-stream). A 429
is counted and retried after 200 ms. It prints the answers by status, the completed requests per second
and their latency percentiles (from sending to the last byte).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import time
from importlib import resources
from pathlib import Path

import openai
from openai import OpenAI


def prompts(path: Path) -> list[list[dict[str, str]]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        messages = json.loads(line)["messages"]
        out.append([m for m in messages if m["role"] != "assistant"])
    return out


def run(url: str, key: str, model: str, convs: list, clients: int, per_client: int, max_tokens: int) -> dict:
    def client_loop(i: int) -> tuple[int, int]:
        c = OpenAI(base_url=url, api_key=key, max_retries=0, timeout=600)
        tokens = 0
        for k in range(per_client):
            conv = convs[(i * per_client + k) % len(convs)]
            r = c.chat.completions.create(model=model, messages=conv, max_tokens=max_tokens, temperature=0)
            tokens += r.usage.completion_tokens
        return per_client, tokens

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client_loop, range(clients)))
    wall = time.perf_counter() - start
    requests, tokens = sum(r[0] for r in results), sum(r[1] for r in results)
    return {
        "clients": clients,
        "requests": requests,
        "wall_s": round(wall, 2),
        "requests_per_s": round(requests / wall, 3),
        "tokens_per_s": round(tokens / wall, 1),
        "mean_completion_tokens": round(tokens / requests, 1),
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def soak(url: str, key: str, model: str, convs: list, clients: int, seconds: float, max_tokens: int) -> dict:
    """A sustained mixed load; returns answers by status and the latency of completed requests."""
    deadline = time.monotonic() + seconds

    def one(c: OpenAI, conv: list, kind: int) -> str:
        kw = {"model": model, "messages": conv, "max_tokens": max_tokens, "temperature": 0}
        if kind < 2:
            c.chat.completions.create(**kw)
            return "200"
        stream = c.chat.completions.create(stream=True, **kw)
        with stream:
            for k, _ in enumerate(stream):
                if kind == 3 and k == 1:
                    return "disconnected"  # closing the stream here closes the connection mid-reply
        return "200"

    def client_loop(i: int) -> tuple[collections.Counter, list[float]]:
        c = OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)
        statuses: collections.Counter = collections.Counter()
        latencies: list[float] = []
        k = 0
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                status = one(c, convs[(i * 7 + k) % len(convs)], (i + k) % 4)
                if status == "200":
                    latencies.append(time.perf_counter() - start)
            except openai.RateLimitError:
                status = "429"
                time.sleep(0.2)  # a short back-off, as a client would (the official one waits longer)
            except openai.APIStatusError as e:
                status = str(e.status_code)
            except openai.APIError as e:  # a connection or stream error: never expected
                status = type(e).__name__
            statuses[status] += 1
            k += 1
        return statuses, latencies

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client_loop, range(clients)))
    wall = time.perf_counter() - start
    statuses = sum((r[0] for r in results), collections.Counter())
    latencies = [x for r in results for x in r[1]]
    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "statuses": dict(sorted(statuses.items())),
        "completed_per_s": round(len(latencies) / wall, 2),
        "answered_per_s": round(sum(statuses.values()) / wall, 2),
        "latency_p50_s": round(_percentile(latencies, 0.5), 3),
        "latency_p99_s": round(_percentile(latencies, 0.99), 3),
    }


def main() -> None:
    default_data = Path(str(resources.files("tunesmith.examples") / "support_triage" / "test.jsonl"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--api-key", default="sk-local")
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", type=Path, default=default_data)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--requests", type=int, default=16, help="Requests per concurrency level (split over clients).")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--soak", type=float, metavar="SECONDS", help="Sustained mixed load for this long instead.")
    ap.add_argument("--clients", type=int, default=32, help="Concurrent clients with --soak.")
    ap.add_argument("--json", type=Path, help="Also write the --soak result here.")
    args = ap.parse_args()
    convs = prompts(args.data)
    if args.soak:
        result = soak(args.url, args.api_key, args.model, convs, args.clients, args.soak, args.max_tokens)
        print(json.dumps(result))
        if args.json:
            args.json.write_text(json.dumps(result), encoding="utf-8")
        return
    run(args.url, args.api_key, args.model, convs, 1, 1, args.max_tokens)  # warm-up
    for n in args.concurrency:
        result = run(args.url, args.api_key, args.model, convs, n, max(1, args.requests // n), args.max_tokens)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
