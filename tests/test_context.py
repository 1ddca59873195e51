"""The one retrieved-context format (data/context.py) and the RAG prompts built with it: with documents,
the documents are the source of facts and training examples are marked style examples, or left out."""

from __future__ import annotations

from tunesmith.data.context import DOCS_HEADER, STYLE_HEADER, with_context
from tunesmith.decide.prompts import rag_prompts
from tunesmith.decide.retrieval import Chunk
from tunesmith.eval.rows import EvalRow

PAIRS = [
    [{"role": "user", "content": "How much water does the Aero kettle hold?"},
     {"role": "assistant", "content": "Hi! The Aero holds 1.7 litres. Cheers, Brewline"}],
    [{"role": "user", "content": "What warranty does the grinder have?"},
     {"role": "assistant", "content": "Hi! Two years. Cheers, Brewline"}],
]  # fmt: skip
CHUNKS = [Chunk("# Aero kettle The Aero kettle holds 2 litres.", "aero.md:1"), Chunk("# Grinder 3 years.", "g.md:1")]
ROW = EvalRow("t.jsonl:1", [{"role": "user", "content": "How much does the Aero kettle hold?"}], None)


def test_docs_lead_and_examples_are_marked_as_style() -> None:
    prompt = with_context(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"}],
        instructions="You are Brewline's assistant.",
        chunks=["The Aero holds 2 litres."],
        examples=[("Old Q", "Old A: 1.7 litres")],
    )
    assert [m["role"] for m in prompt] == ["system", "user"]
    system = prompt[0]["content"]
    assert system.index("You are Brewline") < system.index(DOCS_HEADER) < system.index(STYLE_HEADER)
    assert "[1] The Aero holds 2 litres." in system and "Question: Old Q\nAnswer: Old A: 1.7 litres" in system
    assert system.endswith("Be brief."), "the row's own system message is kept, last"
    assert "may be out of date" in STYLE_HEADER and "current" in DOCS_HEADER


def test_rag_prompts_with_docs_mark_left_out_or_turn_the_examples() -> None:
    style = rag_prompts([ROW], PAIRS, CHUNKS, "", 1, "bm25").prompts[0]
    assert len(style) == 2 and "The Aero kettle holds 2 litres" in style[0]["content"]
    assert "Answer: Hi! The Aero holds 1.7 litres" in style[0]["content"]
    none = rag_prompts([ROW], PAIRS, CHUNKS, "", 1, "bm25", examples_as="none")
    assert "1.7" not in none.prompts[0][0]["content"] and none.sources == [["aero.md:1"]]
    turns = rag_prompts([ROW], PAIRS, CHUNKS, "", 1, "bm25", examples_as="turns").prompts[0]
    assert [m["role"] for m in turns] == ["system", "user", "assistant", "user"]


def test_without_docs_retrieved_examples_are_earlier_turns() -> None:
    prompt = rag_prompts([ROW], PAIRS, [], "Be kind.", 1, "bm25").prompts[0]
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user"]
    assert prompt[0]["content"] == "Be kind." and "1.7 litres" in prompt[2]["content"]
