"""The dashboard: runs and their live curves, jobs, data checks and a two-model playground, in the browser.

Served by `tunesmith serve` at / beside the API, fully offline (plain JS and inline SVG, shipped in
``static/``). It reads run folders through ``runs_view`` only, and it talks to the server through the same
OpenAI-compatible API as any client; ``routes`` adds what that API has no shape for.
"""

from __future__ import annotations

from typing import Any


def mount_ui(app: Any, settings: Any, store: Any, registry: Any) -> None:
    from tunesmith.serve.ui.routes import ui_router

    app.include_router(ui_router(settings, store, registry))
