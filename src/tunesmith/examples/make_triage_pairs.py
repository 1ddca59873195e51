"""Generator of the shipped ``support_triage_pairs`` preference data, in OpenAI's DPO format.

Each row of the demo's triage data becomes one pair: the preferred output is the row's correct triage JSON,
the non-preferred one the same JSON with exactly one label (category, priority or sentiment) swapped for
another valid value. These are the near misses a supervised model makes, which DPO is good at removing:
the two replies differ in a word or two, so the preference is about the label, not about the format.

    {"input": {"messages": [user email]}, "preferred_output": [assistant: correct JSON],
     "non_preferred_output": [assistant: one label wrong]}

Running this script rewrites ``support_triage_pairs/{train,test}.jsonl`` from ``support_triage/``. It is
seeded, so the output is reproduced byte for byte.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tunesmith.examples.support_triage_vocab import CATEGORIES, PRIORITIES, SENTIMENTS

SEED = 20261204
HERE = Path(__file__).resolve().parent
SOURCE, OUT_DIR = HERE / "support_triage", HERE / "support_triage_pairs"
LABELS = {"category": CATEGORIES, "priority": PRIORITIES, "sentiment": SENTIMENTS}


def near_miss(reply: dict[str, str], rng: random.Random) -> dict[str, str]:
    """The same triage with one label swapped for another valid one."""
    field = rng.choice(sorted(LABELS))
    wrong = rng.choice([v for v in LABELS[field] if v != reply[field]])
    return {**reply, field: wrong}


def pair(row: dict, rng: random.Random) -> dict:
    *prompt, answer = row["messages"]
    good = json.loads(answer["content"])
    return {
        "input": {"messages": prompt},
        "preferred_output": [{"role": "assistant", "content": json.dumps(good)}],
        "non_preferred_output": [{"role": "assistant", "content": json.dumps(near_miss(good, rng))}],
    }


def main() -> None:
    rng = random.Random(SEED)
    OUT_DIR.mkdir(exist_ok=True)
    for split in ("train", "test"):
        rows = [json.loads(line) for line in (SOURCE / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
        lines = [json.dumps(pair(r, rng), ensure_ascii=False) for r in rows]
        (OUT_DIR / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"{split}: {len(lines)} pairs -> {OUT_DIR / f'{split}.jsonl'}")


if __name__ == "__main__":
    main()
