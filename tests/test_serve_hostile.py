"""Nobody let in: a real `tunesmith serve` on 127.0.0.1 under hostile input.

1. schemathesis fuzzes every operation of the server's own /openapi.json (valid and invalid requests):
   no 5xx, and every answer (status, content type, body) is one the document declares.
2. Hand-written hostile requests, each answered with a 4xx in OpenAI's error shape.
3. Ids, model names and upload file names never reach outside the data folder.
4. The key is required and never written to the server's output or its database.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from .conftest import chat_rows
from .serve_helpers import ASK, KEY, assert_openai_error, client, start_server, stop_server

AUTH = {"Authorization": f"Bearer {KEY}"}
WRONG_KEY = "sk-wrong-" + "w" * 24  # a key someone tried: it must not be written anywhere either
MAX_BODY = 64 << 10
MAX_FILE = 1 << 20
FUZZ_EXAMPLES = int(os.environ.get("TUNESMITH_FUZZ_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[tuple[str, Path, Path]]:
    tmp = tmp_path_factory.mktemp("hostile")
    args = [f"tiny={tiny_model_dir}", "--api-key", KEY, "--max-tokens", "16", "--max-concurrency", "32"]
    args += ["--max-body-bytes", str(MAX_BODY), "--max-file-bytes", str(MAX_FILE)]
    proc, url = start_server(args, tmp / "home", tmp / "server.log")
    yield url, tmp / "home", tmp / "server.log"
    stop_server(proc)


def post(url: str, path: str, content: bytes | str, ctype: str = "application/json", **kw) -> httpx.Response:
    headers = {**AUTH, "Content-Type": ctype, **kw.pop("headers", {})}
    return httpx.post(f"{url}{path}", content=content, headers=headers, timeout=30, **kw)


def chat(url: str, **fields) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={"model": "tiny", "messages": ASK, **fields}, headers=AUTH,
                      timeout=30)  # fmt: skip


# -- 1. fuzzing against the server's own OpenAPI document -------------------------------------------------


@pytest.mark.slow
def test_fuzz_against_own_openapi_schema(server) -> None:
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_schema_conformance,
        status_code_conformance,
    )

    url, _, _ = server
    spec = httpx.get(f"{url}/openapi.json", timeout=10).json()
    assert spec["components"]["schemas"]["ChatRequest"]["additionalProperties"] is False
    # Random model names all end in 404; naming the served one lets valid requests reach the engine.
    for name in ("ChatRequest", "CompletionRequest"):
        spec["components"]["schemas"][name]["properties"]["model"] = {"type": "string", "enum": ["tiny"]}
    # One explicit valid request each (run first, in the explicit phase), so that generation is always reached:
    # the random positive examples of the chat schema are often refused on their meaning (a tool result with
    # no call, say), and which ones Hypothesis draws depends on where the checkout lives.
    valid = {
        "/v1/chat/completions": {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        "/v1/completions": {"model": "tiny", "prompt": "Hi", "max_tokens": 4},
    }
    for path, example in valid.items():
        spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["example"] = example
    schema = schemathesis.openapi.from_dict(spec)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    statuses: dict[str, set[int]] = {}

    def fuzzer(op, mode):
        extra = [negative_data_rejection] if mode == GenerationMode.NEGATIVE else []

        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=op.as_strategy(generation_mode=mode))
        def fuzz(case) -> None:
            r = case.call_and_validate(base_url=url, headers=AUTH, checks=checks + extra, timeout=60)
            statuses.setdefault(op.label, set()).add(r.status_code)

        return fuzz

    failures = []
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzzer(op, mode)()
            except Unsatisfiable:  # no invalid request exists (no parameters, or only free-form strings)
                assert mode == GenerationMode.NEGATIVE, op.label
            except Exception as e:  # collect all operations' failures, then report them together
                failures.append(f"{op.label} [{mode.value}]: {str(e)[:1500]}")
    print(
        f"\nfuzzed {FUZZ_EXAMPLES} examples per operation and mode; statuses seen:",
        {k: sorted(v) for k, v in statuses.items()},
    )
    assert not failures, "\n\n".join(failures)
    assert len(statuses) == 20, sorted(statuses)  # every operation: jobs pause and resume, the graders API
    # The fuzzing reached generation, not only the error paths.
    assert 200 in statuses["POST /v1/chat/completions"] and 200 in statuses["POST /v1/completions"], statuses


# -- 2. hostile requests, one by one ----------------------------------------------------------------------


def test_body_too_large_is_413_before_parsing(server) -> None:
    url, _, _ = server
    big = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x" * MAX_BODY}]})
    assert_openai_error(post(url, "/v1/chat/completions", big), 413, "request_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"model": "tiny", "messages": [{"role": "user", "content": "'
        for _ in range(MAX_BODY // 1024 + 8):
            yield b"y" * 1024
        yield b'"}]}'

    assert_openai_error(post(url, "/v1/chat/completions", chunks()), 413, "request_too_large")
    # Uploads have their own, larger limit; beyond it the same 413.
    line = json.dumps(chat_rows(1)[0]) + "\n"
    too_big = line * (MAX_FILE // len(line) + 10)
    files = {"file": ("big.jsonl", too_big.encode()), "purpose": (None, "fine-tune")}
    r = httpx.post(f"{url}/v1/files", files=files, headers=AUTH, timeout=60)
    assert_openai_error(r, 413, "request_too_large")
    fits = line * (2 * MAX_BODY // len(line))  # larger than a request body, smaller than a file
    r = httpx.post(f"{url}/v1/files", files={"file": ("ok.jsonl", fits.encode()), "purpose": (None, "fine-tune")},
                   headers=AUTH, timeout=60)  # fmt: skip
    assert r.status_code == 200 and r.json()["bytes"] == len(fits.encode()), r.text


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (b"{not json", "application/json"),
        (b'{"model": "tiny", "messages": [{"role": "user", "content": "\xff\xfe bad"}]}', "application/json"),
        (b"[" * 30_000 + b"]" * 30_000, "application/json"),  # nesting deeper than any parser should follow
        (json.dumps({"model": "tiny", "messages": ASK}).encode(), "text/plain"),
        (b"model=tiny&messages=hi", "application/x-www-form-urlencoded"),
        (b"[1, 2, 3]", "application/json"),
        (b"", "application/json"),
    ],
    ids=["malformed", "invalid-utf8", "deep-nesting", "text-plain", "form", "not-an-object", "empty"],
)
def test_unreadable_bodies_are_400(server, body: bytes, ctype: str) -> None:
    url, _, _ = server
    err = assert_openai_error(post(url, "/v1/chat/completions", body, ctype), 400)
    assert err["type"] == "invalid_request_error"


def test_deep_nesting_inside_a_field_is_400(server) -> None:
    url, _, _ = server
    nested = "[" * 500 + "]" * 500
    body = f'{{"model": "tiny", "messages": {json.dumps(ASK)}, "metadata": {{"k": {nested}}}}}'
    err = assert_openai_error(post(url, "/v1/chat/completions", body), 400, param="metadata")
    assert err["message"].startswith("metadata.k:"), err


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 10**30}, "max_tokens"),
        ({"max_tokens": 17}, "max_tokens"),  # above this server's --max-tokens
        ({"max_completion_tokens": 2**63}, "max_tokens"),
        ({"max_tokens": "12"}, "max_tokens"),  # strict: a string is not a number, as the schema says
        ({"stream": "yes"}, "stream"),
        ({"n": 17}, "n"),
        ({"n": 0}, "n"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"seed": 2**70}, "seed"),
        ({"stop": [""]}, "stop"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"tools": [{"type": "function"}]}, "tools"),  # a tool without its function
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"max_token": 5}, "max_token"),  # misspelt: OpenAI refuses unknown arguments, so do we
        ({"bogus": {"a": 1}}, "bogus"),
    ],
)
def test_bad_parameters_are_400(server, fields: dict, param: str) -> None:
    url, _, _ = server
    err = assert_openai_error(chat(url, **fields), 400, param=param)
    if param in ("max_token", "bogus"):
        assert (
            err["message"] == f"Unrecognized request argument supplied: {param}" and err["code"] == "unknown_parameter"
        )


def test_neutral_and_ignored_fields_are_accepted(server) -> None:
    """What the official client and common wrappers send by default must not be refused."""
    url, _, _ = server
    c = client(url)
    r = c.chat.completions.create(
        model="tiny", messages=ASK, max_tokens=4, frequency_penalty=0, presence_penalty=0, logit_bias={}, user="u1",
        metadata={"k": "v"}, store=False, seed=-5, n=2, logprobs=False, tool_choice="none",
    )  # fmt: skip
    assert len(r.choices) == 2
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: colour"):
        c.chat.completions.create(model="tiny", messages=ASK, max_tokens=4, extra_body={"colour": "red"})
    r = c.completions.create(model="tiny", prompt=[[1, 2, 3]], max_tokens=4, suffix="")
    assert r.choices[0].finish_reason in ("stop", "length")
    # A temperature of almost zero is greedy (dividing the logits by it would give inf, then NaN).
    tiny_t = c.chat.completions.create(model="tiny", messages=ASK, max_tokens=6, temperature=5e-324)
    greedy = c.chat.completions.create(model="tiny", messages=ASK, max_tokens=6, temperature=0)
    assert tiny_t.choices[0].message.content == greedy.choices[0].message.content


IMAGE = [{"role": "user", "content": [{"type": "image_url"}]}]


@pytest.mark.parametrize(
    "messages",
    [[], None, "hi", [{"role": "user"}], [{"role": "tool", "content": "x"}], IMAGE],
    ids=["empty", "null", "string", "no-content", "tool-role", "image-part"],
)
def test_invalid_messages_are_422(server, messages) -> None:
    url, _, _ = server
    r = httpx.post(f"{url}/v1/chat/completions", json={"model": "tiny", "messages": messages}, headers=AUTH, timeout=30)
    assert_openai_error(r, 422, param="messages")
    r = httpx.post(f"{url}/v1/chat/completions", json={"model": "tiny"}, headers=AUTH, timeout=30)
    assert_openai_error(r, 422, param="messages")


def test_completion_prompts_are_bounded(server) -> None:
    url, _, _ = server
    for prompt, status in (([], 400), ([[]], 400), ([[10**9]], 400), ([[-1]], 400), (["a"] * 3, 200)):
        r = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": prompt, "max_tokens": 2},
                       headers=AUTH, timeout=30)  # fmt: skip
        if status == 200:
            assert r.status_code == 200 and len(r.json()["choices"]) == 3, r.text
        else:
            assert_openai_error(r, status, param="prompt")
    # More sequences than the server ever holds at once (--max-concurrency 32): refused outright, not queued.
    r = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": ["a"] * 3, "n": 16, "max_tokens": 2},
                   headers=AUTH, timeout=30)  # fmt: skip
    assert_openai_error(r, 400, param="n")


# -- 3. paths: ids, names and file names stay inside the data folder ---------------------------------------

TRAVERSALS = ["../../etc/passwd", "/etc/passwd", "..%2F..%2Fstate.db", "%2e%2e%2f%2e%2e%2fstate.db", "file-%00abc",
              "..\\..\\state.db", "file-" + "a" * 24 + "/../../state.db"]  # fmt: skip


def raw_get(url: str, path: str) -> tuple[int, dict]:
    """GET with the path sent exactly as written (httpx would normalise '../' away)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path, headers=AUTH)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


@pytest.mark.parametrize("evil", TRAVERSALS)
def test_ids_cannot_escape_the_data_folder(server, evil: str) -> None:
    url, home, _ = server
    for path in (f"/v1/files/{evil}", f"/v1/files/{evil}/content", f"/v1/fine_tuning/jobs/{evil}",
                 f"/v1/fine_tuning/jobs/{evil}/events", f"/v1/models/{evil}"):  # fmt: skip
        status, body = raw_get(url, path)
        assert status == 404 and set(body["error"]) == {"message", "type", "param", "code"}, (path, status, body)
        assert "root:" not in json.dumps(body) and "SQLite" not in json.dumps(body)
    for method_path in (f"/v1/files/{evil}", f"/v1/fine_tuning/jobs/{evil}/cancel"):
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("DELETE" if "files" in method_path else "POST", method_path, headers=AUTH)
        assert conn.getresponse().status == 404
        conn.close()
    name = evil.replace("%2F", "/").replace("%00", "\x00")
    assert_openai_error(chat(url, model=name), 404, "model_not_found")
    assert_openai_error(chat(url, model=f"ft:{name}"), 404, "model_not_found")
    r = httpx.post(
        f"{url}/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": name}, headers=AUTH, timeout=30
    )
    assert_openai_error(r, 400, "invalid_file", "training_file")
    r = httpx.post(f"{url}/v1/fine_tuning/jobs", json={"model": name, "training_file": "file-" + "0" * 24},
                   headers=AUTH, timeout=30)  # fmt: skip
    assert r.status_code in (400, 404)
    assert (home / "serve" / "state.db").is_file(), "nothing was deleted"


def upload_raw(url: str, filename: bytes, data: bytes) -> httpx.Response:
    """A multipart upload written by hand, so that the file name arrives exactly as given (NUL included)."""
    b = b"tunesmith-boundary"
    body = (b"--" + b + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n--' + b
            + b'\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
            + b"Content-Type: application/jsonl\r\n\r\n" + data + b"\r\n--" + b + b"--\r\n")  # fmt: skip
    return post(url, "/v1/files", body, "multipart/form-data; boundary=" + b.decode())


def test_upload_names_are_labels_not_paths(server) -> None:
    url, home, _ = server
    root = home.parent
    before = {p for p in root.rglob("*") if p.is_file()}
    data = (json.dumps(chat_rows(1)[0]) + "\n").encode()
    names = {b"../../escaped.jsonl": "escaped.jsonl", b"/tmp/abs.jsonl": "abs.jsonl", b"..": "upload.jsonl",
             b"nul\x00.jsonl": "upload.jsonl", b"%2e%2e%2fenc": "%2e%2e%2fenc", b"..\\..\\win": None}  # fmt: skip
    tmp_existed = Path("/tmp/abs.jsonl").exists()
    for sent, kept in names.items():
        r = upload_raw(url, sent, data)
        if r.status_code == 400 and b"\x00" in sent:
            continue  # the multipart parser may refuse a NUL outright: as good as renaming it
        assert r.status_code == 200, (sent, r.text)
        label = r.json()["filename"]
        assert label == kept or kept is None, (sent, label)
        assert "/" not in label and "\\" not in label and label not in (".", "..") and label.isprintable(), label
        assert (home / "serve" / "files" / f"{r.json()['id']}.jsonl").read_bytes() == data
    new = {p for p in root.rglob("*") if p.is_file()} - before
    files = home / "serve" / "files"
    outside = [p for p in new if files not in p.parents and p.name not in ("state.db-wal", "state.db-shm")]
    assert not outside, outside
    assert all(p.name.startswith("file-") or p.name == ".lock" for p in files.iterdir()), list(files.iterdir())
    assert Path("/tmp/abs.jsonl").exists() == tmp_existed


# -- 4. keys -----------------------------------------------------------------------------------------------


def test_key_compare() -> None:
    from tunesmith.serve.app import Guard

    assert Guard.authorized(f"Bearer {KEY}".encode(), KEY) and Guard.authorized(f"bearer {KEY}".encode(), KEY)
    for header in (b"", KEY.encode(), f"Bearer {KEY}x".encode(), f"Bearer {KEY[:-1]}".encode(), b"Bearer "):
        assert not Guard.authorized(header, KEY), header
    assert Guard.authorized(b"", None), "no key set: open (loopback only)"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "example.com"])
def test_off_loopback_needs_a_key(host: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TUNESMITH_API_KEY"}
    proc = subprocess.run([sys.executable, "-m", "tunesmith", "serve", "--host", host, "--no-jobs"],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"refusing to bind {host} without an API key" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_key_never_written_to_output_or_database(server) -> None:
    """Runs last in this module: by now the fuzzing and every test above sent the key thousands of times."""
    url, home, log = server
    for key in (WRONG_KEY, KEY[:-1] + "Q"):
        r = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert_openai_error(r, 401, "invalid_api_key")
    r = httpx.get(f"{url}/v1/models", headers={"Authorization": KEY}, timeout=10)  # without "Bearer "
    assert_openai_error(r, 401)
    assert r.json()["error"]["message"].find(KEY) < 0
    assert httpx.get(f"{url}/health", timeout=10).json() == {"status": "ok"}, "no key: nothing but liveness"
    written = [log, *(p for p in home.rglob("*") if p.is_file())]
    assert any(p.name == "state.db" for p in written)
    for path in written:
        data = path.read_bytes()
        for secret in (KEY, WRONG_KEY, KEY[8:]):
            assert secret.encode() not in data, f"{secret[:10]}... found in {path}"


def test_a_top_p_below_float32_range_still_samples(server) -> None:
    """top_p=5e-324 is 0 in float32: the top token must stay, not every token be dropped (found by the fuzzer)."""
    url, _, _ = server
    r = chat(url, top_p=5e-324, temperature=1.0, max_tokens=4)
    assert r.status_code == 200, r.text
