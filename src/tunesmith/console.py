"""The one place that talks to the user's terminal.

Library code below ``cli/`` reports progress and notes through these helpers so that output stays
consistent (and quiet in tests, where ``TUNESMITH_QUIET=1`` or a non-terminal keeps it plain).
"""

from __future__ import annotations

import os
import sys

from rich.console import Console

console = Console(stderr=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def quiet() -> bool:
    return os.environ.get("TUNESMITH_QUIET") == "1"


def info(message: str) -> None:
    if not quiet():
        console.print(message)


def note(message: str) -> None:
    """A one-line note about a choice made for the user (a default, a fallback)."""
    if not quiet():
        console.print(f"[dim]note:[/dim] {message}")


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {message}")


def error(message: str) -> None:
    """One error line; the message is plain text (a path or a pip extra like ``tunesmith[trackers]`` holds
    brackets that rich would read as markup)."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/bold red] {escape(message)}", markup=True)


def is_interactive() -> bool:
    return sys.stdout.isatty() and not quiet()
