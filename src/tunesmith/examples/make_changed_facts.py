"""A changed-facts set (issue 23): a brand voice whose facts have moved on since its examples were written.

    train.jsonl   200 support replies in Brewline's voice (a fixed greeting and sign-off) about two products;
                  three kettle facts in them are stale (capacity, warranty, temperature settings)
    test.jsonl    30 held-out questions about the three changed facts; each row's ``fact`` is the current
                  value, ``must_not_contain`` the stale one, plus ``id`` and ``topic`` metadata
    docs/         the current product pages (Markdown sections), which state the new facts

What should win: LoRA for the voice + retrieval for the facts. LoRA alone repeats the stale facts; a base
model with retrieval states the new facts but not in the voice. ``python -m
tunesmith.examples.make_changed_facts OUT`` writes the set (seeded: the same bytes every time).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

GREETING = "Hi there, thanks for reaching out to Brewline!"
SIGN_OFF = "Happy brewing, the Brewline team"

# topic -> (question templates, the answer as the training data has it, the answer as the docs have it now,
# the fact a right answer must contain, the stale value it must not). Unchanged topics have no new answer.
TOPICS: dict[str, dict[str, object]] = {
    "capacity": {
        "questions": [
            "How much water does the Aero kettle hold?",
            "What is the capacity of the Aero kettle?",
            "How many litres fit in the Aero?",
            "Is the Aero kettle big enough for a family?",
            "How much can I boil at once in the Aero kettle?",
            "What volume does the Aero kettle have?",
            "Can the Aero kettle boil enough for eight cups?",
            "I need to know how big the Aero kettle is.",
        ],
        "old": "The Aero kettle holds 1.7 litres, enough for about seven cups.",
        "new": "The Aero kettle holds 2.2 litres, enough for about nine cups.",
        "fact": "2.2 litres",
        "stale": "1.7 litres",
    },
    "warranty": {
        "questions": [
            "How long is the warranty on the Aero kettle?",
            "What warranty comes with the Aero?",
            "Is the Aero kettle covered by a warranty?",
            "For how many years is my Aero kettle guaranteed?",
            "What happens if my Aero kettle breaks after a year?",
            "Does the Aero have a guarantee?",
            "How long does the Aero kettle's guarantee last?",
            "Tell me about the warranty for the Aero kettle.",
        ],
        "old": "The Aero kettle comes with a 2-year warranty from the date of purchase.",
        "new": "The Aero kettle comes with a 5-year warranty from the date of purchase.",
        "fact": "5-year warranty",
        "stale": "2-year warranty",
    },
    "temperatures": {
        "questions": [
            "How many temperature settings does the Aero kettle have?",
            "Can I set the temperature on the Aero?",
            "Does the Aero kettle have settings for green tea?",
            "What temperatures can the Aero kettle heat to?",
            "Is the Aero kettle adjustable for different teas?",
            "Which heat settings does the Aero offer?",
            "Can the Aero kettle keep water below boiling for tea?",
            "Tell me about the temperature control on the Aero kettle.",
        ],
        "old": "The Aero kettle has 4 temperature settings: 70, 80, 90 and 100 degrees.",
        "new": "The Aero kettle has 6 temperature settings: 60, 70, 80, 85, 90 and 100 degrees.",
        "fact": "6 temperature settings",
        "stale": "4 temperature settings",
    },
    "kettle_price": {
        "questions": [
            "How much does the Aero kettle cost?",
            "What is the price of the Aero?",
            "How expensive is the Aero kettle?",
            "What do I pay for an Aero kettle?",
        ],
        "old": "The Aero kettle costs 89 euros.",
    },
    "boil_time": {
        "questions": [
            "How fast does the Aero kettle boil?",
            "How long does the Aero take to boil a full kettle?",
            "Is the Aero kettle quick?",
            "How many minutes until the Aero boils?",
        ],
        "old": "A full Aero kettle boils in about 3 minutes.",
    },
    "grind_settings": {
        "questions": [
            "How many grind settings does the Nova grinder have?",
            "Can the Nova grinder grind for espresso?",
            "How fine can the Nova grinder go?",
            "Which grind sizes does the Nova offer?",
        ],
        "old": "The Nova grinder has 40 grind settings, from espresso fine to French press coarse.",
    },
    "grinder_price": {
        "questions": [
            "How much does the Nova grinder cost?",
            "What is the price of the Nova?",
            "How expensive is the Nova grinder?",
            "What do I pay for a Nova grinder?",
        ],
        "old": "The Nova grinder costs 129 euros.",
    },
    "hopper": {
        "questions": [
            "How many beans fit in the Nova grinder?",
            "What is the hopper size of the Nova?",
            "How much coffee does the Nova grinder hold?",
            "How big is the bean hopper on the Nova grinder?",
        ],
        "old": "The Nova grinder's hopper holds 250 grams of beans.",
    },
}
CHANGED = ("capacity", "warranty", "temperatures")
HELD_OUT = 2  # the last question templates of each changed topic are seen only in the test set
OPENERS = ["", "Great question! ", "Good news: ", "Of course. "]
CLOSERS = ["", " Let us know if there is anything else.", " Enjoy your brew."]

DOCS = {
    "aero-kettle.md": """# Aero kettle

The Aero is Brewline's electric kettle, in brushed steel.

## Capacity

The Aero kettle holds 2.2 litres, enough for about nine cups. The minimum fill is 0.5 litres.

## Warranty

Every Aero kettle bought from 2025 on comes with a 5-year warranty from the date of purchase.
Register it on brewline.example/warranty.

## Temperature settings

The Aero kettle has 6 temperature settings: 60, 70, 80, 85, 90 and 100 degrees.
It keeps the water at the chosen temperature for 30 minutes.

## Price and boiling time

The Aero kettle costs 89 euros. A full Aero kettle boils in about 3 minutes.
""",
    "nova-grinder.md": """# Nova grinder

The Nova is Brewline's burr grinder.

## Grind settings

The Nova grinder has 40 grind settings, from espresso fine to French press coarse.

## Hopper

The Nova grinder's hopper holds 250 grams of beans.

## Price

The Nova grinder costs 129 euros.
""",
}


def reply(answer: str, rng: random.Random) -> str:
    return f"{GREETING} {rng.choice(OPENERS)}{answer}{rng.choice(CLOSERS)} {SIGN_OFF}"


def make_rows(n_train: int = 200, n_test: int = 30, seed: int = 0) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    names = list(TOPICS)
    train = []
    for i in range(n_train):
        topic = TOPICS[names[i % len(names)]]
        questions = list(topic["questions"])  # type: ignore[arg-type]
        seen = questions[:-HELD_OUT] if names[i % len(names)] in CHANGED else questions
        answer = reply(str(topic["old"]), rng)
        train.append(
            {"messages": [{"role": "user", "content": rng.choice(seen)}, {"role": "assistant", "content": answer}]}
        )
    test = []
    for i in range(n_test):
        name = CHANGED[i % len(CHANGED)]
        topic = TOPICS[name]
        questions = list(topic["questions"])  # type: ignore[arg-type]
        # Held-out wordings first, then seen ones: a test of the facts, not of memorising the questions.
        q = questions[-HELD_OUT:][i // len(CHANGED) % HELD_OUT] if i < 4 * len(CHANGED) else rng.choice(questions)
        test.append(
            {
                "id": f"q{i + 1:02d}",
                "topic": name,
                "messages": [
                    {"role": "user", "content": q},
                    {"role": "assistant", "content": reply(str(topic["new"]), rng)},
                ],
                "fact": topic["fact"],
                "must_not_contain": topic["stale"],
            }
        )
    return train, test


def write_changed_facts(out: Path | str, n_train: int = 200, n_test: int = 30, seed: int = 0) -> Path:
    """train.jsonl, test.jsonl and docs/ under ``out``; returns ``out``."""
    out = Path(out)
    (out / "docs").mkdir(parents=True, exist_ok=True)
    train, test = make_rows(n_train, n_test, seed)
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    for name, text in DOCS.items():
        (out / "docs" / name).write_text(text, encoding="utf-8")
    return out


if __name__ == "__main__":
    print(write_changed_facts(sys.argv[1] if len(sys.argv) > 1 else "changed_facts"))
