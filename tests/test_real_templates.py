"""The chat templates of popular models (tests/templates/*.jinja: Llama 3.2, Qwen2.5, Qwen3, Gemma 3, Mistral
v0.3, Phi-4-mini), each set on the shipped tokenizer with its special tokens: single-turn, system, multi-turn
and tool rows all render with the prompt masked exactly as generation shows it and every trained reply closed by
the template's end-of-turn token, or are refused with advice that works."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tunesmith.data.chat_templates import end_of_turn_id
from tunesmith.data.formats import parse_row
from tunesmith.data.render import IGNORE, Renderer
from tunesmith.errors import DataError

from .test_render_tools import FAMILIES as TOOL_FAMILIES
from .test_render_tools import TOOLS, family_tokenizer

FAMILIES: dict[str, dict[str, Any]] = {
    **TOOL_FAMILIES,
    "gemma3": {
        "special": ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>"],
        "bos": "<bos>",
        "eos": "<eos>",
    },
    "phi4_mini": {"special": ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|tool|>", "<|/tool|>"]},
}
END_OF_TURN = {
    "qwen2_5": "<|im_end|>",
    "qwen3": "<|im_end|>",
    "llama3_2": "<|eot_id|>",
    "mistral_v3": "</s>",
    "gemma3": "<end_of_turn>",
    "phi4_mini": "<|end|>",
}
# Rows whose earlier replies the template renders differently once later turns follow (Qwen3 re-renders them;
# Mistral v0.3 moves the system message to the last user turn): they train the last reply.
RE_RENDERS = {("qwen3", "multi"), ("qwen3", "tool"), ("mistral_v3", "multi")}
SYSTEM = {"role": "system", "content": "You are the order desk."}


def tokenizer_for(tokenizer: Any, name: str) -> Any:
    if name in TOOL_FAMILIES:
        return family_tokenizer(tokenizer, name)
    from pathlib import Path

    spec = FAMILIES[name]
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = (Path(__file__).parent / "templates" / f"{name}.jinja").read_text(encoding="utf-8")
    tok.add_special_tokens({"additional_special_tokens": spec["special"]})
    if spec.get("bos"):
        tok.bos_token = spec["bos"]
    if spec.get("eos"):
        tok.eos_token = spec["eos"]
    return tok


def rows() -> dict[str, Any]:
    user, reply = {"role": "user", "content": "Where is order A17?"}, {"role": "assistant", "content": "It shipped."}
    more = [{"role": "user", "content": "And B2?"}, {"role": "assistant", "content": "Tomorrow."}]
    call = {
        "role": "assistant",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_order", "arguments": '{"order_id": "A17"}'}}
        ],
    }
    result = {"role": "tool", "tool_call_id": "call_1", "content": "shipped"}
    return {
        "single": {"messages": [user, reply]},
        "system": {"messages": [SYSTEM, user, reply]},
        "multi": {"messages": [SYSTEM, user, reply, *more]},
        "tool": {"tools": TOOLS, "messages": [user, call, result, reply]},
    }


def spans(r: Any) -> list[tuple[int, int]]:
    """(start, end) of each run of trained tokens."""
    out, start = [], None
    for i, lab in enumerate([*r.labels, IGNORE]):
        if lab != IGNORE and start is None:
            start = i
        elif lab == IGNORE and start is not None:
            out.append((start, i))
            start = None
    return out


@pytest.mark.parametrize("kind", ["single", "system", "multi", "tool"])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_row_trains_its_replies_after_the_generation_prompt(tokenizer, name: str, kind: str) -> None:
    tok = tokenizer_for(tokenizer, name)
    end = tok.convert_tokens_to_ids(END_OF_TURN[name])
    assert end_of_turn_id(tok) == end, "the template's end-of-turn is measured, and is one of the stops"
    conv = parse_row(rows()[kind], "chat")
    conv.source = "t.jsonl:1"
    renderer = Renderer(tok)
    try:
        r = renderer.render(conv)
    except DataError as e:  # only a template that cannot render the row at all: Gemma 3 has no tool role
        assert name == "gemma3" and kind == "tool", e
        assert "Conversation roles must alternate" in str(e) or "--chat-template" in str(e)
        return
    assistant_turns = [i for i, m in enumerate(conv.messages) if m.role == "assistant"]
    trained_spans = spans(r)
    if (name, kind) in RE_RENDERS:
        assistant_turns = assistant_turns[-1:]  # said once; see test_re_rendering_templates_say_so
    assert len(trained_spans) == len(assistant_turns), tok.decode(r.input_ids)
    # The last trained reply follows exactly the prompt generation renders for it.
    prompt = renderer.prompt_ids(conv.messages[: assistant_turns[-1]], conv.tools)
    assert r.input_ids[: len(prompt)] == prompt and trained_spans[-1][0] == len(prompt)
    for start, stop in trained_spans:
        text = tok.decode(r.input_ids[start:stop])
        assert r.input_ids[stop - 1] == end, f"{name}/{kind}: a reply closes with {END_OF_TURN[name]}: {text!r}"
        assert "<think>" not in text, "an empty think block is never trained"
        assert "It shipped" in text or "Tomorrow" in text or "get_order" in text, text
        assert r.input_ids[start:stop].count(end) == 1, "one stop per reply, not end-of-turn plus EOS"


def test_re_rendering_templates_say_so(tokenizer) -> None:
    tok = tokenizer_for(tokenizer, "qwen3")
    conv = parse_row(rows()["multi"], "chat")
    renderer = Renderer(tok)
    renderer.render(conv)
    assert any("Qwen3 and Phi-4" in n and "last reply only" in n for n in renderer.notices)


def test_mistral_system_message_renders_where_generation_puts_it(tokenizer) -> None:
    tok = tokenizer_for(tokenizer, "mistral_v3")
    conv = parse_row(rows()["system"], "chat")
    renderer = Renderer(tok)
    r = renderer.render(conv)
    # The template puts the system text into the last user turn of the prompt; training sees it there too.
    assert "[INST] You are the order desk.\n\nWhere is order A17?[/INST]" in tok.decode(r.input_ids)
    assert any("Mistral v0.3 moves the system message" in n for n in renderer.notices)


def test_qwen3_reasoning_in_the_data_is_trained_as_given(tokenizer) -> None:
    tok = tokenizer_for(tokenizer, "qwen3")
    row = {
        "messages": [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"},
        ]
    }
    r = Renderer(tok).render(parse_row(row, "chat"))
    ((start, stop),) = spans(r)
    assert tok.decode(r.input_ids[start:stop]) == "<think>\nadd them\n</think>\n\n4<|im_end|>"
    # With none, the non-thinking form: the empty block is in the prompt generation shows, never trained.
    plain = Renderer(tok).prompt_text([{"role": "user", "content": "2+2?"}])
    assert plain.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_a_template_that_drops_replies_is_refused_with_advice_that_works(tokenizer) -> None:
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] != 'assistant' %}{{ m['role'] + ': ' + m['content'] + '\\n' }}"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    conv = parse_row(rows()["single"], "chat")
    conv.source = "t.jsonl:1"
    with pytest.raises(DataError, match=r"--chat-template \(fallback always does\)") as e:
        Renderer(tok).render(conv)
    assert "t.jsonl:1" in str(e.value)
    from tunesmith.data.chat_templates import apply_choice

    apply_choice(tok, "fallback")  # the advice
    r = Renderer(tok).render(conv)
    assert tok.decode([t for t, lab in zip(r.input_ids, r.labels, strict=True) if lab != IGNORE]).startswith(
        "It shipped."
    )
