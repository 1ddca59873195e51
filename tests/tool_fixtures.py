"""A tiny model that reliably calls a tool: a 2-layer Llama (real SmolLM2 tokenizer, so the fallback tool
format) fully fine-tuned until it has memorised a handful of fixed tool-calling rows. Real weights, real
training: nothing in the server or the eval is stubbed."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import save_tiny_llama

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
            "required": ["city"],
        },
    },
}
TOOLS = [WEATHER]
ASK_PARIS = [{"role": "user", "content": "What is the weather in Paris?"}]
ASK_ROME = [{"role": "user", "content": "Weather in Rome, in F please"}]
HELLO = [{"role": "user", "content": "Say hello."}]
PARIS_ARGS = {"city": "Paris", "unit": "C"}
ROME_ARGS = {"city": "Rome", "unit": "F"}
PARIS_RESULT = "sunny, 21"
PARIS_ANSWER = "It is sunny and 21 C in Paris."


def _call(ident: str, args: dict) -> dict:
    return {"id": ident, "type": "function", "function": {"name": "get_weather", "arguments": json.dumps(args)}}


def tool_rows() -> list[dict]:
    call = {"role": "assistant", "content": None, "tool_calls": [_call("call_1", PARIS_ARGS)]}
    return [
        {"tools": TOOLS, "messages": [*ASK_PARIS, call]},
        {
            "tools": TOOLS,
            "messages": [
                *ASK_PARIS,
                call,
                {"role": "tool", "tool_call_id": "call_1", "content": PARIS_RESULT},
                {"role": "assistant", "content": PARIS_ANSWER},
            ],
        },
        {"tools": TOOLS, "messages": [*ASK_ROME, {"role": "assistant", "tool_calls": [_call("c2", ROME_ARGS)]}]},
        {"tools": TOOLS, "messages": [*HELLO, {"role": "assistant", "content": "Hello!"}]},
    ]


def train_tool_model(base_dir: Path, tmp: Path, steps: int = 200) -> Path:
    """Full fine-tuning of the tiny model on tool_rows() until it repeats them word for word."""
    from tunesmith.config import load_config
    from tunesmith.train.pipeline import run_training

    data = tmp / "tools.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in tool_rows()), encoding="utf-8")
    cfg = load_config(
        None,
        {
            "model": {"name": str(base_dir)},
            "data": {"train": str(data), "val_split": 0.0, "max_len": 512},
            "train": {
                "method": "full",
                "batch_size": 4,
                "micro_batch_size": 4,
                "learning_rate": 5e-3,
                "epochs": steps,  # four rows, one step per epoch
                "max_steps": steps,
                "warmup_ratio": 0.05,
                "precision": "fp32",
            },
        },
    )
    return run_training(cfg, tmp / "weather").run_dir


def tiny_base(tokenizer, out: Path) -> Path:
    """A 2-layer Llama with hidden size 64 (32 is too small to memorise the rows quickly), saved with the tokenizer."""
    return save_tiny_llama(tokenizer, out, hidden=64)
