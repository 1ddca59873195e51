"""The dashboard in real headless Chromium (Debian's, driven by Playwright's Python client over the DevTools
protocol) against a real `tunesmith serve` bound off loopback with an API key, on the tiny model:

- without the key every page and route is refused, and the login form turns the key into a session;
- every page loads with no console errors (and is screenshotted: TUNESMITH_SCREENSHOTS=DIR keeps them);
- the runs list shows a run trained in the test, and a run's curve gains points when metrics lines land;
- a job created from the page shows up in the jobs API, trains, and its curve fills in;
- the playground shows two streamed replies with their tokens and latency;
- a data row or a reply holding markup is shown as text, never run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import chat_rows, write_jsonl
from .serve_helpers import KEY, client, start_server, stop_server

CHROMIUM = "/usr/bin/chromium"
XSS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 1">'


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[dict]:
    """A tiny run trained here, and a server with the key, bound to every interface, listing it."""
    tmp = tmp_path_factory.mktemp("dash")
    runs_dir = tmp / "runs"
    data = write_jsonl(tmp / "train.jsonl", chat_rows(24))
    env = {**os.environ, "TUNESMITH_HOME": str(tmp / "home"), "TUNESMITH_QUIET": "1", "OMP_NUM_THREADS": "1"}
    train = [sys.executable, "-m", "tunesmith", "train", "--model", str(tiny_model_dir), "--data", str(data)]
    flags = ["--val-split", "0.25", "--epochs", "2", "--eval-every", "2", "--lr", "5e-3", "--no-compile"]
    done = subprocess.run([*train, *flags, "--out", str(runs_dir / "demo")], env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    args = [f"tiny={tiny_model_dir}", str(runs_dir / "demo"), "--runs", str(runs_dir)]
    proc, url = start_server([*args, "--host", "0.0.0.0", "--api-key", KEY], tmp / "home", tmp / "server.log")
    yield {"url": url, "tmp": tmp, "runs": runs_dir, "data": data}
    stop_server(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed (`make chromium`: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the dashboard tests need Playwright's Python client: pip install -e '.[dev]'")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


class Page:
    """A signed-in page that records console errors and uncaught exceptions."""

    def __init__(self, browser, url: str) -> None:
        self.url, self.errors = url, []
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.goto(f"{url}/")  # the login form (answered 401: the key is missing)
        self.page.fill("input[name=key]", KEY)
        self.page.click("button[type=submit]")
        self.page.wait_for_selector("main h1")
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, fragment: str, ready: str) -> None:
        self.page.goto(f"{self.url}/{fragment}")
        self.page.wait_for_selector(ready)

    def shot(self, name: str, tmp: Path) -> Path:
        where = Path(os.environ.get("TUNESMITH_SCREENSHOTS") or tmp)
        where.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(where / f"dashboard-{name}.png"), full_page=True)
        return where / f"dashboard-{name}.png"

    def count(self) -> int:
        return int(self.page.text_content("#n-points") or 0)

    def wait_points(self, ok, timeout: float = 10) -> int:
        """Wait until the loss curve's point count satisfies ``ok`` (polled from here: the page's CSP
        forbids the string evaluation Playwright's wait_for_function uses)."""
        deadline = time.monotonic() + timeout
        while not ok(n := self.count()):
            assert time.monotonic() < deadline, f"the curve has {n} points"
            time.sleep(0.1)
        return n


@pytest.fixture
def page(browser, dash: dict) -> Iterator[Page]:
    p = Page(browser, dash["url"])
    yield p
    assert not p.errors, p.errors
    p.context.close()


def test_without_the_key_nothing_opens(dash: dict, browser) -> None:
    url = dash["url"]
    for path in ("/", "/ui/static/app.js", "/ui/api/runs", "/ui/api/run?src=run:demo", "/v1/models"):
        r = httpx.get(f"{url}{path}", timeout=10)
        assert r.status_code == 401, (path, r.status_code)
        assert "demo" not in r.text and "tiny" not in r.text
    assert 'name="key"' in httpx.get(f"{url}/", timeout=10).text  # the login form, and nothing else
    assert httpx.post(f"{url}/ui/login", data={"key": "sk-wrong"}, timeout=10).status_code == 401
    ok = httpx.post(f"{url}/ui/login", data={"key": KEY}, timeout=10)
    assert ok.status_code == 303 and KEY not in ok.headers["set-cookie"] and "HttpOnly" in ok.headers["set-cookie"]
    cookie = ok.headers["set-cookie"].split(";")[0]
    assert httpx.get(f"{url}/ui/api/runs", headers={"Cookie": cookie}, timeout=10).status_code == 200
    # The session cookie is no use to another site: a request that changes something must come from this origin.
    foreign = {"Cookie": cookie, "Origin": "https://evil.example"}
    assert httpx.post(f"{url}/v1/fine_tuning/jobs", json={}, headers=foreign, timeout=10).status_code == 401
    # The UI reads nothing outside the runs folder, whatever the name.
    for src in ("run:../home", "run:/etc", "run:demo/../../home", "job:../x", "run:.hidden"):
        r = httpx.get(f"{url}/ui/api/run", params={"src": src}, headers={"Cookie": cookie}, timeout=10)
        assert r.status_code == 404, src
    ctx = browser.new_context()
    p = ctx.new_page()
    p.goto(f"{url}/")
    assert p.locator("input[name=key]").is_visible() and p.locator("table").count() == 0
    p.fill("input[name=key]", "sk-wrong")
    p.click("button[type=submit]")
    p.wait_for_selector("text=not this server's key")
    ctx.close()


def test_pages_load_and_show_the_run(page: Page, dash: dict, tmp_path: Path) -> None:
    page.open("#/", "tr[data-src='run:demo']")
    row = page.page.text_content("tr[data-src='run:demo']")
    assert "succeeded" in row and "lora" in row and "train.jsonl" in row
    page.shot("runs", tmp_path)
    page.open("#/run/run%3Ademo", "#choices li")
    page.wait_points(lambda n: n > 0)
    steps = sum(1 for ln in (dash["runs"] / "demo" / "metrics.jsonl").read_text().splitlines() if '"loss"' in ln)
    assert page.count() == steps
    assert page.page.get_attribute("#chart-loss polyline.val", "data-points")  # validation points drawn
    assert "learning_rate" in page.page.text_content("#config")
    page.shot("run", tmp_path)
    for name, fragment, ready in [
        ("jobs", "#/jobs", "#create-job"),
        ("data", "#/data", "#run-check"),
        ("playground", "#/playground", "#send"),
    ]:
        page.open(fragment, ready)
        page.shot(name, tmp_path)


def test_curve_follows_appended_metrics(page: Page, dash: dict) -> None:
    live = dash["runs"] / "live"
    live.mkdir()
    (live / "config.yaml").write_text("model:\n  name: tiny\ntrain:\n  method: lora\n", encoding="utf-8")
    metrics = live / "metrics.jsonl"
    line = lambda s: json.dumps({"step": s, "loss": 3.0 / s, "lr": 1e-3}) + "\n"  # noqa: E731
    metrics.write_text(line(1) + line(2) + line(3), encoding="utf-8")
    page.open("#/", "tr[data-src='run:live']")
    assert "running" in page.page.text_content("tr[data-src='run:live']")
    page.open("#/run/run%3Alive", "#chart-loss polyline.train")
    page.wait_points(lambda n: n == 3)
    with open(metrics, "a", encoding="utf-8") as f:
        f.write(line(4) + json.dumps({"step": 4, "val_loss": 0.9}) + "\n")
        f.flush()
        f.write(line(5)[:10])  # half a line: not drawn until it is complete
    page.wait_points(lambda n: n == 4, timeout=15)
    assert page.page.get_attribute("#chart-loss polyline.train", "data-points") == "4"
    with open(metrics, "a", encoding="utf-8") as f:
        f.write(line(5)[10:])
    page.wait_points(lambda n: n == 5, timeout=15)


def test_job_created_in_the_page_trains(page: Page, dash: dict, tmp_path: Path) -> None:
    page.open("#/jobs", "#create-job")
    page.page.set_input_files("input[name=file]", str(dash["data"]))
    page.page.select_option("select[name=model]", "tiny")
    page.page.fill("input[name=n_epochs]", "2")
    page.page.fill("input[name=batch_size]", "4")
    page.page.fill("input[name=suffix]", "ui")
    page.page.click("#create-job")
    page.page.wait_for_url("**/#/run/job%3A*", timeout=60000)
    job_id = page.page.url.split("job%3A")[-1]
    c = client(dash["url"])
    assert job_id in [j.id for j in c.fine_tuning.jobs.list()]
    assert c.fine_tuning.jobs.retrieve(job_id).hyperparameters.n_epochs == 2
    seen = set()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and c.fine_tuning.jobs.retrieve(job_id).status not in ("succeeded", "failed"):
        seen.add(page.count())
        time.sleep(0.3)
    assert c.fine_tuning.jobs.retrieve(job_id).status == "succeeded"
    page.wait_points(lambda n: n == 12, timeout=30)
    assert min(seen) < 12, seen  # the page was open while the job ran, and its curve filled in without a reload
    page.page.wait_for_selector("#open-model", timeout=15000)
    assert "successfully completed" in page.page.text_content("#events")
    page.shot("job", tmp_path)
    page.page.click("#open-model")
    page.page.wait_for_selector("#send")
    assert page.page.input_value("#model-b").startswith("ft:tiny:ui:")


def test_playground_streams_two_replies(page: Page, dash: dict, tmp_path: Path) -> None:
    page.open("#/playground", "#send")
    page.page.select_option("#model-a", "tiny")
    page.page.select_option("#model-b", "demo")
    page.page.fill("#prompt", "Paint the kite teal please")
    page.page.fill("#max-tokens", "12")
    page.page.click("#send")
    for side in "ab":
        page.page.wait_for_selector(f"#log-{side} .turn.assistant.done", timeout=60000)
        stats = page.page.text_content(f"#log-{side} .turn.assistant .stats")
        assert "prompt " in stats and " tok · reply " in stats and "total" in stats, stats
        assert int(stats.split("reply ")[1].split(" ")[0]) > 0
    page.shot("playground-replies", tmp_path)


def test_markup_in_data_and_replies_is_text(page: Page, dash: dict, tmp_path: Path) -> None:
    rows = chat_rows(6)
    rows[0]["messages"][1]["content"] = XSS
    bad = write_jsonl(dash["tmp"] / "markup.jsonl", rows)
    page.open("#/data", "#run-check")
    page.page.set_input_files("input[type=file]", str(bad))
    page.page.click("#run-check")
    page.page.wait_for_selector("#masked-rows .masked", timeout=60000)
    assert XSS in page.page.text_content("#masked-rows")
    assert page.page.locator("#check-out script, #check-out img").count() == 0
    page.shot("data-check", tmp_path)
    # A reply with markup: the model's stream is stood in for (a tiny random model will not write one).
    chunk = {"choices": [{"index": 0, "delta": {"content": XSS}, "finish_reason": None}]}
    usage = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}
    body = f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n"
    page.page.route("**/v1/chat/completions", lambda r: r.fulfill(body=body, content_type="text/event-stream"))
    page.open("#/playground", "#send")
    page.page.fill("#prompt", "hello")
    page.page.click("#send")
    page.page.wait_for_selector("#log-b .turn.assistant.done")
    assert page.page.text_content("#log-a .turn.assistant .bubble") == XSS
    assert page.page.locator("#log-a script, #log-a img").count() == 0
    assert page.page.evaluate("window.__pwned") is None
