"""Generator of the shipped ``support_triage`` demo dataset.

Customer support emails are mapped to a compact triage JSON object (category, priority, sentiment,
product, summary). Each email is composed from independently sampled parts (greeting, opening,
problem description, details, urgency cue, tone cue, sign-off) so that a model has to learn the
mapping rather than memorise rows. The user message carries only the email: no system message and no
instructions, which is the point of the demo.

Running this script rewrites ``support_triage/{train,test}.jsonl`` and ``instructions.txt`` next to
it. It is seeded, so the output is reproduced byte for byte.
"""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from pathlib import Path

from tunesmith.examples.support_triage_problems import PROBLEMS
from tunesmith.examples.support_triage_vocab import (
    AGENTS,
    CARRIERS,
    CATEGORIES,
    CATEGORY_PRIORITY_WEIGHTS,
    CATEGORY_SENTIMENT_WEIGHTS,
    COLORS,
    DEFAULT_PRIORITY_WEIGHTS,
    DEFAULT_SENTIMENT_WEIGHTS,
    DETAILS,
    DEVICES,
    FILLERS,
    FIRST_NAMES,
    GREETINGS,
    INSTRUCTIONS,
    LANGUAGES,
    LAST_NAMES,
    MONTHS,
    OPENINGS,
    PLANS,
    PRIORITIES,
    PRIORITY_CUES,
    PRODUCTS,
    SENTIMENT_CUES,
    SENTIMENTS,
    SIGNOFFS,
    WEEKDAYS,
)

SEED = 20240611
N_TRAIN = 300
N_TEST = 60
MIN_WORDS = 30
MAX_WORDS = 120
OUT_DIR = Path(__file__).resolve().parent / "support_triage"


def _slots(rng: random.Random, product: str) -> dict[str, str]:
    """Sample a value for every slot a template may use."""
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    cents = rng.choice((0, 49, 99))
    return {
        "product": product,
        "name": f"{first} {last}",
        "first": first,
        "email": f"{first.lower()}.{last.lower()}{rng.randint(1, 99)}@example.com",
        "order": f"#{rng.choice('ABCKMRT')}{rng.randint(10000, 99999)}",
        "amount": f"${rng.randint(5, 400)}.{cents:02d}",
        "date": f"{rng.choice(MONTHS)} {rng.randint(1, 28)}",
        "weekday": rng.choice(WEEKDAYS),
        "device": rng.choice(DEVICES),
        "plan": rng.choice(PLANS),
        "carrier": rng.choice(CARRIERS),
        "color": rng.choice(COLORS),
        "language": rng.choice(LANGUAGES),
        "agent": rng.choice(AGENTS),
        "version": f"{rng.randint(2, 9)}.{rng.randint(0, 12)}.{rng.randint(0, 9)}",
        "code": f"{rng.choice('EX')}-{rng.randint(100, 999)}",
        "years": str(rng.randint(2, 8)),
    }


def _make_row(rng: random.Random, category: str) -> tuple[str, dict[str, str]]:
    """Compose one email for ``category`` and return it with its label object."""
    product = rng.choice(sorted({p for problem in PROBLEMS[category] for p in problem.products}))
    problem = rng.choice([problem for problem in PROBLEMS[category] if product in problem.products])
    priority_weights = CATEGORY_PRIORITY_WEIGHTS.get(category, DEFAULT_PRIORITY_WEIGHTS)
    sentiment_weights = CATEGORY_SENTIMENT_WEIGHTS.get(category, DEFAULT_SENTIMENT_WEIGHTS)
    priority = rng.choices(PRIORITIES, priority_weights)[0]
    sentiment = rng.choices(SENTIMENTS, sentiment_weights)[0]
    slots = _slots(rng, product)

    facts = [rng.choice(OPENINGS), rng.choice(problem.texts)]
    facts.extend(rng.sample(DETAILS[category], rng.randint(0, 3)))
    extra = rng.sample(FILLERS, rng.choice((0, 0, 1, 1, 2, 3)))
    cues = [rng.choice(PRIORITY_CUES[priority]), rng.choice(SENTIMENT_CUES[sentiment])]
    rng.shuffle(cues)
    if rng.random() < 0.5:
        paragraphs = [" ".join(part for part in [*facts, *extra, *cues] if part)]
    else:
        paragraphs = [" ".join(part for part in facts if part), " ".join([*extra, *cues])]

    greeting = rng.choice(GREETINGS)
    signoff = rng.choice(SIGNOFFS)
    parts = [greeting, *paragraphs]
    if signoff:
        parts.append(f"{signoff}\n{slots['name'] if rng.random() < 0.6 else slots['first']}")
    email = "\n\n".join(part for part in parts if part).format(**slots)

    label = {
        "category": category,
        "priority": priority,
        "sentiment": sentiment,
        "product": product,
        "summary": problem.summary,
    }
    return email, label


def generate(seed: int = SEED) -> tuple[list[dict], list[dict]]:
    """Build the train and test rows: balanced categories, unique emails, lengths within bounds."""
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: list[list[dict]] = []
    for size in (N_TRAIN, N_TEST):
        categories = [CATEGORIES[i % len(CATEGORIES)] for i in range(size)]
        rng.shuffle(categories)
        rows: list[dict] = []
        for category in categories:
            while True:
                email, label = _make_row(rng, category)
                if email not in seen and MIN_WORDS <= len(email.split()) <= MAX_WORDS:
                    break
            seen.add(email)
            rows.append(
                {
                    "messages": [
                        {"role": "user", "content": email},
                        {"role": "assistant", "content": json.dumps(label, ensure_ascii=False)},
                    ]
                }
            )
        splits.append(rows)
    train, test = splits
    _check(train, test)
    return train, test


def _labels(rows: list[dict]) -> list[dict[str, str]]:
    return [json.loads(row["messages"][1]["content"]) for row in rows]


def _check(train: list[dict], test: list[dict]) -> None:
    """Assert the invariants the demo relies on."""
    assert len(train) == N_TRAIN and len(test) == N_TEST
    train_emails = {row["messages"][0]["content"] for row in train}
    assert len(train_emails) == N_TRAIN, "duplicate email in train"
    assert not train_emails & {row["messages"][0]["content"] for row in test}, "test email found in train"
    allowed = {"category": CATEGORIES, "priority": PRIORITIES, "sentiment": SENTIMENTS, "product": PRODUCTS}
    for rows in (train, test):
        labels = _labels(rows)
        for key, values in allowed.items():
            assert {label[key] for label in labels} == set(values), f"not every {key} value appears"
        for row, label in zip(rows, labels, strict=True):
            assert list(label) == ["category", "priority", "sentiment", "product", "summary"]
            assert label["product"] in row["messages"][0]["content"]
            assert 4 <= len(label["summary"].split()) <= 9


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8", newline="\n")


def _print_summary(train: list[dict], test: list[dict]) -> None:
    for name, rows in (("train", train), ("test", test)):
        labels = _labels(rows)
        print(f"== {name}: {len(rows)} rows")
        for key in ("category", "priority", "sentiment", "product"):
            counts = Counter(label[key] for label in labels)
            print(f"  {key}: " + ", ".join(f"{value}={count}" for value, count in sorted(counts.items())))
        print(f"  distinct summaries: {len({label['summary'] for label in labels})}")
        words = [len(row["messages"][0]["content"].split()) for row in rows]
        print(f"  email words: min={min(words)} median={statistics.median(words)} max={max(words)}")
    print("== samples")
    for row in train[:3]:
        print(json.dumps(row, ensure_ascii=False))


def main() -> None:
    train, test = generate()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    _write_jsonl(OUT_DIR / "train.jsonl", train)
    _write_jsonl(OUT_DIR / "test.jsonl", test)
    (OUT_DIR / "instructions.txt").write_text(INSTRUCTIONS, encoding="utf-8", newline="\n")
    _print_summary(train, test)


if __name__ == "__main__":
    main()
