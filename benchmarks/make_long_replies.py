"""Writes benchmarks/data/long_replies.jsonl: the demo's support emails answered with long, varied replies
(roughly 60 to 350 reply tokens), so that the training benchmark also sees naturally varied lengths."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tunesmith.demo import dataset_path

SENTENCES = [
    "Thank you for reaching out and for the detail you included.",
    "I have looked at your account and I can see what happened.",
    "I am sorry for the trouble this has caused you and your team.",
    "Our records show the change was applied on our side, but the confirmation never reached you.",
    "I have escalated this to the specialist team, who will follow up within one business day.",
    "In the meantime, signing out and back in usually clears a stale session.",
    "If the problem persists, please send us a screenshot of the error message.",
    "I have issued a credit to your account for the inconvenience.",
    "You should see it on your next invoice.",
    "Please let us know if there is anything else we can help with.",
    "We have also shared your feedback with the product team.",
    "A replacement has been prepared and will ship with tracking by tomorrow.",
    "For security reasons we cannot change account details by email, so please use the settings page.",
    "The update that fixes this issue is rolling out this week.",
    "I have added a note to your case so that anyone you speak to next has the full history.",
]


def reply(rng: random.Random) -> str:
    n = rng.choice([2, 3, 4, 6, 8, 11, 14])
    return " ".join(rng.choice(SENTENCES) for _ in range(n))


def main() -> None:
    rng = random.Random(7)
    out = Path(__file__).parent / "data"
    out.mkdir(exist_ok=True)
    for split in ("train", "test"):
        rows = []
        for line in (dataset_path() / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            email = json.loads(line)["messages"][0]
            rows.append({"messages": [email, {"role": "assistant", "content": reply(rng)}]})
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (out / f"long_replies_{split}.jsonl").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
