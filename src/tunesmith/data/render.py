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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tunesmith.data.chat_templates import FALLBACK_TEMPLATE, ensure_chat_template  # noqa: F401 (re-exported)
from tunesmith.data.formats import Conversation, Message
from tunesmith.data.render_tools import _fallback, _native, as_message, template_renders_tools
from tunesmith.data.rows import IGNORE
from tunesmith.data.span_mask import unlabel_spans
from tunesmith.errors import DataError
from tunesmith.models.stops import template_stops

TOOL_FORMATS = {
    "template": "the chat template's own tool format",
    "fallback": "tunesmith's fallback (tools in the system turn, calls as <tool_call>{...}</tool_call>)",
}

_SAID: set[tuple[Any, ...]] = set()  # notices already printed (Renderer._say_once)


def _has_reasoning(dicts: Sequence[dict[str, Any]]) -> bool:
    return any("<think>" in (d.get("content") or "") for d in dicts)


class _Mismatch(Exception):
    """A turn of the whole rendering differs from what generation renders for it ("prompt" or "reply")."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


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
        self.notices: list[str] = []  # what _say_once said (the run summary repeats them)
        self._said: set[tuple[Any, ...]] = set()
        self._thinking: bool | None = None  # set while a training row renders (see _text)
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
        self.notices = other.notices  # what rendering those rows said
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
        # Reasoning policy: reasoning in the conversation (<think> in a reply) renders as given; with none, the
        # template's non-thinking form (Qwen3: the empty <think></think> goes in the prompt, never trained).
        # Training, generation and serve all render here, so all follow it; a training row decides for all its
        # renderings at once (its prompts hold no reply, so would otherwise look reasoning-free).
        thinking = self._thinking if self._thinking is not None else _has_reasoning(dicts)
        return self.tokenizer.apply_chat_template(
            dicts, tokenize=False, add_generation_prompt=generation, enable_thinking=thinking, **extra
        )

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
        self._thinking = _has_reasoning([m.as_dict() for m in messages])
        try:
            full, labels = self._render_rows(messages, turns, conv)
        finally:
            self._thinking = None
        if not self._closed(full, labels) and self.tokenizer.eos_token_id is not None:
            # The template does not close the last reply with a stop token. Add one right after the
            # reply (dropping any trailing template text) so that the model can learn to stop.
            last = max(i for i, x in enumerate(labels) if x != IGNORE)
            eos = self.tokenizer.eos_token_id
            full, labels = [*full[: last + 1], eos], [*labels[: last + 1], eos]
        if conv.untrained and messages[-1] is conv.messages[-1]:
            labels = unlabel_spans(self.tokenizer, full, labels, messages[-1].content, conv.untrained)
        return Rendered(full, labels, source=conv.source)

    def _render_rows(
        self, messages: list[Message], turns: list[int], conv: Conversation
    ) -> tuple[list[int], list[int]]:
        try:
            return self._render_whole(messages, turns, conv.tools)
        except _Mismatch as mismatch:
            # The template renders a turn differently once later turns follow (Qwen3 and Phi-4 re-render
            # earlier turns, Mistral v0.3 moves the system message to the last user turn, a tokenizer merges
            # across the prompt/reply boundary): train the last reply from its own rendering, exactly the
            # prompt generation will show plus the reply.
            full, labels = self._render_own(messages, turns[-1], conv.tools, conv.source)
            self._say_once(mismatch.kind, len(turns) > 1)
            return full, labels

    def _render_whole(
        self, messages: list[Message], turns: list[int], tools: list[dict[str, Any]] | None
    ) -> tuple[list[int], list[int]]:
        """The conversation rendered once, every trained reply labelled; _Mismatch where a turn's prompt or
        reply is not what generation would see."""
        full = self._ids(self._text(messages, generation=False, tools=tools))
        labels = [IGNORE] * len(full)
        for turn in turns:
            prompt = self.prompt_ids(messages[:turn], tools)
            if full[: len(prompt)] != prompt:
                raise _Mismatch("prompt")
            through = self._ids(self._text(messages[: turn + 1], generation=False, tools=tools))
            end = self._reply_end(through, len(prompt))
            if through[:end] != full[:end]:
                raise _Mismatch("reply")
            labels[len(prompt) : end] = full[len(prompt) : end]
        return full, labels

    def _render_own(
        self, messages: list[Message], turn: int, tools: list[dict[str, Any]] | None, source: str
    ) -> tuple[list[int], list[int]]:
        """Reply ``turn`` trained from its own rendering: the generation prompt's tokens, then the reply's, the
        reply measured as the text the template adds after the prompt. Without the system message when the
        template renders it elsewhere once the reply follows (Mistral v0.3)."""
        prompt = self.prompt_ids(messages[:turn], tools)
        for msgs in (messages[: turn + 1], [m for m in messages[: turn + 1] if m.role != "system"]):
            before = self.prompt_text(msgs[:-1], tools)
            after = self._text(msgs, generation=False, tools=tools)
            if after.startswith(before) and after[len(before) :].strip():
                reply = self._ids(after[len(before) :])
                reply = reply[: self._reply_end(reply, 0)]
                return [*prompt, *reply], [IGNORE] * len(prompt) + reply
        raise DataError(
            f"{source}: the chat template does not render assistant turn {turn + 1} after the prompt generation "
            "shows, so the reply cannot be told apart; choose a template that does with --chat-template "
            "(fallback always does)"
        )

    def _say_once(self, kind: str, multi_turn: bool) -> None:
        """Say once per process and template how rows are trained when the template re-renders turns."""
        from tunesmith import console

        key = (template_hash(self.tokenizer), kind, multi_turn)
        if key in self._said:
            return
        self._said.add(key)
        self.notices.append(
            "the chat template renders earlier turns differently once later turns follow (Qwen3 and Phi-4 "
            "templates do): rows with several replies train their last reply only, from its own rendering"
            if multi_turn
            else "the chat template renders a reply's prompt differently with the reply than without it (Mistral "
            "v0.3 moves the system message to the last user turn; some tokenizers merge across the boundary): "
            "such rows train the reply after exactly the prompt generation shows"
        )
        if key not in _SAID:  # once per process, however many renderers (the check's and the run's)
            _SAID.add(key)
            console.note(self.notices[-1])

    def _reply_end(self, through: list[int], start: int) -> int:
        """End (exclusive) of the trained span: the reply up to and including its first stop token.

        Whatever a template writes after that stop token (a newline, or Phi-4's EOS after its <|end|>) is not
        trained: generation ends at the first stop token and never produces what follows."""
        for i in range(start, len(through)):
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
