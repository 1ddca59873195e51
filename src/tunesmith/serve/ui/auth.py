"""The dashboard's side of the API key: a login form that turns the key into a session cookie.

A browser cannot put a bearer key on a page load or on an EventSource, so once the key is typed into the
login form the server sets a cookie holding HMAC(key) - never the key itself - and ``Guard`` accepts it
wherever it accepts the key: on the pages, the UI's routes and /v1. The cookie is HttpOnly (script cannot
read it) and SameSite=Strict (no other site can make the browser send it), and a request with a cookie that
changes something must also come from this origin. Without a key (loopback only) everything is open, as the
API is.
"""

from __future__ import annotations

import hashlib
import hmac
from html import escape

COOKIE = "tunesmith_session"
# Routes the key does not guard: the login form itself, and the API's own open routes.
OPEN = ("/ui/login", "/ui/static/style.css", "/health", "/openapi.json")
SAFE_METHODS = (b"GET", b"HEAD", b"OPTIONS")


def session_token(key: str) -> str:
    return hmac.new(key.encode(), b"tunesmith-ui-session-v1", hashlib.sha256).hexdigest()


def _cookies(header: bytes) -> dict[str, str]:
    out = {}
    for part in header.decode("latin-1").split(";"):
        name, _, value = part.strip().partition("=")
        out.setdefault(name, value)
    return out


def cookie_ok(headers: dict[bytes, bytes], method: str, key: str) -> bool:
    """A valid session cookie; for a request that changes state, also sent by a page of this origin."""
    got = _cookies(headers.get(b"cookie", b"")).get(COOKIE, "")
    digest = lambda s: hashlib.sha256(s.encode()).digest()  # noqa: E731 - constant time, on digests
    if not hmac.compare_digest(digest(got), digest(session_token(key))):
        return False
    if method.encode() in SAFE_METHODS:
        return True
    origin = headers.get(b"origin", b"").decode("latin-1")
    host = headers.get(b"host", b"").decode("latin-1")
    return bool(host) and origin.split("://", 1)[-1] == host


def is_page(path: str) -> bool:
    """The routes a browser navigates to (answered with the login form when the key is missing)."""
    return path == "/" or path == "/ui" or path.startswith("/ui/")


def needs_key(path: str) -> bool:
    return path not in OPEN and (path.startswith("/v1") or is_page(path))


def set_cookie_header(key: str) -> str:
    return f"{COOKIE}={session_token(key)}; Path=/; HttpOnly; SameSite=Strict"


def login_page(message: str = "") -> str:
    """A page with nothing on it but the key field: what a visitor without the key gets."""
    note = f'<p class="error">{escape(message)}</p>' if message else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>tunesmith: sign in</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="stylesheet" href="/ui/static/style.css"></head><body class="login">'
        '<form method="post" action="/ui/login" class="card"><h1>tunesmith</h1>'
        "<p>This server needs its API key.</p>"
        f'{note}<label>API key <input type="password" name="key" autocomplete="current-password" autofocus></label>'
        '<button type="submit">Sign in</button></form></body></html>'
    )
