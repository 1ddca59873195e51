"""`tunesmith serve` through the official openai client, over real HTTP on 127.0.0.1.

A tiny random Llama (real SmolLM2 tokenizer) with a tiny LoRA run on top: the server serves both from one
copy of the base. Greedy replies are compared with `tunesmith.generate` token for token, so batching,
the KV-cache merge and the adapter routing cannot drift from what `tunesmith generate` says.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from .conftest import chat_rows, write_jsonl
from .serve_helpers import ASK, KEY, client, free_port, health, start_server, stop_server


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    from tunesmith.config import load_config
    from tunesmith.train.pipeline import run_training

    tmp = tmp_path_factory.mktemp("serve-run")
    data = write_jsonl(tmp / "train.jsonl", chat_rows(24))
    cfg = load_config(
        None,
        {
            "model": {"name": str(tiny_model_dir)},
            "data": {"train": str(data), "val_split": 0.0, "max_len": 256},
            "lora": {"r": 4, "alpha": 8},
            "train": {"batch_size": 4, "micro_batch_size": 4, "learning_rate": 5e-2, "max_steps": 4},
        },
    )
    return run_training(cfg, tmp / "colours").run_dir


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_run: Path) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("serve")
    args = [f"tiny={tiny_model_dir}", str(tiny_run), "--api-key", KEY, "--max-tokens", "256", "--no-jobs"]
    args += ["--precision", "fp32"]  # replies are compared token for token with fp32 `generate`
    proc, url = start_server(args, tmp / "home", tmp / "server.log")
    yield url
    stop_server(proc)


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path, tiny_run: Path):
    """What `tunesmith.generate` says for a conversation, per served model (greedy)."""
    from tunesmith.data.render import Renderer
    from tunesmith.generate import generate
    from tunesmith.models.load import load_model
    from tunesmith.models.stops import stop_token_ids

    models = {
        "tiny": load_model(str(tiny_model_dir))[:2],
        "colours": load_model(str(tiny_run), merge_adapter=False)[:2],
    }

    def ref(model: str, messages: list[dict], max_tokens: int):
        lm, tok = models[model]
        out = generate(lm, tok, [messages], max_new_tokens=max_tokens)[0]
        prompt = Renderer(tok, stop_token_ids=stop_token_ids(lm, tok)).prompt_ids(messages)
        return out, len(prompt)

    return ref


def test_models_and_health(server: str) -> None:
    c = client(server)
    assert {m.id for m in c.models.list()} == {"tiny", "colours"}
    assert c.models.retrieve("colours").id == "colours"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("no-such-model")
    assert httpx.get(f"{server}/health", timeout=10).json() == {"status": "ok"}, "liveness needs no key, shows nothing"
    assert set(health(server)["models"]) == {"tiny", "colours"}


@pytest.mark.parametrize("model", ["colours", "tiny"])
def test_chat_matches_tunesmith_generate(server: str, reference, model: str) -> None:
    r = client(server).chat.completions.create(model=model, messages=ASK, temperature=0, max_tokens=12)
    want, prompt_tokens = reference(model, ASK, 12)
    choice = r.choices[0]
    assert r.model == model and r.object == "chat.completion"
    assert choice.message.role == "assistant" and choice.message.content == want.text
    assert choice.finish_reason == want.finish_reason
    assert r.usage.prompt_tokens == prompt_tokens
    assert r.usage.completion_tokens == want.completion_tokens
    assert r.usage.total_tokens == prompt_tokens + want.completion_tokens


def test_adapter_and_base_differ(server: str) -> None:
    """Two names on one base really are two models: the adapter is routed per row."""
    c = client(server)
    base = c.chat.completions.create(model="tiny", messages=ASK, temperature=0, max_tokens=8)
    tuned = c.chat.completions.create(model="colours", messages=ASK, temperature=0, max_tokens=8)
    assert base.choices[0].message.content != tuned.choices[0].message.content


def test_streaming_equals_non_streaming(server: str) -> None:
    c = client(server)
    whole = c.chat.completions.create(model="colours", messages=ASK, temperature=0, max_tokens=16)
    chunks = list(
        c.chat.completions.create(
            model="colours",
            messages=ASK,
            temperature=0,
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    reasons = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len([ch for ch in chunks if ch.choices and ch.choices[0].delta.content]) > 1, "text arrives in pieces"
    assert text == whole.choices[0].message.content
    assert reasons == [whole.choices[0].finish_reason]
    assert chunks[-1].usage is not None and chunks[-1].usage.model_dump() == whole.usage.model_dump()


def test_completions_n_and_several_prompts(server: str, tokenizer) -> None:
    prompts = ["Paint the", "The boat"]
    r = client(server).completions.create(model="colours", prompt=prompts, n=2, max_tokens=5, temperature=0)
    assert [ch.index for ch in r.choices] == [0, 1, 2, 3]
    assert r.choices[0].text == r.choices[1].text and r.choices[2].text == r.choices[3].text  # greedy
    assert all(ch.finish_reason in ("stop", "length") for ch in r.choices)
    # Each prompt is counted once, not once per choice.
    assert r.usage.prompt_tokens == sum(len(tokenizer(p)["input_ids"]) for p in prompts)
    assert r.usage.completion_tokens <= 20


def test_seed_and_stop(server: str) -> None:
    c = client(server)
    kw = {"model": "colours", "messages": ASK, "max_tokens": 24, "temperature": 1.0}
    a = c.chat.completions.create(seed=7, **kw).choices[0].message.content
    b = c.chat.completions.create(seed=7, **kw).choices[0].message.content
    others = {c.chat.completions.create(seed=s, **kw).choices[0].message.content for s in (8, 9, 10)}
    assert a == b, "the same seed gives the same reply"
    assert others != {a}, "other seeds give other replies"
    full = c.chat.completions.create(model="colours", messages=ASK, temperature=0, max_tokens=24).choices[0]
    cut_at = len(full.message.content) // 2
    stop = full.message.content[cut_at : cut_at + 3]
    assert stop.strip(), full.message.content
    r = c.chat.completions.create(model="colours", messages=ASK, temperature=0, max_tokens=24, stop=[stop, "@@@"])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == full.message.content[: full.message.content.index(stop)]
    streamed = c.chat.completions.create(
        model="colours", messages=ASK, temperature=0, max_tokens=24, stop=stop, stream=True
    )
    assert "".join(ch.choices[0].delta.content or "" for ch in streamed) == r.choices[0].message.content


def test_errors_have_openai_shape_and_status(server: str) -> None:
    c = client(server)
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="gpt-4o", messages=ASK)
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"
    for bad in ({"temperature": 3}, {"n": 0}, {"max_tokens": 10_000}, {"top_p": 0}, {"stop": ["a"] * 5}):
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(model="colours", messages=ASK, **bad)
        assert e.value.status_code == 400 and e.value.body["param"] == next(iter(bad)), bad
    for messages in ([], [{"role": "robot", "content": "hi"}], [{"role": "user", "content": 5}], "hello"):
        with pytest.raises(openai.UnprocessableEntityError) as e:
            c.chat.completions.create(model="colours", messages=messages)
        assert e.value.body["param"] == "messages"
    raw = httpx.post(
        f"{server}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, content=b"{not json", timeout=10
    )
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_json"
    assert set(raw.json()["error"]) == {"message", "type", "param", "code"}
    huge = {"model": "colours", "messages": [{"role": "user", "content": "x" * (5 << 20)}]}
    raw = httpx.post(f"{server}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, json=huge, timeout=30)
    assert raw.status_code == 413 and raw.json()["error"]["code"] == "request_too_large"


def test_auth(server: str) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(server, key="sk-wrong").models.list()
    with pytest.raises(openai.AuthenticationError):
        client(server, key=KEY[:-1] + "x").chat.completions.create(model="colours", messages=ASK)
    r = httpx.get(f"{server}/v1/models", timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_refuses_public_bind_without_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TUNESMITH_API_KEY"}
    proc = subprocess.run(
        [sys.executable, "-m", "tunesmith", "serve", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and "refusing to bind 0.0.0.0 without an API key" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_32_concurrent_clients_are_batched(server: str) -> None:
    before = health(server)["engine"]

    def one(i: int) -> str:
        c = client(server)
        messages = [{"role": "user", "content": "Paint the car red " + "now " * (i % 7)}]
        model = ("colours", "tiny")[i % 2]
        if i % 4 == 3:
            stream = c.chat.completions.create(model=model, messages=messages, max_tokens=16, stream=True)
            return "".join(ch.choices[0].delta.content or "" for ch in stream)
        return c.chat.completions.create(model=model, messages=messages, max_tokens=16).choices[0].message.content

    start = threading.Barrier(32, timeout=60)

    def together(i: int) -> str:
        start.wait()
        return one(i)

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        replies = list(pool.map(together, range(32), timeout=180))  # any 4xx/5xx raises here
    assert len(replies) == 32 and all(isinstance(r, str) for r in replies)
    after = health(server)["engine"]
    assert after["max_rows"] > 1, "concurrent requests ran in one batch"
    assert after["steps"] - before["steps"] < 32 * 16, "fewer decode steps than running the requests one by one"


@contextlib.contextmanager
def serving_in_thread(registry, settings) -> Iterator[str]:
    """A server in a thread of this process (so the test can reach into its engine); yields its URL."""
    import uvicorn

    from tunesmith.serve.app import create_app

    port = free_port()
    app = create_app(registry, settings)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "the in-process server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def in_process_server(tiny_model_dir: Path) -> Iterator[tuple[str, object]]:
    """A second server with tiny limits (and the engine at hand to pause it)."""
    from tunesmith.serve.app import ServeSettings
    from tunesmith.serve.registry import Registry

    registry = Registry()
    registry.add(f"tiny={tiny_model_dir}")
    settings = ServeSettings(max_concurrency=1, max_body_bytes=4096, max_tokens=32, jobs=False)
    with serving_in_thread(registry, settings) as url:
        yield url, registry.served["tiny"].engine


def test_a_single_adapter_is_merged_until_something_else_is_asked(tiny_model_dir: Path, tiny_run: Path, reference):
    """One adapter on an engine is folded into the weights (no LoRA matmuls per step); the first request for
    the base unmerges it, and both models still answer exactly as `tunesmith generate` does."""
    from tunesmith.serve.app import ServeSettings
    from tunesmith.serve.registry import Registry

    registry = Registry()
    base, tuned = registry.add(f"colours={tiny_run}")
    engine = registry.served[tuned].engine
    assert engine.merged == registry.served[tuned].adapter
    lora_layers = [m for m in engine.model.modules() if hasattr(m, "merged_adapters")]
    assert lora_layers and all(m.merged for m in lora_layers)

    def ask(url: str, model: str) -> str:
        r = client(url).chat.completions.create(model=model, messages=ASK, temperature=0, max_tokens=12)
        return r.choices[0].message.content

    with serving_in_thread(registry, ServeSettings(jobs=False)) as url:
        assert ask(url, tuned) == reference("colours", ASK, 12)[0].text
        assert engine.merged is not None, "asking the merged adapter keeps it merged"
        assert ask(url, base) == reference("tiny", ASK, 12)[0].text
        assert engine.merged is None and not any(m.merged for m in lora_layers), "the base needs it unmerged"
        assert ask(url, tuned) == reference("colours", ASK, 12)[0].text, "and the adapter is routed per row again"


def test_over_the_concurrency_limit_is_429(in_process_server) -> None:
    url, engine = in_process_server
    c = client(url)
    release = threading.Event()
    paused = threading.Thread(target=engine.call, args=(lambda: release.wait(30),), daemon=True)
    paused.start()  # the engine thread now waits, so the first request stays in flight
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(c.chat.completions.create, model="tiny", messages=ASK, max_tokens=4)
        deadline = time.monotonic() + 30
        while engine.load() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(openai.RateLimitError) as e:
            c.chat.completions.create(model="tiny", messages=ASK, max_tokens=4)
        assert e.value.body["code"] == "rate_limit_exceeded"
        release.set()
        assert first.result(timeout=60).choices[0].finish_reason in ("stop", "length")
    # Limits set on this server: body size and max_tokens.
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "y" * 5000}])
    assert e.value.status_code == 413
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="tiny", messages=ASK, max_tokens=33)


def test_client_gone_before_its_turn_costs_no_compute(in_process_server) -> None:
    """A client that disconnects while its request waits (plain or streamed) frees its slot without a prefill."""
    url, engine = in_process_server
    host, port = url.removeprefix("http://").split(":")
    for stream in (False, True):
        paused, release = threading.Event(), threading.Event()

        def pause(paused=paused, release=release) -> None:
            paused.set()
            release.wait(30)

        threading.Thread(target=engine.call, args=(pause,), daemon=True).start()
        assert paused.wait(30), "the engine thread is now waiting, between two steps"
        prefills = engine.stats["prefills"]
        body = json.dumps({"model": "tiny", "messages": ASK, "max_tokens": 8, "stream": stream}).encode()
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.sendall(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        deadline = time.monotonic() + 30
        while engine.load() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.load() == 1, "the request is queued behind the paused engine"
        sock.close()
        time.sleep(1.5)  # the server notices a gone client within its 0.5 s poll (at once when streaming)
        release.set()
        while engine.load() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.load() == 0 and engine.gauges()["active_sequences"] == 0
        assert engine.stats["prefills"] == prefills, f"stream={stream}: a request nobody waits for was computed"


@pytest.mark.parametrize(
    ("text", "stops", "held"),
    [
        ("The answer is 4", ("</end>",), 0),  # nothing that could start a stop string
        ("The answer is 4</e", ("</end>",), 3),  # "</e" may still become "</end>": not sent yet
        ("ab", ("abc", "b"), 2),  # the longest possible start wins
        ("caf\ufffd", (), 1),  # half a multi-byte character: wait for the rest
    ],
)
def test_streaming_holds_back_what_may_still_become_a_stop(text: str, stops: tuple[str, ...], held: int) -> None:
    from tunesmith.serve.requests import holdback

    assert holdback(text, stops) == held
