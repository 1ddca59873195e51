"""The behavioural forgetting probe's questions (``eval/behaviour.py``): candidates, filtered by a real model.

``python -m tunesmith.examples.make_general_questions [OUT] [--model ALIAS]`` asks the embedded model (default
``smollm2-135m``, SmolLM2-135M-Instruct) every candidate below, one user turn each through its own chat
template, greedy, ``behaviour.MAX_NEW_TOKENS`` new tokens, and writes the ones it answers right (by
``behaviour.answered``) to OUT (default: ``general_questions.json`` beside this file), with the model, the
decoding and the dropped candidates recorded in the file. The same model gives the same file every time.

Then it drops the fragile ones: items the model stops answering right under any of ``PERTURBATIONS`` small
random changes of its weights (a LoRA adapter, rank 16 on every linear layer, its B matrices drawn from
N(0, ``SIGMA``), fixed seeds), each about as far from the model as a KL-held training run ends (KL per token to
the base on everyday answers ~0.01). Without this the probe measured noise: such a random change, which teaches
nothing, lost 1-3 of the 41 items SmolLM2 answers greedily (5 x 5, "grass", "once upon a", the closest star),
the items it gets right by a hair, and one lost item in ten counted as forgetting (BENCHMARKS.md, forgetting
frontier, part 3).

A candidate's accepted answers never appear in its own prompt (an echo of the question scores nothing), and
single letters or words like "a" are avoided as answers (they would match almost any sentence).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ONE = " Answer in one word."
NUM = " Answer with a number."

# (prompt, accepted answers). Every answer is matched as whole words after normalizing (behaviour.normalize).
CANDIDATES: list[tuple[str, list[str]]] = [
    # arithmetic
    ("What is 2 + 3?" + NUM, ["5", "five"]),
    ("What is 7 + 8?" + NUM, ["15", "fifteen"]),
    ("What is 10 - 4?" + NUM, ["6", "six"]),
    ("What is 3 times 4?" + NUM, ["12", "twelve"]),
    ("What is 9 + 10?" + NUM, ["19", "nineteen"]),
    ("What is 100 divided by 4?" + NUM, ["25", "twenty five", "twenty-five"]),
    ("What is 5 times 5?" + NUM, ["25", "twenty five", "twenty-five"]),
    ("What is half of 20?" + NUM, ["10", "ten"]),
    ("What is 6 + 6?" + NUM, ["12", "twelve"]),
    # capitals
    ("What is the capital of France?" + ONE, ["Paris"]),
    ("What is the capital of Japan?" + ONE, ["Tokyo"]),
    ("What is the capital of Italy?" + ONE, ["Rome"]),
    ("What is the capital of Germany?" + ONE, ["Berlin"]),
    ("What is the capital of Spain?" + ONE, ["Madrid"]),
    ("What is the capital of the United Kingdom?" + ONE, ["London"]),
    ("What is the capital of Russia?" + ONE, ["Moscow"]),
    ("What is the capital of Egypt?" + ONE, ["Cairo"]),
    ("What is the capital of China?" + ONE, ["Beijing"]),
    ("What is the capital of Canada?" + ONE, ["Ottawa"]),
    # opposites
    ("What is the opposite of hot?" + ONE, ["cold"]),
    ("What is the opposite of up?" + ONE, ["down"]),
    ("What is the opposite of big?" + ONE, ["small", "little", "tiny"]),
    ("What is the opposite of day?" + ONE, ["night"]),
    ("What is the opposite of happy?" + ONE, ["sad", "unhappy"]),
    ("What is the opposite of black?" + ONE, ["white"]),
    ("What is the opposite of fast?" + ONE, ["slow"]),
    ("What is the opposite of open?" + ONE, ["closed", "close", "shut"]),
    # simple facts
    ("How many days are in a week?" + NUM, ["7", "seven"]),
    ("How many legs does a spider have?" + NUM, ["8", "eight"]),
    ("What color is the sky on a clear day?" + ONE, ["blue"]),
    ("What is the largest planet in our solar system?" + ONE, ["Jupiter"]),
    ("Which planet do humans live on?" + ONE, ["Earth"]),
    ("What do we call frozen water?" + ONE, ["ice"]),
    ("Which animal is known as the king of the jungle?" + ONE, ["lion"]),
    ("What color is a ripe banana?" + ONE, ["yellow"]),
    ("How many months are there in a year?" + NUM, ["12", "twelve"]),
    ("Who wrote the play Romeo and Juliet?", ["Shakespeare"]),
    ("Which gas do plants take in from the air to make food?", ["carbon dioxide", "co2"]),
    ("At how many degrees Celsius does water boil at sea level?" + NUM, ["100", "one hundred"]),
    ("How many continents are there on Earth?" + NUM, ["7", "seven"]),
    ("What is the chemical formula of water?", ["H2O"]),
    ("Which star is closest to the Earth?" + ONE, ["Sun"]),
    ("How many sides does a triangle have?" + NUM, ["3", "three"]),
    ("How many sides does a square have?" + NUM, ["4", "four"]),
    ("What color is grass?" + ONE, ["green"]),
    # spelling and words
    ("Spell the word dog letter by letter.", ["d o g"]),
    ("Spell the word cat letter by letter.", ["c a t"]),
    ("What is the plural of mouse?" + ONE, ["mice"]),
    ("What is the plural of child?" + ONE, ["children"]),
    ("What is the past tense of go?" + ONE, ["went"]),
    # common phrases
    ('Complete the phrase: "Once upon a ..."' + ONE, ["time"]),
    ('Complete the saying: "An apple a day keeps the ... away."' + ONE, ["doctor"]),
    ('Complete the saying: "Better late than ..."' + ONE, ["never"]),
    ('Complete the saying: "Actions speak louder than ..."' + ONE, ["words"]),
    # units
    ("How many centimeters are in one meter?" + NUM, ["100", "one hundred"]),
    ("How many minutes are in one hour?" + NUM, ["60", "sixty"]),
    ("How many grams are in one kilogram?" + NUM, ["1000", "1,000", "one thousand", "a thousand"]),
    ("How many seconds are in one minute?" + NUM, ["60", "sixty"]),
    ("How many hours are in one day?" + NUM, ["24", "twenty four", "twenty-four"]),
    ("How many days are in a leap year?" + NUM, ["366"]),
]

PERTURBATIONS, SIGMA = 8, 0.012


def perturbed_right(model: object, tok: object, items: list, seed: int) -> list[bool]:
    """Which ``items`` the model answers right with a random LoRA adapter (seed ``seed``) on top; the model
    is left without it."""
    import torch

    from tunesmith.config import load_config
    from tunesmith.eval import behaviour
    from tunesmith.models.lora import add_lora, randomize_b

    torch.manual_seed(seed)
    peft = randomize_b(add_lora(model, load_config(None, {"lora": {"dropout": 0.0}}).lora), SIGMA)
    peft.eval()
    right = behaviour.right(peft, tok, items)
    peft.unload()  # the base model, as it was
    return right


def make(model_name: str = "smollm2-135m") -> dict:
    """Ask ``model_name`` every candidate; the kept items, the dropped ones and how they were chosen."""
    from tunesmith.eval import behaviour
    from tunesmith.models.load import load_model

    model, tok, _ = load_model(model_name)
    candidates = [behaviour.Item(p, tuple(a)) for p, a in CANDIDATES]
    echoed = [it.prompt for it in candidates if behaviour.answered(it.prompt, it.answers)]
    assert not echoed, f"answers inside their own prompts: {echoed}"
    t0 = time.perf_counter()
    texts = behaviour.replies(model, tok, candidates)
    seconds = time.perf_counter() - t0
    kept, dropped = [], []
    for it, text in zip(candidates, texts, strict=True):
        entry = {"prompt": it.prompt, "answers": list(it.answers)}
        (kept if behaviour.answered(text, it.answers) else dropped).append({**entry, "reply": text})
    right = [behaviour.Item(e["prompt"], tuple(e["answers"])) for e in kept]
    held = [perturbed_right(model, tok, right, seed) for seed in range(PERTURBATIONS)]
    fragile = [
        {**e, "right_under_perturbations": sum(h[i] for h in held)}
        for i, e in enumerate(kept)
        if not all(h[i] for h in held)
    ]
    kept = [e for i, e in enumerate(kept) if all(h[i] for h in held)]
    return {
        "about": (
            f"Kept: the candidates of make_general_questions.py that {model_name} answers right, greedy, "
            f"{behaviour.MAX_NEW_TOKENS} new tokens, one user turn through its own chat template; the reply's "
            "questions dropped, then matched as whole words after lower-casing and turning non-alphanumerics "
            "into spaces (eval/behaviour.py); and still right under each of "
            f"{PERTURBATIONS} random LoRA perturbations (rank 16, B ~ N(0, {SIGMA}), seeds 0-{PERTURBATIONS - 1})."
        ),
        "model": model_name,
        "max_new_tokens": behaviour.MAX_NEW_TOKENS,
        "candidates": len(candidates),
        "generation_s": round(seconds, 1),
        "items": [{"prompt": e["prompt"], "answers": e["answers"]} for e in kept],
        "dropped": dropped,
        "fragile": fragile,
        "kept_replies": {e["prompt"]: e["reply"] for e in kept},
    }


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Filter the probe's candidate questions by a real model.")
    parser.add_argument("out", nargs="?", type=Path, default=Path(__file__).with_name("general_questions.json"))
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args(argv)
    data = make(args.model)
    args.out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(
        f"{args.out}: kept {len(data['items'])} of {data['candidates']} ({len(data['fragile'])} right but fragile; "
        f"{data['generation_s']} s of generation)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
