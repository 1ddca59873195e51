"""Conversations -> token ids and loss labels, decided in one place.

    <|im_start|>user\\nWhere is my order?<|im_end|>\\n<|im_start|>assistant\\nIt ships today.<|im_end|>\\n
    |--------------------- prompt: label -100 ----------------------------||---- trained ----------||-|
                                                                             reply + end-of-turn      not trained

* The tokenizer's own chat template renders everything; training and generation share this module.
* Only assistant tokens are trained (every weight-1 assistant turn, or the last one only), and the
  end-of-turn / EOS token that closes each trained reply is in the loss: a model that never sees that
  token in its labels never learns to stop.
* Round-trip guard: for every trained turn, the tokens in front of the reply must equal, token for
  token, what generation renders with ``add_generation_prompt=True``. A template that renders
  differently in the two cases would teach a prompt format that generation never shows.

Tool calling (rows with ``tools``, assistant ``tool_calls`` or ``role: tool`` results) renders one of two
ways, chosen once per tokenizer by probing its template (``Renderer.tool_format``):

  template  the chat template renders tools itself (Qwen2.5, Qwen3, Llama 3.x, Mistral): it gets
            ``tools=`` and the messages with their ``tool_calls`` (arguments as a mapping) and tool results.
            Tool-call ids that are not 9 alphanumeric characters are mapped to ones that are (Mistral's
            templates demand it; the others ignore ids), the same way every time.
  fallback  the template knows nothing of tools (SmolLM2's, and the plain fallback template): the tool
            definitions are appended to the system turn (one is added if the row has none), each call is
            written into the assistant's text as ``<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>``
            (``data/tools.py``, which also parses it back), and the tool results of one turn become one user
            turn of ``<tool_response>`` blocks. Plain rows render exactly as without tools.

Either way assistant turns are trained, tool-call turns included; tool results never are.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tunesmith.data.chat_templates import FALLBACK_TEMPLATE, ensure_chat_template  # noqa: F401 (re-exported)
from tunesmith.data.formats import Conversation, Message
from tunesmith.data.rows import ToolCall
from tunesmith.data.tools import format_tool_call, format_tool_result, tools_system_prompt
from tunesmith.errors import DataError
from tunesmith.models.stops import template_stops

TOOL_FORMATS = {
    "template": "the chat template's own tool format",
    "fallback": "tunesmith's fallback (tools in the system turn, calls as <tool_call>{...}</tool_call>)",
}

IGNORE = -100


@dataclass
class Rendered:
    input_ids: list[int]
    labels: list[int]
    source: str = ""
    truncated: bool = False

    @property
    def n_trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


@dataclass
class RenderStats:
    examples: int = 0
    kept: int = 0
    dropped_overlong: int = 0
    truncated: int = 0
    dropped_untrained: int = 0
    tool_rows: int = 0  # rows with tools, tool calls or tool results (Renderer.tool_format says how)
    tokens: int = 0
    trained_tokens: int = 0
    dropped_sources: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if k != "dropped_sources"}


def template_hash(tokenizer: Any) -> str:
    return hashlib.sha256((tokenizer.chat_template or "").encode()).hexdigest()[:16]


class Renderer:
    def __init__(
        self,
        tokenizer: Any,
        *,
        max_len: int = 1024,
        overlong: str = "drop",
        train_on: str = "all",
        stop_token_ids: Iterable[int] = (),
    ) -> None:
        ensure_chat_template(tokenizer)
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.overlong = overlong
        self.train_on = train_on
        # The caller's stops (a model's generation config) plus the template's end-of-turn and EOS.
        self.stop_ids = set(stop_token_ids) | set(template_stops(tokenizer))
        self._tool_format: str | None = None
        # id(conversation) -> (conversation, its rendering): a run renders each row once, even though the
        # dataset doctor renders the rows before training does (``adopt_renderings``).
        self._rendered: dict[int, tuple[Conversation, Rendered]] = {}

    def fingerprint(self) -> tuple[Any, ...]:
        """What a rendering depends on besides the row (max_len and overlong act after rendering)."""
        tok = self.tokenizer
        ident = (type(tok).__name__, getattr(tok, "name_or_path", ""), len(tok), template_hash(tok))
        return (*ident, self.train_on, tuple(sorted(self.stop_ids)))

    def adopt_renderings(self, other: Renderer) -> bool:
        """Reuse what ``other`` already rendered, if it renders exactly as this renderer does."""
        if other.fingerprint() != self.fingerprint():
            return False
        self._rendered = other._rendered
        return True

    # -- the two renderings every other module uses --------------------------------------------------
    @property
    def tool_format(self) -> str:
        """How tool calls render with this tokenizer: "template" or "fallback" (see the module docstring)."""
        if self._tool_format is None:
            self._tool_format = "template" if template_renders_tools(self.tokenizer) else "fallback"
        return self._tool_format

    def _template_input(
        self, messages: Sequence[Message | dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """What apply_chat_template gets: the message dicts and its extra arguments (``tools=``)."""
        msgs = [as_message(m) for m in messages]
        if not tools and not any(m.tool_calls or m.role == "tool" for m in msgs):
            return [m.as_dict() if isinstance(m, Message) else m for m in messages], {}
        if self.tool_format == "template":
            return [_native(m) for m in msgs], ({"tools": tools} if tools else {})
        return _fallback(msgs, tools), {}

    def _text(
        self,
        messages: Sequence[Message | dict[str, Any]],
        *,
        generation: bool,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        dicts, extra = self._template_input(messages, tools)
        return self.tokenizer.apply_chat_template(dicts, tokenize=False, add_generation_prompt=generation, **extra)

    def _ids(self, text: str) -> list[int]:
        # Templates write their special tokens themselves, so the tokenizer must not add BOS again.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_text(
        self, messages: Sequence[Message | dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> str:
        """What generation feeds the model: the conversation so far (and its tools) plus the assistant header."""
        return self._text(messages, generation=True, tools=tools)

    def conversation_text(
        self, messages: Sequence[Message | dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> str:
        """The whole conversation as training renders it (no generation prompt)."""
        return self._text(messages, generation=False, tools=tools)

    def prompt_ids(
        self, messages: Sequence[Message | dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        return self._ids(self.prompt_text(messages, tools))

    # -- training rendering ---------------------------------------------------------------------------
    def _trained_turns(self, messages: list[Message]) -> list[int]:
        turns = [i for i, m in enumerate(messages) if m.role == "assistant" and m.weight]
        return turns[-1:] if self.train_on == "last" else turns

    def render(self, conv: Conversation) -> Rendered:
        """Token ids and labels (IGNORE where nothing is trained) of one conversation, whole."""
        cached = self._rendered.get(id(conv))
        if cached is not None and cached[0] is conv:
            return cached[1]
        rendered = self._render(conv)
        self._rendered[id(conv)] = (conv, rendered)
        return rendered

    def _render(self, conv: Conversation) -> Rendered:
        if conv.text_only:  # a plain document: no template, every token trained (data/text.py)
            from tunesmith.data.text import text_ids

            ids = text_ids(self.tokenizer, conv.messages[0].content)
            return Rendered(ids, list(ids), source=conv.source)
        messages = conv.messages
        turns = self._trained_turns(messages)
        if not turns:
            raise DataError(f"{conv.source}: no assistant reply with weight 1 to train on")
        # Messages after the last trained reply would be rendered but never trained: leave them out.
        messages = messages[: turns[-1] + 1]
        tools = conv.tools
        full = self._ids(self._text(messages, generation=False, tools=tools))
        labels = [IGNORE] * len(full)
        for turn in turns:
            prompt = self.prompt_ids(messages[:turn], tools)
            if full[: len(prompt)] != prompt:
                at = next((i for i, (a, b) in enumerate(zip(full, prompt, strict=False)) if a != b), len(full))
                raise DataError(
                    f"{conv.source}: the chat template renders turn {turn + 1}'s prompt differently for "
                    f"training and for generation (first difference at token {at}); use train_on: last "
                    "or a template that renders earlier turns unchanged"
                )
            through = self._ids(self._text(messages[: turn + 1], generation=False, tools=tools))
            end = self._reply_end(through, len(prompt))
            if through[:end] != full[:end]:
                raise DataError(f"{conv.source}: the chat template renders turn {turn + 1} inconsistently")
            labels[len(prompt) : end] = full[len(prompt) : end]
        if not self._closed(full, labels) and self.tokenizer.eos_token_id is not None:
            # The template does not close the last reply with a stop token. Add one right after the
            # reply (dropping any trailing template text) so that the model can learn to stop.
            last = max(i for i, x in enumerate(labels) if x != IGNORE)
            eos = self.tokenizer.eos_token_id
            full, labels = [*full[: last + 1], eos], [*labels[: last + 1], eos]
        return Rendered(full, labels, source=conv.source)

    def _reply_end(self, through: list[int], start: int) -> int:
        """End (exclusive) of the trained span: the reply up to and including its last stop token.

        Whatever a template writes after the stop token (usually a newline) is not trained: generation
        ends at the stop token and never produces it."""
        for i in range(len(through) - 1, start - 1, -1):
            if through[i] in self.stop_ids:
                return i + 1
        # No stop token: the reply ends where the template's trailing whitespace begins.
        end = len(through)
        while end > start + 1 and not self.tokenizer.decode(through[end - 1 : end]).strip():
            end -= 1
        return end

    def _closed(self, ids: list[int], labels: list[int]) -> bool:
        trained = [i for i, x in enumerate(labels) if x != IGNORE]
        return bool(trained) and ids[trained[-1]] in self.stop_ids

    def render_all(self, convs: Iterable[Conversation]) -> tuple[list[Rendered], RenderStats]:
        """Render, then apply the overlong policy; every dropped or truncated row is counted."""
        stats = RenderStats()
        out: list[Rendered] = []
        for conv in convs:
            stats.examples += 1
            stats.tool_rows += conv.uses_tools
            r = self.render(conv)
            if conv.text_only and len(r.input_ids) > self.max_len:  # a long document: cut into pieces
                from tunesmith.data.text import piece_bounds

                bounds = piece_bounds(len(r.input_ids), self.max_len)
                parts = [Rendered(r.input_ids[a:b], r.labels[a:b], r.source) for a, b in bounds]
                stats.kept += len(parts)
                stats.tokens += sum(len(p.input_ids) for p in parts)
                stats.trained_tokens += sum(p.n_trained for p in parts)
                out += parts
                continue
            if len(r.input_ids) > self.max_len:
                if self.overlong == "error":
                    raise DataError(
                        f"{conv.source}: {len(r.input_ids)} tokens, longer than max_len {self.max_len} "
                        "(raise max_len, or set overlong to drop or truncate)"
                    )
                if self.overlong == "drop":
                    stats.dropped_overlong += 1
                    stats.dropped_sources.append(conv.source)
                    continue
                r = Rendered(r.input_ids[: self.max_len], r.labels[: self.max_len], r.source, truncated=True)
                if r.n_trained == 0:
                    stats.dropped_untrained += 1
                    stats.dropped_sources.append(conv.source)
                    continue
                stats.truncated += 1
            stats.kept += 1
            stats.tokens += len(r.input_ids)
            stats.trained_tokens += r.n_trained
            out.append(r)
        return out, stats


# -- tool calling ---------------------------------------------------------------------------------------------
_PROBE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "zq_probe_fn",
            "description": "zq probe description",
            "parameters": {"type": "object", "properties": {"zq_arg": {"type": "string"}}},
        },
    }
]
_PROBE_CALL = {
    "id": "zqprobe01",
    "type": "function",
    "function": {"name": "zq_probe_fn", "arguments": {"zq_arg": "zq_value"}},
}
_PROBE = [
    {"role": "user", "content": "zq question"},
    {"role": "assistant", "content": "", "tool_calls": [_PROBE_CALL]},
    {"role": "tool", "tool_call_id": "zqprobe01", "name": "zq_probe_fn", "content": "zq_result"},
    {"role": "assistant", "content": "zq answer"},
]


def template_renders_tools(tokenizer: Any) -> bool:
    """True when the chat template itself writes the tool definitions, the calls and the results.

    Probed rather than guessed from the template's text: a template that raises, or that silently drops
    any of the three (SmolLM2's renders only role and content), gets the fallback."""
    try:
        text = tokenizer.apply_chat_template(_PROBE, tools=_PROBE_TOOLS, tokenize=False)
    except Exception:  # a template's raise_exception, or a missing filter: it cannot render tools
        return False
    return all(marker in text for marker in ("zq probe description", "zq_value", "zq_result"))


def as_message(m: Message | dict[str, Any]) -> Message:
    """A caller's message dict (serve, eval) -> a Message, tool calls included."""
    if isinstance(m, Message):
        return m
    calls = []
    for k, c in enumerate(m.get("tool_calls") or [], start=1):
        fn = c.get("function", c)
        args = fn.get("arguments", {})
        calls.append(
            ToolCall(c.get("id") or f"call_{k}", fn["name"], args if isinstance(args, str) else json.dumps(args))
        )
    role = "system" if m.get("role") == "developer" else m.get("role", "user")
    return Message(role, m.get("content") or "", 1, tuple(calls), m.get("tool_call_id"), m.get("name"))


_NINE = re.compile(r"[A-Za-z0-9]{9}")


def _template_id(call_id: str | None) -> str:
    """Mistral's templates take only 9 alphanumeric characters as a call id; the others ignore ids."""
    call_id = call_id or ""
    if _NINE.fullmatch(call_id):
        return call_id
    return hashlib.sha256(call_id.encode()).hexdigest()[:9]


def _native(m: Message) -> dict[str, Any]:
    d = m.as_dict()
    for c in d.get("tool_calls", []):
        c["id"] = _template_id(c["id"])
    if m.role == "tool":
        d["tool_call_id"] = _template_id(m.tool_call_id)
    return d


def _fallback(msgs: list[Message], tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after_tool = False
    for m in msgs:
        if m.role == "tool":
            block = format_tool_result(m.content)
            if after_tool:  # the results of one turn's calls: one user turn
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block})
            after_tool = True
            continue
        after_tool = False
        if m.tool_calls:
            parts = [m.content] if m.content.strip() else []
            parts += [format_tool_call(c.name, c.args) for c in m.tool_calls]
            out.append({"role": "assistant", "content": "\n".join(parts)})
        else:
            out.append({"role": m.role, "content": m.content})
    if tools:
        prompt = tools_system_prompt(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{prompt}"}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out
