"""A hub id, checked before transformers tries it: an unreachable hub fails at once, in one line.

Without this, a machine with no route to the hub spends ~50 s in huggingface_hub's retries (and prints a
"Retrying" line for each) before the load fails. One short TCP connect to the hub's host says whether it is
reachable; when it is not, the model's cached copy is used if there is one, and otherwise the user gets one
line saying what to do. Offline mode (``HF_HUB_OFFLINE``) and proxies are left to huggingface_hub itself:
the first never reaches the network, and behind the second a direct connect proves nothing.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

from tunesmith.errors import ModelError

CONNECT_TIMEOUT_S = 3.0
_PROXIES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


@functools.lru_cache(maxsize=8)
def reachable(url: str) -> bool:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def cached_snapshot(repo_id: str) -> str | None:
    """The folder of the model's cached copy, or None."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, local_files_only=True)
    except Exception:  # not cached, or an id the hub would refuse anyway: either way no local copy
        return None


def hub_path(repo_id: str) -> str:
    """What transformers should load for a hub id: the id itself, or its cached folder when the hub cannot be
    reached; raises one ModelError line when neither works."""
    if _offline() or any(os.environ.get(p) for p in _PROXIES):
        return repo_id
    url = endpoint()
    if reachable(url):
        return repo_id
    cached = cached_snapshot(repo_id)
    if cached is not None:
        _note_once(f"the hub ({urlparse(url).hostname}) cannot be reached: using the cached copy of {repo_id}")
        return cached
    raise ModelError(
        f"'{repo_id}' is a hub id, but the hub ({urlparse(url).hostname}) cannot be reached from here and the "
        "model is not in the local cache: download it where the hub is reachable, or pass a local folder or .gguf"
    )


@functools.lru_cache(maxsize=32)
def _note_once(message: str) -> None:
    from tunesmith import console

    console.note(message)
