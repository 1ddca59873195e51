"""Which chat template a model is trained and prompted with, chosen once at load time.

* The tokenizer's own template, when it has one (instruct models).
* tunesmith's fallback, for a tokenizer with none (base models such as Gemma 3 270M): plain ``### role:``
  headers, every assistant turn closed by EOS so the model learns to stop, and the BOS token first when the
  tokenizer puts one in front of its text. A base model has only ever seen text that starts with BOS:
  without it, Gemma 3 270M's perplexity on an English sentence is ~90x higher.
* A template the user names (``--chat-template``): a .jinja file, or chatml, llama3 or gemma. A named template
  needs its turn markers to be single tokens of the tokenizer (adding tokens would change the embedding
  matrix); otherwise it is refused, naming the ones that do fit.

A run saves its tokenizer (template included) in its weights folder, and ``run.json`` names the template
(``RunInfo.chat_template``), so generation, serve and export of a run use the template it trained with.
The fallback is announced once per process, with what a turn looks like.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.errors import UserError

_FALLBACK_BODY = (
    "{% for message in messages %}"
    "{{ '### ' + message['role'] + ':\\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### assistant:\\n' }}{% endif %}"
)
FALLBACK_TEMPLATE = _FALLBACK_BODY  # for a tokenizer that writes no BOS
FALLBACK_TEMPLATE_BOS = "{{ bos_token }}" + _FALLBACK_BODY

NAMED: dict[str, str] = {
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
        " + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    # Gemma's: no system role, so a system message is put in front of the first user turn.
    "gemma": (
        "{{ bos_token }}"
        "{% if messages[0]['role'] == 'system' %}{% set first = messages[0]['content'] + '\\n\\n' %}"
        "{% set loop_messages = messages[1:] %}{% else %}{% set first = '' %}"
        "{% set loop_messages = messages %}{% endif %}"
        "{% for message in loop_messages %}"
        "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
        "{{ '<start_of_turn>' + role + '\\n' + (first if loop.first else '') + message['content'] | trim"
        " + '<end_of_turn>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
    ),
}
_MARKERS = {
    "chatml": ("<|im_start|>", "<|im_end|>"),
    "llama3": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    "gemma": ("<start_of_turn>", "<end_of_turn>"),
}
CHOICES = ("fallback", *NAMED)
_announced: set[str] = set()


def uses_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts its BOS token in front of text it encodes (Gemma, Llama do; GPT-2 style not)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def fallback_template(tokenizer: Any) -> str:
    return FALLBACK_TEMPLATE_BOS if uses_bos(tokenizer) else FALLBACK_TEMPLATE


def ensure_chat_template(tokenizer: Any) -> bool:
    """Give a template-less tokenizer the fallback template. Returns True if it was added."""
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = fallback_template(tokenizer)
    return True


def template_name(tokenizer: Any) -> str:
    """What run.json records: fallback, chatml, llama3, gemma, or "model" (the tokenizer's own, or a file's)."""
    text = getattr(tokenizer, "chat_template", None) or ""
    if text in (FALLBACK_TEMPLATE, FALLBACK_TEMPLATE_BOS):
        return "fallback"
    return next((name for name, t in NAMED.items() if t == text), "model")


def _missing_markers(tokenizer: Any, name: str) -> list[str]:
    vocab = tokenizer.get_vocab()
    return [m for m in _MARKERS[name] if m not in vocab]


def apply_choice(tokenizer: Any, choice: str | None, model_name: str = "the model") -> str:
    """Set the chat template ``choice`` names (None: the tokenizer's own, else the fallback) on ``tokenizer``;
    return its name for run.json. Bad choices are a UserError with advice that works."""
    if choice is None or choice == "model":
        ensure_chat_template(tokenizer)
    elif choice == "fallback":
        tokenizer.chat_template = fallback_template(tokenizer)
    elif choice in NAMED:
        missing = _missing_markers(tokenizer, choice)
        if missing:
            fits = [n for n in NAMED if not _missing_markers(tokenizer, n)]
            raise UserError(
                f"--chat-template {choice} needs the tokens {', '.join(missing)}, which the tokenizer of "
                f"{model_name} does not have; use --chat-template {' or '.join([*fits, 'fallback'])}, or a .jinja file"
            )
        tokenizer.chat_template = NAMED[choice]
    else:
        path = Path(choice).expanduser()
        if not path.is_file():
            raise UserError(
                f"--chat-template {choice!r}: not a file, and not one of {', '.join(CHOICES)} "
                "(give a .jinja file or one of those names)"
            )
        try:
            tokenizer.chat_template = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read the chat template {path}: {e}") from None
    name = template_name(tokenizer)
    if name == "fallback":
        announce_fallback(tokenizer, model_name)
    return name


def example_text(tokenizer: Any) -> str:
    """One exchange as the template renders it (for the announcement and `tunesmith check`)."""
    msgs = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"}]
    return tokenizer.apply_chat_template(msgs, tokenize=False)


def announce_fallback(tokenizer: Any, model_name: str) -> None:
    """Say once per process that the fallback template is in use, and what it looks like."""
    from tunesmith import console

    example = example_text(tokenizer)
    if example in _announced:  # a run's base and the run itself: one note
        return
    _announced.add(example)
    from rich.markup import escape

    console.note(
        escape(
            f"{model_name} has no chat template: using tunesmith's fallback, where a turn renders as "
            f"{example!r} (choose another with --chat-template {'|'.join(NAMED)}|FILE)"
        )
    )


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The special token the template closes an assistant turn with (<|im_end|>, <|eot_id|>, <end_of_turn>,
    <|end|>, </s>), measured by rendering one exchange; None when the first token after the reply is text."""
    mark = "TSM7REPLY7TSM"
    msgs = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": mark}]
    try:
        text = tokenizer.apply_chat_template(msgs, tokenize=False)
    except Exception:  # a template that refuses this exchange has no end-of-turn we can measure
        return None
    if text.count(mark) != 1:
        return None
    after = text.split(mark, 1)[1]
    ids = tokenizer(after, add_special_tokens=False)["input_ids"]
    if not ids:
        return None
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special |= {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if t.special}
    return ids[0] if ids[0] in special else None
