"""The chat template as Ollama needs it: a Go ``TEMPLATE`` that renders what the Jinja template renders.

Ollama does not run Jinja, so the Modelfile needs the template restated in Go's text/template. We do not
translate Jinja source (an open-ended problem); we *measure* the template instead. Rendering a few
conversations with sentinel contents shows the text each role is wrapped in:

    [system S]                  ->  P_sys S Q_sys
    [system S, user U]          ->  P_sys S Q_sys P_user U Q_user
    [user U]                    ->  D P_user U Q_user           (D: a default system block, if any)
    [system S, user U, asst A]  ->  ... P_asst A Q_asst
    [system S, user U] + gen    ->  ... G                        (G: the generation prompt)

That shape is then checked against the real template on every parity conversation (``render`` below must
reproduce the Jinja output exactly) before the Go template, a mechanical restatement of it, is written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tunesmith.errors import UserError

ROLES = ("system", "user", "assistant")
# Contents no template writes itself, so that they can be found in the output.
_SENTINEL = {"system": "TSM7SYSTEM7TSM", "user": "TSM7USER7TSM", "assistant": "TSM7ASSISTANT7TSM"}


class TemplateShapeError(UserError):
    """The chat template does something a per-role Ollama template cannot restate."""


@dataclass(frozen=True)
class ChatShape:
    default_system: str
    prefix: dict[str, str]
    suffix: dict[str, str]
    generation: str


def _jinja(tokenizer: Any, messages: Sequence[dict[str, str]], generation: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation)


def _around(text: str, role: str) -> tuple[str, str]:
    mark = _SENTINEL[role]
    if text.count(mark) != 1:
        raise TemplateShapeError(f"the chat template does not write a {role} message's content exactly once")
    before, after = text.split(mark)
    return before, after


def _rest(full: str, start: str, what: str) -> str:
    if not full.startswith(start):
        raise TemplateShapeError(f"the chat template renders earlier messages differently once {what} is added")
    return full[len(start) :]


def chat_shape(tokenizer: Any) -> ChatShape:
    """Measure the per-role wrapping of the tokenizer's chat template (see the module docstring)."""
    msg = {r: {"role": r, "content": _SENTINEL[r]} for r in ROLES}
    try:
        sys_only = _jinja(tokenizer, [msg["system"]], False)
        sys_user = _jinja(tokenizer, [msg["system"], msg["user"]], False)
        user_only = _jinja(tokenizer, [msg["user"]], False)
        full = _jinja(tokenizer, [msg["system"], msg["user"], msg["assistant"]], False)
        gen = _jinja(tokenizer, [msg["system"], msg["user"]], True)
    except Exception as e:  # a template may raise on purpose (e.g. "system role not supported")
        raise TemplateShapeError(f"the chat template cannot be measured for Ollama: {e}") from None
    p_sys, q_sys = _around(sys_only, "system")
    p_user, q_user = _around(_rest(sys_user, sys_only, "a user message"), "user")
    p_asst, q_asst = _around(_rest(full, sys_user, "an assistant message"), "assistant")
    user_block = p_user + _SENTINEL["user"] + q_user
    if not user_only.endswith(user_block):
        raise TemplateShapeError("the chat template wraps a user message differently without a system message")
    return ChatShape(
        default_system=user_only[: -len(user_block)],
        prefix={"system": p_sys, "user": p_user, "assistant": p_asst},
        suffix={"system": q_sys, "user": q_user, "assistant": q_asst},
        generation=_rest(gen, sys_user, "the generation prompt"),
    )


def render(shape: ChatShape, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool) -> str:
    """What the Go template renders, restated in Python so that it can be compared with the Jinja output."""
    out = [] if messages and messages[0]["role"] == "system" else [shape.default_system]
    for m in messages:
        out += [shape.prefix[m["role"]], m["content"], shape.suffix[m["role"]]]
    if add_generation_prompt:
        out.append(shape.generation)
    return "".join(out)


def mismatches(tokenizer: Any, shape: ChatShape, conversations: Sequence[Sequence[dict[str, str]]]) -> list[str]:
    """Conversations whose shape rendering differs from the Jinja template's (empty: the shape is exact)."""
    bad = []
    for i, conv in enumerate(conversations):
        for generation in (True, False):
            if generation and conv and conv[-1]["role"] == "assistant":
                continue
            if render(shape, conv, add_generation_prompt=generation) != _jinja(tokenizer, conv, generation):
                bad.append(f"conversation {i + 1} (generation prompt {'on' if generation else 'off'})")
    return bad


def _go_literal(text: str) -> str:
    # Literal text is copied verbatim by text/template, except for action delimiters.
    return text.replace("{{", '{{ "{{" }}')


def go_template(shape: ChatShape) -> str:
    """The shape as a Go template over Ollama's ``.Messages``.

    Written on one line on purpose: text/template copies every character between actions, and the
    whitespace-trimming markers (``{{-``) would also eat newlines that the template needs. A final
    assistant message is left open (no suffix, no generation prompt) so that Ollama can continue it,
    which is what Ollama's own templates do.
    """
    lit = _go_literal
    branches = "".join(
        f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{lit(shape.prefix[role])}{{{{ .Content }}}}'
        + (
            f"{{{{ if not $last }}}}{lit(shape.suffix[role])}{{{{ end }}}}"
            if role == "assistant"
            else lit(shape.suffix[role])
        )
        for i, role in enumerate(ROLES)
    )
    first_not_system = '{{ if or (not .Messages) (ne (index .Messages 0).Role "system") }}'
    default = f"{first_not_system}{lit(shape.default_system)}{{{{ end }}}}" if shape.default_system else ""
    return (
        f"{default}{{{{ range $i, $_ := .Messages }}}}{{{{ $last := eq (len (slice $.Messages $i)) 1 }}}}"
        f"{branches}{{{{ end }}}}"
        f'{{{{ if and $last (ne .Role "assistant") }}}}{lit(shape.generation)}{{{{ end }}}}{{{{ end }}}}'
    )


def modelfile(gguf_name: str, shape: ChatShape, stops: Sequence[str]) -> str:
    template = go_template(shape)
    if '"""' in template:
        raise TemplateShapeError('the chat template contains """, which a Modelfile TEMPLATE cannot hold')
    lines = [
        "# Written by `tunesmith export`. Run with:  ollama create NAME -f Modelfile  &&  ollama run NAME",
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{template}"""',
    ]
    # json.dumps gives the double-quoted, backslash-escaped form that Modelfile parameters accept.
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in dict.fromkeys(stops) if s]
    return "\n".join(lines) + "\n"
