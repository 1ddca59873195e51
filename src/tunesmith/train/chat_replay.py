"""Chat replay: the run's own base model's answers to everyday requests, trained beside the user's rows.

Replay of plain prose (``general.py``, ``--replay-source text``) holds general-English perplexity, but not the
*habit* of answering: a model tuned on one task answers every prompt in that task's shape (the demo's triage
JSON to "What is a comet?"), and the behavioural probe (``eval/behaviour.py``) sees it. Self-distillation fixes
the habit without any outside data: before the first step, the base model answers the shipped everyday prompts
(``examples/general_chat_prompts.json``) greedily through the run's chat template and the one generation path;
the answers that end on their own (a cut-off answer would teach the model to stop mid-sentence, or never) become
ordinary chat rows, rendered by the run's renderer with only the reply trained, and join the steps at the
``--replay`` share. Training on them pulls the tuned model toward the base on everything that is not the task.

The prompts are not the probe's questions and leave out the probe's kinds of question (see the file's
``about``), so the probe still measures answers the run never trained on.

Answers depend only on the model, its template and the prompts, so they are cached under
``$TUNESMITH_HOME/replay`` (53-123 s of generation for SmolLM2-135M on 2 CPU cores, once per model). The
embedded models' answers ship with the package (``examples/base_answers``, written by this same code through
``python -m tunesmith.examples.make_base_answers``), so a new user's first run does not wait for them; a cache
entry of that name wins, and any change to the model, its template or the prompts changes the name.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tunesmith import paths
from tunesmith.data.render import Rendered, Renderer, template_hash
from tunesmith.data.rows import Conversation, Message

PROMPTS_NAME = "general_chat_prompts.json"
SHIPPED_DIR = "base_answers"  # under tunesmith.examples: the embedded models' answers, by cache file name
CHAT_SOURCE = "replay:chat"  # marks chat replay rows (Rendered.source) in a step
MAX_NEW_TOKENS = 128  # SmolLM2-135M ends 99 of the 150 answers within this; longer costs generation time
BATCH_SIZE = 64
# Fewer finished answers than this and there is no behaviour to hold on to (a base model without a chat
# habit, a random test model): replay falls back to plain text.
MIN_ROWS = 16
# The first FIRST prompts are asked alone: a model that finishes fewer than FIRST_MIN of them (a random test
# model, a base model) is not asked the rest, which saves most of the generation where nothing will be replayed.
FIRST, FIRST_MIN = 32, 4


def prompts() -> list[str]:
    data = json.loads((resources.files("tunesmith.examples") / PROMPTS_NAME).read_text(encoding="utf-8"))
    return list(data["prompts"])


def cache_path(model_key: str, tokenizer: Any, asked: list[str]) -> Path:
    key = json.dumps([model_key, template_hash(tokenizer), MAX_NEW_TOKENS, asked])
    return paths.home() / "replay" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def shipped_answers() -> Any:
    """The folder of the embedded models' answers in the package (a Traversable)."""
    return resources.files("tunesmith.examples") / SHIPPED_DIR


def base_answers(model: Any, tokenizer: Any, model_key: str, *, reuse: bool = True) -> tuple[list[dict[str, str]], str]:
    """(the base model's finished answers, [{prompt, reply}], where they were stored: "cached", "shipped" with
    the package, or "" when generated now). Call it before the first step: ``model`` must still be the base (a
    fresh LoRA adapter changes nothing). ``reuse=False`` generates them whatever is stored
    (``examples/make_base_answers.py``)."""
    from tunesmith.generate import generate

    asked = prompts()
    cache = cache_path(model_key, tokenizer, asked)
    for found, where in ((cache, "cached"), (shipped_answers() / cache.name, "shipped")) if reuse else ():
        if found.is_file():
            return json.loads(found.read_text(encoding="utf-8"))["answers"], where
    was_training = model.training
    convs = [[{"role": "user", "content": p}] for p in asked]
    done = generate(model, tokenizer, convs[:FIRST], max_new_tokens=MAX_NEW_TOKENS, batch_size=BATCH_SIZE)
    if sum(c.finish_reason == "stop" for c in done) >= FIRST_MIN:  # else: no chat habit to keep, don't ask on
        done += generate(model, tokenizer, convs[FIRST:], max_new_tokens=MAX_NEW_TOKENS, batch_size=BATCH_SIZE)
    model.train(was_training)
    answers = [
        {"prompt": p, "reply": c.text.strip()}
        for p, c in zip(asked, done, strict=False)
        if c.finish_reason == "stop" and c.text.strip()
    ]
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")  # peers of a multi-process run write the same file
    tmp.write_text(json.dumps({"model": model_key, "answers": answers}, ensure_ascii=False), encoding="utf-8")
    tmp.replace(cache)
    return answers, ""


def render_answers(renderer: Renderer, answers: list[dict[str, str]]) -> list[Rendered]:
    """Each answer as a one-turn chat row (only the reply trained), marked as replay."""
    rows = []
    for a in answers:
        conv = Conversation([Message("user", a["prompt"]), Message("assistant", a["reply"])], source=CHAT_SOURCE)
        rendered = renderer.render(conv)  # its source is the conversation's: CHAT_SOURCE
        if rendered.n_trained and not rendered.truncated:
            rows.append(rendered)
    return rows


@dataclass
class ChatReplay:
    """Whole chat rows, in order and cyclically, with the share kept on average: a step owes ``need`` trained
    tokens and takes rows while it owes any, and what it took over carries to the next step."""

    rows: list[Rendered]

    def take(self, need: int, state: tuple[int, int] | None) -> tuple[list[Rendered], tuple[int, int]]:
        index, owed = state or (0, 0)
        owed += need
        out = []
        while owed > 0:
            row = self.rows[index % len(self.rows)]
            out.append(row)
            owed -= row.n_trained
            index += 1
        return out, (index % len(self.rows), owed)


@dataclass
class BothReplay:
    """Half of each step's replay from the base model's answers, half plain prose (``--replay-source both``):
    the answers keep the habit of answering, the prose the general-English perplexity."""

    chat: ChatReplay
    text: Any  # general.TextReplay

    def take(self, need: int, state: tuple[Any, Any] | None) -> tuple[list[Rendered], tuple[Any, Any]]:
        chat_state, text_state = state or (None, None)
        chat_rows, chat_state = self.chat.take(need // 2, chat_state)
        text_rows, text_state = self.text.take(need - need // 2, text_state)
        return chat_rows + text_rows, (chat_state, text_state)


def base_answers_if_used(
    t: Any, objective: str, model: Any, tokenizer: Any, model_key: str
) -> tuple[list[dict[str, str]], str] | None:
    """``base_answers`` where the run may use them (an SFT run with a replay share, set or left to the defaults,
    from the chat source, or a KL-to-base term on chat), else None. Called on the freshly loaded model, before
    set-up."""
    from tunesmith.train.auto import REPLAY_SHARE, default_kl_to_base

    share = REPLAY_SHARE if t.replay is None else t.replay
    replays_chat = share and t.replay_source != "text"
    kl = default_kl_to_base(t.method, objective)[0] if t.kl_to_base is None else t.kl_to_base
    if objective != "sft" or not (replays_chat or (kl and t.kl_source == "chat")):
        return None
    return base_answers(model, tokenizer, model_key)


@dataclass
class BaseChat:
    """The base model's finished everyday answers, rendered as the run's rows (``usable``: enough of them)."""

    rows: list[Rendered]
    stored: str  # "cached", "shipped" (with the package) or "" (generated by this run)

    @classmethod
    def of(cls, answers: tuple[list[dict[str, str]], str] | None, renderer: Renderer) -> BaseChat | None:
        return None if answers is None else cls(render_answers(renderer, answers[0]), answers[1])

    @property
    def usable(self) -> bool:
        return len(self.rows) >= MIN_ROWS

    def said(self) -> str:
        return (
            f"the base model's own answers to everyday prompts ({len(self.rows)} of {len(prompts())} it finished"
            f"{', ' + self.stored if self.stored else ''}; {PROMPTS_NAME})"
        )


def replay_setup(s: Any, chat: BaseChat | None, tokenizer: Any) -> tuple[Any, list[str]]:
    """The replay the run's settings ask for (``None`` when ``--replay`` is off), with its sentence."""
    from tunesmith.train.general import REPLAY_TEXT, TextReplay, replay_stream

    if not s.replay:
        return None, []
    share = f"replay: {s.replay:.0%} of each step's trained tokens"
    text = TextReplay(replay_stream(tokenizer))
    fallback = ""
    if s.replay_source != "text" and chat is not None:
        if chat.usable:
            what = f"{chat.said()}, so the run keeps answering them as its base did"
            if s.replay_source == "both":
                return BothReplay(ChatReplay(chat.rows), text), [
                    f"{share}: half are {what}, half general English prose ({REPLAY_TEXT})"
                ]
            return ChatReplay(chat.rows), [f"{share} are {what} (--replay-source text: plain prose instead)"]
        fallback = f"the base model finished {len(chat.rows)} of {len(prompts())} everyday answers, too few; "
    return text, [f"{share} are general English prose ({fallback}{REPLAY_TEXT})"]
