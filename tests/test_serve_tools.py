"""Tool calling through `tunesmith serve` with the official openai client, over real HTTP.

The served model is a tiny Llama fully fine-tuned until it has memorised a few tool-calling rows
(tests/tool_fixtures.py): it calls get_weather for Paris and Rome, answers the tool's result, and says
hello without a call. Everything between the client and those weights is the real server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tunesmith.serve.tools import ToolPlan, ToolReply

from .serve_helpers import KEY, assert_openai_error, client, start_server, stop_server
from .tool_fixtures import (
    ASK_PARIS,
    ASK_ROME,
    HELLO,
    PARIS_ANSWER,
    PARIS_ARGS,
    PARIS_RESULT,
    ROME_ARGS,
    TOOLS,
    tiny_base,
    tool_rows,
    train_tool_model,
)

AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def tool_run(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    tmp = tmp_path_factory.mktemp("tool-run")
    return train_tool_model(tiny_base(tokenizer, tmp / "base"), tmp)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tool_run: Path) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("serve-tools")
    args = [f"weather={tool_run}", "--api-key", KEY, "--max-tokens", "128", "--no-jobs", "--precision", "fp32"]
    proc, url = start_server(args, tmp / "home", tmp / "server.log")
    yield url
    stop_server(proc)


def ask(url: str, messages: list, stream: bool = False, **kw):
    """One request, plain or streamed; a streamed one is put together with the SDK's own accumulator."""
    c = client(url)
    if not stream:
        return c.chat.completions.create(model="weather", messages=messages, temperature=0, **kw)
    usage = {"include_usage": True}
    with c.chat.completions.stream(model="weather", messages=messages, temperature=0, stream_options=usage, **kw) as s:
        for _ in s:
            pass
        return s.get_final_completion()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_whole_tool_loop(server: str, stream: bool) -> None:
    """Call, run the function, send its result as a tool message, get the final answer."""
    r = ask(server, ASK_PARIS, stream, tools=TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert not choice.message.content
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and len(call.id) > 10
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == PARIS_ARGS
    ran = {"get_weather": lambda city, unit="C": PARIS_RESULT if city == "Paris" else "unknown"}
    result = ran[call.function.name](**json.loads(call.function.arguments))
    # The assistant message goes back as the SDK hands it over, as people write tool loops.
    follow = [*ASK_PARIS, choice.message, {"role": "tool", "tool_call_id": call.id, "content": result}]
    final = ask(server, follow, stream, tools=TOOLS)
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == PARIS_ANSWER
    assert not final.choices[0].message.tool_calls


def test_streamed_tool_call_deltas_are_openais(server: str) -> None:
    chunks = list(
        client(server).chat.completions.create(
            model="weather", messages=ASK_ROME, tools=TOOLS, temperature=0, stream=True
        )
    )
    deltas = [tc for ch in chunks for c in ch.choices for tc in c.delta.tool_calls or []]
    assert len(deltas) == 1
    d = deltas[0]
    assert d.index == 0 and d.type == "function" and d.id.startswith("call_")
    assert d.function.name == "get_weather" and json.loads(d.function.arguments) == ROME_ARGS
    assert "".join(c.delta.content or "" for ch in chunks for c in ch.choices) == "", "no call text leaks as content"
    assert [c.finish_reason for ch in chunks for c in ch.choices if c.finish_reason] == ["tool_calls"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_no_call_needed_is_plain_content(server: str, stream: bool) -> None:
    r = ask(server, HELLO, stream, tools=TOOLS)
    assert r.choices[0].message.content == "Hello!"
    assert not r.choices[0].message.tool_calls and r.choices[0].finish_reason == "stop"


def test_tool_choice_none_leaves_the_tools_out(server: str) -> None:
    """No tools in the prompt (so not the memorised call) and no parsing: the text comes back as content."""
    with_tools = ask(server, ASK_PARIS, tools=TOOLS)
    r = ask(server, ASK_PARIS, tools=TOOLS, tool_choice="none", max_tokens=40)
    assert not r.choices[0].message.tool_calls and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens < with_tools.usage.prompt_tokens - 50, "the tool definitions were not rendered"


FORCED = ["required", {"type": "function", "function": {"name": "get_weather"}}]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("choice", FORCED, ids=["required", "named"])
def test_forced_tool_choice_starts_the_reply_with_the_call(server: str, choice, stream: bool) -> None:
    """The reply starts with the template's call opening (the memorised model then writes the same call)."""
    r = ask(server, ASK_ROME, stream, tools=TOOLS, tool_choice=choice)
    assert r.choices[0].finish_reason == "tool_calls", r.choices[0].message
    (call,) = r.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == ROME_ARGS
    # The forced opening is prompt, not completion: the same tokens are generated as without forcing.
    free = ask(server, ASK_ROME, stream, tools=TOOLS)
    assert r.usage.prompt_tokens > free.usage.prompt_tokens
    assert r.usage.completion_tokens < free.usage.completion_tokens


@pytest.mark.parametrize("choice", FORCED, ids=["required", "named"])
def test_forced_tool_choice_invents_no_call(server: str, choice) -> None:
    """The tiny model has memorised 'Hello!' after 'Say hello.' and writes it even after a forced call opening.
    No call is made up: the text (opening included) comes back as content, finish_reason 'stop'."""
    r = ask(server, HELLO, tools=TOOLS, tool_choice=choice)
    choice0 = r.choices[0]
    assert choice0.finish_reason == "stop" and not choice0.message.tool_calls
    assert choice0.message.content.startswith("<tool_call>")


@pytest.mark.parametrize("family", ["qwen2_5", "qwen3", "llama3_2", "mistral_v3"])
def test_the_call_opening_is_read_off_each_template(tokenizer, family: str) -> None:
    from tunesmith.data.render import Renderer
    from tunesmith.serve.tools import call_prefix

    from .test_render_tools import family_tokenizer

    renderer = Renderer(family_tokenizer(tokenizer, family))
    required = call_prefix(renderer, HELLO, ToolPlan(TOOLS, True, required=True))
    named = call_prefix(renderer, HELLO, ToolPlan(TOOLS, True, named="get_weather"))
    # Qwen3: the non-thinking form puts the empty think block in the prompt (data/render.py), so the call opens at once.
    opening = {"qwen2_5": "<tool_call>\n", "qwen3": "<tool_call>\n", "llama3_2": "", "mistral_v3": "[TOOL_CALLS]"}
    assert required == opening[family]
    assert named.startswith(required) and named.endswith(('arguments":', 'parameters":'))
    assert '"name": "get_weather"' in named


def _post(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={"model": "weather", **body}, headers=AUTH, timeout=60)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),  # no tools to call
        ({"tools": TOOLS, "tool_choice": "always"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"functions": [{"name": "f"}]}, "functions"),  # the legacy form is not served
    ],
)
def test_bad_tool_parameters_are_400(server: str, body: dict, param: str) -> None:
    assert_openai_error(_post(server, messages=HELLO, **body), 400, param=param)


CALL = {"id": "call_x", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}


@pytest.mark.parametrize(
    "messages",
    [
        [*HELLO, {"role": "tool", "tool_call_id": "call_x", "content": "r"}],  # answers no call
        [*HELLO, {"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "content": "r"}],  # no id
        [
            *HELLO,
            {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "{x"}}]},
            {"role": "tool", "tool_call_id": "call_x", "content": "r"},
        ],
    ],
    ids=["unanswered-id", "no-tool-call-id", "arguments-not-json"],
)
def test_malformed_tool_messages_are_422(server: str, messages: list) -> None:
    assert_openai_error(_post(server, messages=messages, tools=TOOLS), 422, param="messages")


def test_every_response_parses_in_the_sdk_types(server: str) -> None:
    """Raw JSON through the SDK's own models, strictly: nothing extra, nothing missing."""
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    raw = _post(server, messages=ASK_PARIS, tools=TOOLS, temperature=0).json()
    ChatCompletion.model_validate(raw, strict=False)
    assert raw["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"].startswith("{")
    body = {"model": "weather", "messages": ASK_PARIS, "tools": TOOLS, "stream": True}
    with httpx.stream("POST", f"{server}/v1/chat/completions", headers=AUTH, timeout=60, json=body) as r:
        lines = [x[6:] for x in r.iter_lines() if x.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    for line in lines[:-1]:
        ChatCompletionChunk.model_validate(json.loads(line))


def test_n_choices_each_get_their_own_calls(server: str) -> None:
    r = ask(server, ASK_PARIS, tools=TOOLS, n=2)
    ids = [c.message.tool_calls[0].id for c in r.choices]
    assert len(set(ids)) == 2 and all(c.finish_reason == "tool_calls" for c in r.choices)


# -- the streaming hold-back and the call filters, on text (no model needed) ------------------------------------
PLAN = ToolPlan(TOOLS, True)


def _stream(text: str, plan: ToolPlan = PLAN, step: int = 3) -> tuple[str, dict, str]:
    reply, sent = ToolReply(plan), ""
    for i in range(0, len(text), step):
        sent += reply.feed(text[i : i + step])
    delta, reason = reply.finish_delta("stop")
    return sent + delta.get("content", ""), delta, reason


def test_streaming_never_sends_a_call_as_content() -> None:
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    content, delta, reason = _stream(f"Let me check. {call}")
    assert content == "Let me check." and reason == "tool_calls"
    assert json.loads(delta["tool_calls"][0]["function"]["arguments"]) == {"city": "Oslo"}
    # What may still become a marker is held; what cannot is sent.
    reply = ToolReply(PLAN)
    assert reply.feed("Hi <tool_") == "Hi" and reply.feed("x> ok") == " <tool_x> ok"
    # A reply opening with '{' may be a Llama 3 JSON call: held to the end, then parsed.
    assert ToolReply(PLAN).feed('{"name": "get_weather", ') == ""
    content, delta, reason = _stream('{"name": "get_weather", "parameters": {"city": "Oslo"}}')
    assert content == "" and delta["tool_calls"][0]["function"]["name"] == "get_weather"
    # Plain text streams whole, identical to the non-streamed content.
    assert _stream("  Plain answer.  ")[0] == "Plain answer."


def test_parallel_false_keeps_the_first_call_and_a_named_choice_its_function() -> None:
    one = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "A"}}\n</tool_call>'
    two = '<tool_call>\n{"name": "other", "arguments": {}}\n</tool_call>'
    assert len(_stream(one + two)[1]["tool_calls"]) == 2
    assert len(_stream(one + two, ToolPlan(TOOLS, True, parallel=False))[1]["tool_calls"]) == 1
    named = _stream(two + one, ToolPlan(TOOLS, True, named="get_weather"))[1]["tool_calls"]
    assert [c["function"]["name"] for c in named] == ["get_weather"]


def test_unknown_roles_still_refused(server: str) -> None:
    with pytest.raises(openai.UnprocessableEntityError):
        client(server).chat.completions.create(model="weather", messages=[{"role": "function", "content": "x"}])


def test_the_tool_loop_benchmark_runs_a_users_agent_loop(server: str, tmp_path: Path) -> None:
    """`benchmarks/tool_loop.py`, as the README runs it against a served tool run: the exact call on every row
    that answers with one, plain and streamed, and the whole loop where the row goes on to a final answer."""
    import subprocess
    import sys

    data, out = tmp_path / "test.jsonl", tmp_path / "loop.json"
    data.write_text("".join(json.dumps(r) + "\n" for r in tool_rows()), encoding="utf-8")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "tool_loop.py"
    args = [str(data), "--url", f"{server}/v1", "--model", "weather", "--api-key", KEY, "--json", str(out)]
    subprocess.run([sys.executable, str(script), *args], check=True, capture_output=True, timeout=300)
    report = json.loads(out.read_text())
    assert report["rows"] == 3  # the hello row needs no call
    for mode in ("plain", "streamed"):
        got = report[mode]
        assert (got["exact_call"], got["loops"], got["loops_with_the_reference_answer"]) == (3, 1, 1), got
