"""DPO benchmark: tunesmith against transformers + PEFT + TRL's DPOTrainer, same machine, same run.

Identical settings on both sides: the default model, the demo's preference pairs (each triage JSON against
the same JSON with one label wrong, `examples/support_triage_pairs`), LoRA r=16 / alpha 32 / dropout 0 on
every linear layer, batch 8 pairs (no accumulation), beta 0.1, lr 1e-4 cosine with 10% warmup, one epoch,
sigmoid loss, bf16 where the CPU supports it (TRL: use_cpu + bf16), no gradient checkpointing on either side.
Each side computes its reference the way it does by default: TRL with the adapter disabled at every step,
tunesmith once before the first step.

Every run is a fresh subprocess (so peak RSS is per run), runs are interleaved A/B/B/A. Reported: median pairs
per second over the training loop (tunesmith: the loop's wall time, including its one reference pass;
TRL: trainer.train()), median peak RSS, and the held-out preference accuracy of both adapters, computed by
the same code (tunesmith's eval, fp32).

    python benchmarks/dpo_vs_trl.py                    # 300 pairs, 3 repeats per side
    python benchmarks/dpo_vs_trl.py --repeats 1 --max-steps 10
    python benchmarks/dpo_vs_trl.py --smoke            # tiny random model, a few steps (used by the tests)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

from trl_common import benchmark_parser, child_result, interleaved, lora_config, peak_rss_mb, trl_cpu_args

HERE = Path(__file__).resolve().parent
PAIRS = HERE.parent / "src" / "tunesmith" / "examples" / "support_triage_pairs"
SETTINGS = {"max_len": 512, "r": 16, "alpha": 32, "batch": 8, "lr": 1e-4, "beta": 0.1, "warmup_ratio": 0.1, "seed": 42}


def _pairs(path: Path, limit: int | None = None) -> list:
    from tunesmith.data.formats import read_examples

    return read_examples(path).examples[:limit]


def child_tunesmith(model: str, train: Path, out: Path, max_steps: int | None) -> dict:
    from tunesmith.config import load_config
    from tunesmith.train.pipeline import run_training

    s = SETTINGS
    cfg = load_config(
        None,
        {
            "model": {"name": model},
            "data": {"train": str(train), "val_split": 0.0, "max_len": s["max_len"]},
            "lora": {"r": s["r"], "alpha": s["alpha"], "dropout": 0.0},
            "train": {
                "objective": "dpo",
                "beta": s["beta"],
                "dpo_nll": 0.0,  # plain sigmoid DPO, as TRL's default loss
                "epochs": 1,
                "batch_size": s["batch"],
                "micro_batch_size": s["batch"],
                "learning_rate": s["lr"],
                "warmup_ratio": s["warmup_ratio"],
                "min_lr_ratio": 0.0,
                "max_steps": max_steps,
                "seed": s["seed"],
            },
        },
    )
    t0 = time.perf_counter()
    result = run_training(cfg, out / "run", skip_check=True)
    seconds = time.perf_counter() - t0  # the references are computed before the loop: counted, as TRL's are
    pairs = min(result.summary.steps * s["batch"], len(_pairs(train)))  # one epoch: the last batch may be short
    return {"pairs": pairs, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "adapter": str(out / "run" / "adapter")}


def child_trl(model: str, train: Path, out: Path, max_steps: int | None) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from tunesmith.models.load import load_tokenizer, resolve

    s = SETTINGS
    rows = [
        {"prompt": c.as_dicts()[:-1], "chosen": c.as_dicts()[-1:], "rejected": [m.as_dict() for m in c.rejected]}
        for c in _pairs(train)
    ]
    total = max_steps or math.ceil(len(rows) / s["batch"])
    tok = load_tokenizer(model)
    hf = AutoModelForCausalLM.from_pretrained(resolve(model).path, dtype=torch.float32)
    config = DPOConfig(
        output_dir=str(out / "trl"),
        per_device_train_batch_size=s["batch"],
        gradient_accumulation_steps=1,
        learning_rate=s["lr"],
        lr_scheduler_type="cosine",
        warmup_steps=math.ceil(total * s["warmup_ratio"]),
        num_train_epochs=1,
        max_steps=max_steps or -1,
        max_length=s["max_len"],
        beta=s["beta"],
        **trl_cpu_args(s["seed"]),
    )
    peft_config = lora_config(s["r"], s["alpha"])
    trainer = DPOTrainer(
        model=hf, args=config, train_dataset=Dataset.from_list(rows), processing_class=tok, peft_config=peft_config
    )
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    rss = peak_rss_mb()
    trainer.model.save_pretrained(out / "trl-adapter")
    return {
        "pairs": min(total * s["batch"], len(rows)),
        "seconds": seconds,
        "peak_rss_mb": rss,
        "adapter": str(out / "trl-adapter"),
    }


def _preference_accuracy(base: str, adapter_dir: Path, test: Path) -> float:
    """Held-out preference accuracy of base + adapter, by tunesmith's eval code (fp32)."""
    from peft import PeftModel

    from tunesmith.eval.preference import log_prob_margins
    from tunesmith.models.load import load_model

    model, tok, _ = load_model(base)
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    margins = log_prob_margins(model, tok, _pairs(test))
    return sum(d > 0 for d in margins) / len(margins)


def run_child(args: argparse.Namespace) -> None:
    out = Path(args.out)
    child = child_trl if args.child == "trl" else child_tunesmith
    result = child(args.model, Path(args.train), out, args.max_steps)
    result["pairs_per_s"] = result["pairs"] / result["seconds"]
    result["preference_accuracy"] = _preference_accuracy(args.model, Path(result["adapter"]), Path(args.test))
    (out / "result.json").write_text(json.dumps(result))


def one_run(tool: str, model: str, train: Path, test: Path, max_steps: int | None) -> dict:
    cmd = [sys.executable, __file__, "--child", tool, "--model", model, "--train", str(train)]
    cmd += ["--test", str(test)] + (["--max-steps", str(max_steps)] if max_steps else [])
    return child_result(tool, cmd)


def compare(model: str, train: Path, test: Path, repeats: int, max_steps: int | None) -> dict[str, list[dict]]:
    return interleaved(
        repeats, lambda tool: one_run(tool, model, train, test, max_steps), lambda r: f"{r['pairs_per_s']:.2f} pairs/s"
    )


def summarise(runs: dict[str, list[dict]]) -> tuple[dict, str]:
    keys = ("pairs_per_s", "peak_rss_mb", "preference_accuracy")
    med = {tool: {k: statistics.median(r[k] for r in rs) for k in keys} for tool, rs in runs.items()}
    ts, trl = med["tunesmith"], med["trl"]
    table = [
        "| metric | tunesmith | TRL DPOTrainer | ratio |",
        "|---|---|---|---|",
        f"| pairs/s | {ts['pairs_per_s']:.2f} | {trl['pairs_per_s']:.2f} | "
        f"{ts['pairs_per_s'] / trl['pairs_per_s']:.2f}x |",
        f"| peak RSS (MB) | {ts['peak_rss_mb']:.0f} | {trl['peak_rss_mb']:.0f} | "
        f"{ts['peak_rss_mb'] / trl['peak_rss_mb']:.2f}x |",
        f"| held-out preference accuracy | {ts['preference_accuracy']:.1%} | {trl['preference_accuracy']:.1%} | |",
    ]
    return med, "\n".join(table)


def main() -> None:
    parser = benchmark_parser(__doc__, "--train", "--test")
    parser.add_argument("--max-steps", type=int)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return
    train, test = PAIRS / "train.jsonl", PAIRS / "test.jsonl"
    with tempfile.TemporaryDirectory() as tmp:
        model, repeats, max_steps = args.model, args.repeats, args.max_steps
        if args.smoke:
            sys.path.insert(0, str(HERE))
            from train_vs_trl import smoke_model

            model, repeats, max_steps = smoke_model(Path(tmp) / "tiny"), 1, 2
            small = Path(tmp) / "test.jsonl"
            small.write_text("".join(test.read_text().splitlines(keepends=True)[:8]))
            test = small
        runs = compare(model, train, test, repeats, max_steps)
    medians, table = summarise(runs)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"settings": SETTINGS, "medians": medians, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
