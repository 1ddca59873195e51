"""Generator of the shipped ``support_triage_rft`` data: reinforcement fine-tuning on the demo's triage task.

    sft.jsonl     40 demo rows with their reference replies: a short SFT run gives RFT a start that is
                  sometimes right (the base model never answers in the schema, so it could learn nothing)
    train.jsonl   other demo emails as RFT prompts: messages end with the user's email; the right labels
                  ride along as fields (category, priority, sentiment, product), which the grader reads
                  as its ``item``
    test.jsonl    the demo's held-out emails, in the same shape, for `tunesmith eval RUN --grader`
    grader.json   a python grader: the share of the four label fields the reply's JSON gets right (0 for a
                  reply that is not a JSON object)

    tunesmith train --data sft.jsonl --out runs/triage-sft
    tunesmith train --method rft --model runs/triage-sft --grader grader.json --data train.jsonl --out runs/triage-rft
    tunesmith eval runs/triage-rft --grader grader.json --data test.jsonl

Running this script rewrites the folder from ``support_triage/``; the output is reproduced byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE, OUT_DIR = HERE / "support_triage", HERE / "support_triage_rft"
SFT_ROWS, RFT_ROWS = 40, 120  # demo rows 0..39 for SFT, the next 120 as RFT prompts
FIELDS = ("category", "priority", "sentiment", "product")

GRADER_SOURCE = '''import json

FIELDS = ("category", "priority", "sentiment", "product")


def grade(sample, item):
    """The share of the four label fields the reply gets right; 0 unless the reply is a JSON object."""
    reply = sample.get("output_json")
    if not isinstance(reply, dict):
        try:
            reply = json.loads(sample["output_text"])
        except ValueError:
            return 0.0
    if not isinstance(reply, dict):
        return 0.0
    right = sum(1 for f in FIELDS if str(reply.get(f, "")).strip().lower() == str(item[f]).strip().lower())
    return right / len(FIELDS)
'''


def rft_row(row: dict) -> dict:
    *prompt, answer = row["messages"]
    labels = json.loads(answer["content"])
    return {"messages": prompt, **{f: labels[f] for f in FIELDS}}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    train = [json.loads(x) for x in (SOURCE / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    test = [json.loads(x) for x in (SOURCE / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    OUT_DIR.mkdir(exist_ok=True)
    write_jsonl(OUT_DIR / "sft.jsonl", train[:SFT_ROWS])
    write_jsonl(OUT_DIR / "train.jsonl", [rft_row(r) for r in train[SFT_ROWS : SFT_ROWS + RFT_ROWS]])
    write_jsonl(OUT_DIR / "test.jsonl", [rft_row(r) for r in test])
    grader = {"type": "python", "name": "triage_fields", "source": GRADER_SOURCE}
    (OUT_DIR / "grader.json").write_text(json.dumps(grader, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
