"""Tool-calling rows render through the template where it renders tools (Qwen2.5, Qwen3, Llama 3.x and
Mistral templates, set on the shipped SmolLM2 tokenizer with their special tokens), else through the
fallback; assistant turns (tool calls included) are trained, tool results never; the round-trip guard
holds; what the fallback writes, the parser reads back."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tunesmith.data.formats import parse_row
from tunesmith.data.render import IGNORE, Renderer
from tunesmith.data.tools import parse_tool_calls

TEMPLATES = Path(__file__).parent / "templates"
# Llama 3's own pre-tokenizer split: SmolLM2's splits "\n\n{" as "\n" "\n" "{", which Llama 3's never does.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
FAMILIES: dict[str, dict[str, Any]] = {
    "qwen2_5": {},
    "qwen3": {},
    "llama3_2": {
        "special": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>"],
        "bos": "<|begin_of_text|>",
        "eos": "<|eot_id|>",
        "split": LLAMA3_SPLIT,
    },
    "mistral_v3": {
        "special": [
            *("<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]"),
            *("[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"),
        ],
        "bos": "<s>",
        "eos": "</s>",
    },
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order",
            "description": "Look up an order by id",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
        },
    }
]


def family_tokenizer(tokenizer: Any, name: str) -> Any:
    from tokenizers import Regex, pre_tokenizers

    spec = FAMILIES[name]
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")
    if spec.get("special"):
        tok.add_special_tokens({"additional_special_tokens": spec["special"]})
    if spec.get("bos"):
        tok.bos_token = spec["bos"]
    if spec.get("eos"):
        tok.eos_token = spec["eos"]
    if spec.get("split"):
        tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(spec["split"]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    return tok


def row(*, answer: bool = True, call_weight: int = 1, system: bool = False) -> Any:
    msgs: list[dict[str, Any]] = [{"role": "system", "content": "You are the order desk."}] if system else []
    msgs += [
        {"role": "user", "content": "Where is order A17?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_order", "arguments": '{"order_id": "A17"}'},
                }
            ],
            "weight": call_weight,
        },
    ]
    if answer:
        msgs += [
            {"role": "tool", "tool_call_id": "call_1", "content": "SECRET-RESULT shipped"},
            {"role": "assistant", "content": "Order A17 has shipped."},
        ]
    conv = parse_row({"tools": TOOLS, "messages": msgs}, "chat")
    conv.source = "t.jsonl:1"
    return conv


def trained(tok: Any, r: Any) -> str:
    return tok.decode([t for t, lab in zip(r.input_ids, r.labels, strict=True) if lab != IGNORE])


def test_smollm2_uses_the_fallback_and_trains_calls_not_results(tokenizer) -> None:
    renderer = Renderer(tokenizer)
    assert renderer.tool_format == "fallback"
    conv = row(system=True)
    r = renderer.render(conv)
    text = tokenizer.decode(r.input_ids)
    assert "You are the order desk.\n\n# Tools" in text and '"name": "get_order"' in text
    assert "<|im_start|>user\n<tool_response>\nSECRET-RESULT shipped\n</tool_response><|im_end|>" in text
    learned = trained(tokenizer, r)
    assert "SECRET-RESULT" not in learned and "# Tools" not in learned
    assert learned == (
        '<tool_call>\n{"name": "get_order", "arguments": {"order_id": "A17"}}\n</tool_call><|im_end|>'
        "Order A17 has shipped.<|im_end|>"
    )
    # The call turn's trained text is exactly what the parser reads back.
    call_text = learned.split("<|im_end|>")[0]
    assert [(c.name, c.arguments) for c in parse_tool_calls(call_text).calls] == [("get_order", {"order_id": "A17"})]


def test_fallback_round_trip_guard_covers_tool_turns(tokenizer) -> None:
    renderer = Renderer(tokenizer)
    conv = row()
    r = renderer.render(conv)
    for turn in (1, 3):  # the call turn and the final answer
        prompt = renderer.prompt_ids(conv.messages[:turn], conv.tools)
        assert r.input_ids[: len(prompt)] == prompt and r.labels[len(prompt)] != IGNORE
        assert all(lab == IGNORE for lab in r.labels[len(prompt) - 3 : len(prompt)])  # the assistant header


def test_plain_rows_render_as_before(tokenizer) -> None:
    plain = parse_row({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "chat")
    renderer = Renderer(tokenizer)
    expected = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], tokenize=False
    )
    assert tokenizer.decode(renderer.render(plain).input_ids) == expected
    assert renderer._tool_format is None, "a plain row never probes the template for tools"


@pytest.mark.parametrize("name", ["qwen2_5", "llama3_2", "mistral_v3"])
def test_templates_that_render_tools_get_them(tokenizer, name: str) -> None:
    tok = family_tokenizer(tokenizer, name)
    renderer = Renderer(tok)
    assert renderer.tool_format == "template"
    conv = row()
    r = renderer.render(conv)  # the round-trip guard runs on the call turn and the answer
    text = tok.decode(r.input_ids)
    assert "Look up an order by id" in text and "SECRET-RESULT" in text
    learned = trained(tok, r)
    assert "SECRET-RESULT" not in learned and "Look up an order" not in learned
    assert "Order A17 has shipped." in learned
    call_part = learned.split("Order A17")[0]
    calls = parse_tool_calls(call_part.replace(tok.eos_token, "")).calls
    assert [(c.name, c.arguments) for c in calls] == [("get_order", {"order_id": "A17"})]


def test_qwen3_template_call_rows_and_answers(tokenizer) -> None:
    """Qwen3 writes an empty think block only into the last assistant turn, so a row trains either its call
    (ending there) or, with the call at weight 0, its final answer; both pass the guard."""
    tok = family_tokenizer(tokenizer, "qwen3")
    renderer = Renderer(tok)
    assert renderer.tool_format == "template"
    learned = trained(tok, renderer.render(row(answer=False)))
    assert parse_tool_calls(learned.replace("<|im_end|>", "")).calls[0].arguments == {"order_id": "A17"}
    answer = trained(tok, renderer.render(row(call_weight=0)))
    assert answer.endswith("Order A17 has shipped.<|im_end|>") and "tool_call" not in answer


def test_mistral_ids_become_nine_characters_the_same_way_every_time(tokenizer) -> None:
    tok = family_tokenizer(tokenizer, "mistral_v3")
    text = tok.decode(Renderer(tok).render(row()).input_ids)
    ids = {part.split('"')[0] for part in text.split('"id": "')[1:]} | {
        part.split('"')[0] for part in text.split('"call_id": "')[1:]
    }
    assert len(ids) == 1 and len(ids.pop()) == 9


def test_render_stats_count_tool_rows(tokenizer) -> None:
    plain = parse_row({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "chat")
    _, stats = Renderer(tokenizer).render_all([row(), plain, row(answer=False)])
    assert stats.tool_rows == 2 and stats.kept == 3


def test_serve_style_dicts_render_like_messages(tokenizer) -> None:
    """eval and serve pass message dicts (arguments as a JSON string, as the API sends them)."""
    conv = row()
    renderer = Renderer(tokenizer)
    as_api = [
        {"role": "user", "content": "Where is order A17?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [json.loads(json.dumps(c.as_dict())) for c in conv.messages[1].tool_calls],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "SECRET-RESULT shipped"},
    ]
    as_api[1]["tool_calls"][0]["function"]["arguments"] = '{"order_id": "A17"}'
    assert renderer.prompt_text(as_api, TOOLS) == renderer.prompt_text(conv.messages[:3], TOOLS)
