"""Generator of an OpenAI-format tool-calling dataset: an order-support agent with four functions.

Each row carries the four function definitions (``tools``) and is one of three kinds:
  * no call   a question the agent answers from policy (opening hours, return window, ...);
  * call      a request that needs a function: the row ends on the assistant's tool call, the target;
  * loop      the call, the tool's result, and the agent's final answer built from that result.
Order ids, names, items and reasons are sampled independently, so a model has to learn the mapping from
request to function and arguments rather than memorise rows. Seeded: the same arguments give the same
files byte for byte.

    python -m tunesmith.examples.make_order_tools OUT_DIR [--rows 300] [--seed 0]

writes OUT_DIR/train.jsonl and OUT_DIR/test.jsonl (a seeded 15% held out).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

SYSTEM = "You are the order-support agent of Northwind Goods. Use the tools to look up or change orders."
REASONS = ["changed_mind", "found_cheaper", "ordered_by_mistake", "arrives_too_late"]
RETURN_REASONS = ["damaged", "wrong_item", "too_small", "too_large", "not_as_described"]
ITEMS = ["blue kettle", "desk lamp", "running shoes", "wool scarf", "coffee grinder", "yoga mat", "backpack"]
STATUSES = ["processing", "shipped", "out for delivery", "delivered"]
STREETS = ["12 Elm Street", "4 Harbour Road", "77 Mill Lane", "5 Station Square", "230 King Avenue"]
CITIES = ["Leeds", "Bristol", "Cork", "Lyon", "Ghent"]
NAMES = ["Ana", "Ben", "Chloe", "Dev", "Elif", "Femi", "Greta", "Hugo", "Ines", "Jon", "Kai", "Lena", "Mo", "Nina"]
GREETINGS = ["Hi, {name} here.", "Hello, this is {name}.", "Good morning! {name} speaking.", "Hey, it's {name}."]


def _fn(name: str, description: str, props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    params = {"type": "object", "properties": props, "required": required, "additionalProperties": False}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": params}}


ORDER_ID = {"type": "string", "pattern": "^NW-[0-9]{5}$", "description": "Order id, e.g. NW-01234"}
TOOLS = [
    _fn("get_order_status", "Look up where an order is.", {"order_id": ORDER_ID}, ["order_id"]),
    _fn(
        "cancel_order",
        "Cancel an order that has not shipped.",
        {"order_id": ORDER_ID, "reason": {"type": "string", "enum": REASONS}},
        ["order_id", "reason"],
    ),
    _fn(
        "start_return",
        "Open a return for one item of a delivered order.",
        {"order_id": ORDER_ID, "item": {"type": "string"}, "reason": {"type": "string", "enum": RETURN_REASONS}},
        ["order_id", "item", "reason"],
    ),
    _fn(
        "update_shipping_address",
        "Change the delivery address of an order that has not shipped.",
        {"order_id": ORDER_ID, "street": {"type": "string"}, "city": {"type": "string"}},
        ["order_id", "street", "city"],
    ),
]

NO_CALL = [
    ("What are your opening hours?", "Our support team is available Monday to Saturday, 8am to 8pm."),
    ("How long do I have to return something?", "You can return any item within 30 days of delivery."),
    ("Do you ship abroad?", "Yes, we ship to most countries in Europe; delivery takes 3 to 7 working days."),
    ("Is delivery free?", "Delivery is free on orders over 40 pounds; below that it costs 3.95."),
    ("Can I pay by bank transfer?", "We accept cards, PayPal and bank transfer for orders over 100 pounds."),
    ("Thanks for your help!", "You're welcome! Is there anything else I can do for you?"),
]
CANCEL_ASK = {
    "changed_mind": "I changed my mind, please cancel order {oid}.",
    "found_cheaper": "Cancel {oid} please, I found it cheaper elsewhere.",
    "ordered_by_mistake": "I ordered {oid} by mistake. Can you cancel it?",
    "arrives_too_late": "Order {oid} will arrive too late for me, please cancel it.",
}
RETURN_ASK = {
    "damaged": "The {item} from order {oid} arrived damaged. I want to return it.",
    "wrong_item": "I got the wrong item: order {oid} should not contain a {item}. Return please.",
    "too_small": "The {item} in {oid} is too small, I'd like to send it back.",
    "too_large": "The {item} from {oid} is too large. How do I return it?",
    "not_as_described": "The {item} (order {oid}) is not as described. I want a return.",
}


def _request(rng: random.Random, oid: str) -> tuple[str, str, dict[str, Any], str, str]:
    """(user text, function, arguments, tool result, final answer) for one sampled request."""
    kind = rng.choice(["status", "cancel", "return", "address"])
    if kind == "status":
        status = rng.choice(STATUSES)
        ask = rng.choice(["Where is my order {oid}?", "Any news on {oid}?", "Can you check the status of {oid}?"])
        result = {"order_id": oid, "status": status}
        return (
            ask.format(oid=oid),
            "get_order_status",
            {"order_id": oid},
            json.dumps(result),
            f"Order {oid} is {status}.",
        )
    if kind == "cancel":
        reason = rng.choice(REASONS)
        result = {"order_id": oid, "cancelled": True}
        answer = f"Order {oid} is cancelled; the refund reaches you within 5 days."
        return (
            CANCEL_ASK[reason].format(oid=oid),
            "cancel_order",
            {"order_id": oid, "reason": reason},
            json.dumps(result),
            answer,
        )
    if kind == "return":
        item, reason = rng.choice(ITEMS), rng.choice(RETURN_REASONS)
        label = f"RT-{rng.randrange(10000, 99999)}"
        args = {"order_id": oid, "item": item, "reason": reason}
        answer = f"I opened return {label} for the {item}. Print the label from the email we just sent."
        return (
            RETURN_ASK[reason].format(oid=oid, item=item),
            "start_return",
            args,
            json.dumps({"return_id": label}),
            answer,
        )
    street, city = rng.choice(STREETS), rng.choice(CITIES)
    ask = f"Please send order {oid} to {street}, {city} instead."
    args = {"order_id": oid, "street": street, "city": city}
    return (
        ask,
        "update_shipping_address",
        args,
        json.dumps({"updated": True}),
        f"Done: order {oid} will go to {street}, {city}.",
    )


def make_row(rng: random.Random, index: int) -> dict[str, Any]:
    roll = rng.random()
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    if roll < 0.25:
        question, answer = rng.choice(NO_CALL)
        hello = rng.choice(GREETINGS).format(name=rng.choice(NAMES))
        messages += [{"role": "user", "content": f"{hello} {question}"}, {"role": "assistant", "content": answer}]
        return {"tools": TOOLS, "messages": messages}
    oid = f"NW-{rng.randrange(100000):05d}"
    ask, name, args, result, answer = _request(rng, oid)
    call_id = f"call_{index:04d}"
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
    messages += [{"role": "user", "content": ask}, {"role": "assistant", "content": None, "tool_calls": [call]}]
    if roll >= 0.6:  # the whole loop: the result comes back and the agent answers from it
        messages += [
            {"role": "tool", "tool_call_id": call_id, "content": result},
            {"role": "assistant", "content": answer},
        ]
    return {"tools": TOOLS, "parallel_tool_calls": False, "messages": messages}


def make_rows(n: int = 300, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(rows) < n:  # every request is asked once: no duplicates, no train/test leakage
        row = make_row(rng, len(rows))
        ask = row["messages"][1]["content"]
        if ask not in seen:
            seen.add(ask)
            rows.append(row)
    return rows


def write(out: Path, n: int = 300, seed: int = 0, test_share: float = 0.15) -> tuple[Path, Path]:
    rows = make_rows(n, seed)
    n_test = round(n * test_share)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "train.jsonl", out / "test.jsonl"
    for path, part in zip(paths, (rows[n_test:], rows[:n_test]), strict=True):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train, test = write(args.out, args.rows, args.seed)
    print(f"wrote {train} and {test}")


if __name__ == "__main__":
    main()
