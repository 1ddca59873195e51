"""The rows an evaluation scores, and the prompts built from them: any dataset format in, one ``EvalRow``
per row (its prompt, its reference reply or reference tool calls); few-shot turns and instructions for the
prompted baseline; how many new tokens a reference needs."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.data.formats import Conversation, read_examples
from tunesmith.data.tools import format_tool_call
from tunesmith.errors import UserError


@dataclass
class EvalRow:
    source: str
    prompt: list[dict[str, Any]]
    reference: str | None  # None: the row ends on a user turn (or on a call), and no text is compared
    tools: list[dict[str, Any]] | None = None  # the row's tool definitions, rendered into its prompt
    reference_calls: list[dict[str, Any]] | None = None  # [{"name", "arguments": {...}}] when the reply is a call
    fields: dict[str, Any] = field(default_factory=dict)  # the row's metadata (id, source, fact...), as given


def load_rows(path: Path, columns: dict[str, str] | None = None) -> list[EvalRow]:
    """Evaluation rows from a dataset in any format; a missing final reply is allowed."""
    rows = []
    for conv in read_examples(path, require_reply=False, columns=columns).examples:
        msgs, last = conv.as_dicts(), conv.messages[-1]
        if conv.text_only:
            prompt, reference = text_continuation(last.content)
            row = EvalRow(conv.source, [{"role": "user", "content": prompt}], reference)
        elif last.role == "assistant" and last.tool_calls:
            calls = [{"name": c.name, "arguments": c.args} for c in last.tool_calls]
            row = EvalRow(conv.source, msgs[:-1], None, conv.tools, calls)
        elif last.role == "assistant":
            row = EvalRow(conv.source, msgs[:-1], last.content, conv.tools)
        else:
            row = EvalRow(conv.source, msgs, None, conv.tools)
        row.fields = conv.fields
        rows.append(row)
    return rows


CONTINUATION_WORDS = 64


def text_continuation(text: str) -> tuple[str, str]:
    """A document as (its first half, up to ``CONTINUATION_WORDS`` words that follow): text rows are scored
    on how the model continues a held-out document, and on its loss over the continuation."""
    words = [m.start() for m in re.finditer(r"\S+", text)]
    if len(words) < 2:
        return text, text
    cut = len(words) // 2
    end = words[cut + CONTINUATION_WORDS] if cut + CONTINUATION_WORDS < len(words) else len(text)
    return text[: words[cut]].rstrip(), text[words[cut] : end].rstrip()


def few_shot_turns(examples: list[Conversation], k: int, seed: int) -> list[dict[str, str]]:
    """K (user, assistant) pairs from the training data, drawn with a fixed seed: the same every run."""
    pairs = [c.as_dicts()[-2:] for c in examples if len(c.messages) >= 2 and c.messages[-2].role == "user"]
    if k > len(pairs):
        raise UserError(f"--few-shot {k} asks for more examples than the training data has ({len(pairs)})")
    return [msg for pair in random.Random(seed).sample(pairs, k) for msg in pair]


def prompted(prompt: list[dict[str, str]], instructions: str, shots: list[dict[str, str]]) -> list[dict[str, str]]:
    """Instructions as (the start of) the system message, then the shots as earlier turns."""
    system, rest = instructions, prompt
    if prompt and prompt[0]["role"] == "system":
        system, rest = "\n\n".join(x for x in (instructions, prompt[0]["content"]) if x), prompt[1:]
    head = [{"role": "system", "content": system}] if system else []
    return [*head, *shots, *rest]


def call_texts(rows: list[EvalRow]) -> list[str]:
    """The reference calls as the fallback writes them: their length sizes max_new_tokens."""
    return [format_tool_call(c["name"], c["arguments"]) for r in rows for c in r.reference_calls or []]


def auto_max_tokens(tokenizer: Any, refs: list[str]) -> int:
    """Room for the longest reference and a margin; rambling past that only costs time."""
    if not refs:
        return 256
    longest = max(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in refs)
    return min(512, max(32, int(longest * 1.5) + 16))
