"""Typer options made from the one table of flags (``tunesmith/flags.py``), and the ones several commands share.

A command declares a config flag as ``lr: Annotated[float | None, option("lr")] = None``: the flag's name, its
--help line and the config field it sets all come from the table, and ``given(locals())`` at the top of the
command collects the ones to pass to ``flags.flag_overrides``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer

from tunesmith.flags import FLAGS


def option(name: str, *, help: str | None = None, **kw: Any) -> Any:
    """The typer option of the config flag ``name``; ``help`` replaces the table's line where a command says
    more (`check` adds "(as in train)")."""
    flag = FLAGS[name]
    return typer.Option(flag.decl, help=help if help is not None else flag.help, **kw)


def given(params: Mapping[str, object]) -> dict[str, object]:
    """The config flags among a command's parameters: pass ``locals()`` as the command's first statement."""
    return {name: value for name, value in params.items() if name in FLAGS}


# --trust-remote-code: one declaration and one help text for every command that loads a model.
TrustRemoteCode = Annotated[bool, option("trust_remote_code")]
# `generate`, `chat`, `serve`: a base model's chat template (a run always uses the one it trained with).
ChatTemplate = Annotated[str | None, option("chat_template")]
# `train` and `check`: None (not given) leaves a YAML config's setting alone.
TrustRemoteCodeOverride = Annotated[bool | None, option("trust_remote_code")]
