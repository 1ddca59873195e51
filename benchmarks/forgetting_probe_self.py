"""Both forgetting probes on a real model against itself: the drop must be 0, and this is what they cost.

    python benchmarks/forgetting_probe_self.py [--model smollm2-135m|gemma3-270m|FOLDER]

Loads the model once, takes each probe's reading twice (as `tunesmith eval` does for base and tuned), and
prints the comparison and the seconds each reading took (perplexity and behavioural questions separately).
"""

from __future__ import annotations

import argparse
import json
import time

from tunesmith.eval import behaviour, forgetting
from tunesmith.models.load import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()
    model, tok, _ = load_model(args.model)
    items = behaviour.load_items()
    readings, seconds = [], []
    for _ in range(2):
        t0 = time.perf_counter()
        perplexity, tokens = forgetting.text_perplexity(model, tok, forgetting.general_text())
        t1 = time.perf_counter()
        right = behaviour.right(model, tok, items)
        t2 = time.perf_counter()
        readings.append(forgetting.Reading(perplexity, tokens, right))
        seconds.append({"perplexity_s": round(t1 - t0, 1), "behaviour_s": round(t2 - t1, 1)})
    result = forgetting.compare(*readings, items=items).as_dict()
    print(json.dumps({"model": args.model, "forgetting": result, "seconds": seconds}, indent=1))


if __name__ == "__main__":
    main()
