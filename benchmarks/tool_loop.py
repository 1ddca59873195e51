"""A served tool-calling run against held-out rows, through the official `openai` client: what a user's agent does.

For every held-out row whose reference answers the user with a tool call (OpenAI's chat format with `tools`):
ask the server with the row's tools, plain and streamed, and compare the returned `message.tool_calls` with the
reference (same function, arguments equal as parsed JSON). Where the row goes on (the tool's result, then a final
answer), run the loop as an agent would: send back the assistant message the SDK returned and the tool's result
(the row's recorded result, the "function" here), and compare the final answer with the reference.

    tunesmith serve orders=RUN_DIR --port 8011 &
    python benchmarks/tool_loop.py --url http://127.0.0.1:8011/v1 --model orders DIR/test.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from openai import OpenAI

from tunesmith.eval.metrics import same_calls


def _exact(calls: list[Any], want: dict[str, Any]) -> bool:
    """The SDK's returned calls are the reference call, by eval's own rule (``metrics.same_calls``)."""
    try:
        got = [(c.function.name, json.loads(c.function.arguments)) for c in calls]
    except (TypeError, ValueError):
        return False
    reference = {"name": want["function"]["name"], "arguments": json.loads(want["function"]["arguments"])}
    return same_calls(got, [reference])


def _ask(client: OpenAI, model: str, messages: list, tools: list, stream: bool) -> Any:
    """One chat completion at temperature 0; a streamed one is put together by the SDK's own accumulator."""
    if not stream:
        return client.chat.completions.create(model=model, messages=messages, tools=tools, temperature=0)
    with client.chat.completions.stream(model=model, messages=messages, tools=tools, temperature=0) as s:
        for _ in s:
            pass
        return s.get_final_completion()


def run_row(client: OpenAI, model: str, row: dict[str, Any], stream: bool) -> dict[str, bool | None]:
    """(exact call, loop completed with the reference answer or None where the row ends on the call)."""
    messages = row["messages"]
    turn = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
    want = messages[turn]["tool_calls"][0]
    reply = _ask(client, model, messages[:turn], row["tools"], stream).choices[0]
    calls = reply.message.tool_calls or []
    exact = reply.finish_reason == "tool_calls" and _exact(calls, want)
    if len(messages) <= turn + 2 or not exact:
        return {"exact_call": exact, "final_answer": None if len(messages) <= turn + 2 else False}
    result = {"role": "tool", "tool_call_id": calls[0].id, "content": messages[turn + 1]["content"]}
    final = _ask(client, model, [*messages[:turn], reply.message, result], row["tools"], stream).choices[0]
    ok = final.finish_reason == "stop" and not final.message.tool_calls
    return {"exact_call": exact, "final_answer": ok and final.message.content == messages[turn + 2]["content"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--api-key", default="sk-local")
    parser.add_argument("--json", type=Path, help="Write the per-row results and the totals here.")
    args = parser.parse_args()
    client = OpenAI(base_url=args.url, api_key=args.api_key)
    rows = [json.loads(x) for x in args.data.read_text().splitlines() if x.strip()]
    calls = [r for r in rows if any(m.get("tool_calls") for m in r["messages"])]
    report: dict[str, Any] = {"rows": len(calls)}
    for stream in (False, True):
        results = [run_row(client, args.model, r, stream) for r in calls]
        loops = [x["final_answer"] for x in results if x["final_answer"] is not None]
        mode = "streamed" if stream else "plain"
        report[mode] = {
            "exact_call": sum(bool(x["exact_call"]) for x in results),
            "loops": len(loops),
            "loops_with_the_reference_answer": sum(bool(x) for x in loops),
            "per_row": results,
        }
        print(
            f"{mode}: exact call {report[mode]['exact_call']}/{len(calls)}; tool loops ending in the reference "
            f"answer {report[mode]['loops_with_the_reference_answer']}/{len(loops)}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
