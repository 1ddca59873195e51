"""The embedded models' answers to the everyday prompts, shipped so that a first run need not generate them.

``python -m tunesmith.examples.make_base_answers [ALIAS ...]`` (default: every embedded model) loads each model
as a run does, asks it ``general_chat_prompts.json`` through ``chat_replay.base_answers`` (the code every run
uses, greedy, fp32) and writes the result to ``base_answers/<cache name>.json`` beside this file. The file's name
is the run cache's key: it hashes the exported weights, the chat template, the prompts and the answer length,
so after any change to one of them a run no longer finds the file and generates its own answers, as before.

Why: chat replay and the KL-to-base default read these answers, and generating them took 106.8 s of a new
user's first 311 s run on a 2-vCPU EPYC (the short demo set; BENCHMARKS.md, issue 22). Later runs read the
per-machine cache either way.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def write(alias: str) -> Path:
    from tunesmith.models.load import load_model
    from tunesmith.train import chat_replay
    from tunesmith.train.rundir import source_hash

    model, tokenizer, source = load_model(alias)
    key = source_hash(source)
    chat_replay.base_answers(model, tokenizer, key, reuse=False)  # writes the cache entry
    cache = chat_replay.cache_path(key, tokenizer, chat_replay.prompts())
    shipped = HERE / chat_replay.SHIPPED_DIR / cache.name
    shipped.parent.mkdir(exist_ok=True)
    shipped.write_bytes(cache.read_bytes())
    return shipped


def main(argv: list[str]) -> None:
    from tunesmith.models.defaults import EMBEDDED

    for alias in argv or list(EMBEDDED):
        print(f"{alias}: {write(alias)}")


if __name__ == "__main__":
    main(sys.argv[1:])
