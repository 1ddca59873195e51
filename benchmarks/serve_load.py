"""Requests/s and generated tokens/s of a running `tunesmith serve`, at several client concurrencies.

    TUNESMITH_HOME=/tmp/tshome tunesmith serve demo=runs/demo &
    python benchmarks/serve_load.py --model demo --concurrency 1 8

Each client is the official openai package in its own thread, sending the held-out support-triage emails
(chat, greedy, max_tokens 64) one after another; a client's next request starts when its reply is
complete. Every client sends the same number of requests. Tokens are the server's own `usage` counts.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import time
from importlib import resources
from pathlib import Path

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
    args = ap.parse_args()
    convs = prompts(args.data)
    run(args.url, args.api_key, args.model, convs, 1, 1, args.max_tokens)  # warm-up
    for n in args.concurrency:
        result = run(args.url, args.api_key, args.model, convs, n, max(1, args.requests // n), args.max_tokens)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
