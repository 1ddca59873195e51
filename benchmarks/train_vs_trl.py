"""Training benchmark: tunesmith against transformers + PEFT + TRL's SFTTrainer, same machine, same run.

Identical settings on both sides: the default model, max_len 512, LoRA r=16 / alpha 32 / dropout 0 on every
linear layer, batch 8 examples (no accumulation), lr 1e-3 cosine with 10% warmup, one epoch, completion-only
loss (TRL: conversational prompt-completion data), bf16 where the CPU supports it (TRL: use_cpu + bf16),
gradient checkpointing the same on both sides (off unless --gradient-checkpointing on; TRL's own default is on).

Every run is a fresh subprocess (so peak RSS is per run), and runs are interleaved A/B/A/B. Reported per
dataset: median non-pad tokens/s over the training loop, median peak RSS, padding fraction, and the
validation loss after one epoch, computed for both adapters by the same code (tunesmith's `evaluate`, fp32).

    python benchmarks/train_vs_trl.py                 # full: demo data + long replies, 3 repeats
    python benchmarks/train_vs_trl.py --smoke         # tiny random model, a few steps (used by the tests)
    python benchmarks/train_vs_trl.py --compile-ab --only demo --max-steps 30   # tunesmith eager vs torch.compile
    python benchmarks/train_vs_trl.py --whole         # whole commands: `tunesmith train` with its defaults vs a
                                                      # TRL script, wall time and peak RSS (whole_command.py)
    python benchmarks/train_vs_trl.py --whole --first-run   # the same, tunesmith from an empty TUNESMITH_HOME

Every result records the machine: CPU model, AMX / AVX-512 BF16, and the measured fp32 / bf16 GEMM peaks.

tunesmith runs with its own defaults otherwise: packing, the frozen base in bf16, the chunked loss, and
`train.compile: auto` (on for these one-epoch runs of 38 steps; the warm-up counts in its tokens/s).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import whole_command
from trl_common import child_result, interleaved, lora_config, peak_rss_mb, trl_cpu_args

HERE = Path(__file__).resolve().parent
SETTINGS = {
    "max_len": 512,
    "r": 16,
    "alpha": 32,
    "batch": 8,
    "lr": 1e-3,
    "warmup_ratio": 0.1,
    "epochs": 1,
    # Set explicitly on both sides: TRL's SFTConfig turns it on by default, tunesmith leaves it off for LoRA.
    "gradient_checkpointing": False,
    "seed": 42,  # both sides (data order, LoRA initialisation); vary it to see the loss's seed-to-seed noise
}


def _val_loss(base: str, adapter_dir: Path, val_file: Path) -> float:
    """The same validation loss for both sides: fp32 base + the saved PEFT adapter, our evaluate()."""
    from peft import PeftModel

    from tunesmith.data.formats import read_examples
    from tunesmith.data.render import Renderer
    from tunesmith.models.load import load_model
    from tunesmith.train.validation import evaluate

    model, tok, _ = load_model(base)
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    rows, _ = Renderer(tok, max_len=SETTINGS["max_len"]).render_all(read_examples(val_file).examples)
    return evaluate(model, rows, 8, tok.pad_token_id, bf16=False)


def child_tunesmith(
    model: str, train: Path, val: Path, out: Path, max_steps: int | None, compile: bool | str = "auto"
) -> dict:
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
                "epochs": s["epochs"],
                "batch_size": s["batch"],
                "micro_batch_size": s["batch"],
                "learning_rate": s["lr"],
                "replay": 0.0,  # TRL trains on the rows alone: the same work on both sides
                "warmup_ratio": s["warmup_ratio"],
                "min_lr_ratio": 0.0,
                "max_steps": max_steps,
                "compile": compile,
                "gradient_checkpointing": s["gradient_checkpointing"],
                "seed": s["seed"],
            },
        },
    )
    result = run_training(cfg, out / "run", skip_check=True)
    rss = peak_rss_mb()
    steps = [json.loads(x) for x in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in steps if "loss" in x]
    # Steady state: the median step after the first quarter (torch.compile compiles during the first steps).
    steady = statistics.median(x["tokens_per_s"] for x in steps[len(steps) // 4 :])
    tokens = sum(x["tokens"] for x in steps)
    padded = sum(x["padded_tokens"] for x in steps)
    return {
        "tokens": tokens,
        "seconds": result.summary.loop_wall_s,
        "peak_rss_mb": rss,
        "padding_fraction": 1 - tokens / padded,
        "steady_tokens_per_s": steady,
        "adapter": str(out / "run" / "adapter"),
    }


def child_trl(model: str, train: Path, val: Path, out: Path, max_steps: int | None) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from tunesmith.data.formats import read_examples
    from tunesmith.models.load import load_tokenizer, resolve

    s = SETTINGS
    rows = [{"prompt": c.as_dicts()[:-1], "completion": c.as_dicts()[-1:]} for c in read_examples(train).examples]
    tok = load_tokenizer(model)
    hf = AutoModelForCausalLM.from_pretrained(resolve(model).path, dtype=torch.float32)
    config = SFTConfig(
        output_dir=str(out / "trl"),
        per_device_train_batch_size=s["batch"],
        gradient_accumulation_steps=1,
        learning_rate=s["lr"],
        lr_scheduler_type="cosine",
        # the same whole number of warmup steps as tunesmith's ceil(total x ratio)
        warmup_steps=math.ceil((max_steps or math.ceil(len(rows) / s["batch"]) * s["epochs"]) * s["warmup_ratio"]),
        num_train_epochs=s["epochs"],
        max_steps=max_steps or -1,
        max_length=s["max_len"],
        packing=False,
        completion_only_loss=True,
        gradient_checkpointing=s["gradient_checkpointing"],
        **trl_cpu_args(s["seed"]),
    )
    peft_config = lora_config(s["r"], s["alpha"])
    trainer = SFTTrainer(
        model=hf, args=config, train_dataset=Dataset.from_list(rows), processing_class=tok, peft_config=peft_config
    )
    counts = {"tokens": 0, "padded": 0}
    collate = trainer.data_collator

    def counting_collator(features):  # count real vs padded tokens as TRL actually batches them
        batch = collate(features)
        counts["tokens"] += (
            int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        )
        counts["padded"] += batch["input_ids"].numel()
        return batch

    trainer.data_collator = counting_collator
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    rss = peak_rss_mb()
    trainer.model.save_pretrained(out / "trl-adapter")
    return {
        "tokens": counts["tokens"],
        "seconds": seconds,
        "peak_rss_mb": rss,
        "padding_fraction": 1 - counts["tokens"] / max(1, counts["padded"]),
        "adapter": str(out / "trl-adapter"),
    }


def run_child(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if args.child == "trl-whole":  # a user's script: train and save, nothing measured inside
        SETTINGS["max_len"] = args.max_len
        child_trl(args.model, Path(args.train), Path(args.val), out, None)
        return
    paths = (args.model, Path(args.train), Path(args.val), out, args.max_steps)
    result = child_trl(*paths) if args.child == "trl" else child_tunesmith(*paths, compile=COMPILE[args.child])
    result["tokens_per_s"] = result["tokens"] / result["seconds"]
    result["val_loss"] = _val_loss(args.model, Path(result["adapter"]), Path(args.val))
    (out / "result.json").write_text(json.dumps(result))


def one_run(tool: str, model: str, train: Path, val: Path, max_steps: int | None) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--gradient-checkpointing",
        "on" if SETTINGS["gradient_checkpointing"] else "off",
        "--seed",
        str(SETTINGS["seed"]),
        "--child",
        tool,
        "--model",
        model,
        "--train",
        str(train),
        "--val",
        str(val),
    ] + (["--max-steps", str(max_steps)] if max_steps else [])
    return child_result(tool, cmd)


def compare(
    model: str,
    datasets: dict[str, tuple[Path, Path]],
    repeats: int,
    max_steps: int | None,
    tools: tuple[str, str] = ("tunesmith", "trl"),
) -> dict:
    results: dict[str, dict[str, list[dict]]] = {}
    for name, (train, val) in datasets.items():
        results[name] = interleaved(
            repeats,
            lambda tool, train=train, val=val: one_run(tool, model, train, val, max_steps),
            lambda r: f"{r['tokens_per_s']:.0f} tok/s",
            tools,
            name=f"{name} ",
        )
    return results


LABELS = {
    "tunesmith": "tunesmith",
    "trl": "TRL SFTTrainer",
    "tunesmith-eager": "tunesmith, eager",
    "tunesmith+compile": "tunesmith + torch.compile",
}
COMPILE = {"tunesmith": "auto", "tunesmith-eager": False, "tunesmith+compile": True}  # "auto": its default


def _whole_run(tool: str, model: str, train: Path, max_len: int, first_run: bool = False) -> dict:
    """One whole command (tunesmith train, or the TRL script a user would write), timed from outside.
    ``first_run``: tunesmith starts from an empty TUNESMITH_HOME, as on a new machine (it exports the embedded
    model, measures the GEMM peak and the probe's base figure); TRL reads the model folder already on disk."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        env = None
        if tool == "tunesmith":
            cmd = whole_command.tunesmith_command(model, train, out)
            env = {**os.environ, "TUNESMITH_HOME": str(Path(tmp) / "home")} if first_run else None
        else:
            cmd = whole_command.trl_command(Path(__file__), model, train, out, max_len)
        return whole_command.timed(cmd, env=env)


def compare_whole(
    model: str, datasets: dict[str, Path], repeats: int, max_len: int, first_run: bool = False
) -> tuple[dict, str]:
    """Both whole commands per data set, interleaved A/B then B/A; medians of wall time and peak RSS."""
    summary: dict = {}
    table = [
        "| data | metric | tunesmith train (defaults, 1 epoch) | TRL SFTTrainer script | ratio |",
        "|---|---|---|---|---|",
    ]
    for name, train in datasets.items():
        runs = interleaved(
            repeats,
            lambda tool, train=train: _whole_run(tool, model, train, max_len, first_run),
            lambda r: f"{r['wall_s']:.1f} s, {r['peak_rss_mb']:.0f} MB",
            name=f"{name} ",
        )
        med = {t: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "peak_rss_mb")} for t, rs in runs.items()}
        summary[name] = {t: {**m, "runs": runs[t]} for t, m in med.items()}  # every run, in the order run
        ts, trl = med["tunesmith"], med["trl"]
        table.append(
            f"| {name} | wall time (s) | {ts['wall_s']:.1f} | {trl['wall_s']:.1f} | "
            f"**{trl['wall_s'] / ts['wall_s']:.2f}x faster** |"
        )
        table.append(
            f"| {name} | peak RSS (MB) | {ts['peak_rss_mb']:.0f} | {trl['peak_rss_mb']:.0f} | "
            f"{ts['peak_rss_mb'] / trl['peak_rss_mb']:.2f}x |"
        )
    return summary, "\n".join(table)


def summarise(results: dict) -> tuple[dict, str]:
    summary: dict = {}
    table: list[str] = []
    for name, runs in results.items():
        a, b = list(runs)
        if not table:
            table = [f"| data | metric | {LABELS[a]} | {LABELS[b]} | ratio |", "|---|---|---|---|---|"]
        keys = ["tokens_per_s", "peak_rss_mb", "padding_fraction", "val_loss"]
        keys += ["steady_tokens_per_s"] if all("steady_tokens_per_s" in r for rs in runs.values() for r in rs) else []
        med = {tool: {k: statistics.median(r[k] for r in rs) for k in keys} for tool, rs in runs.items()}
        summary[name] = med
        ts, trl = med[a], med[b]
        table.append(
            f"| {name} | non-pad tokens/s | {ts['tokens_per_s']:.0f} | {trl['tokens_per_s']:.0f} | "
            f"{ts['tokens_per_s'] / trl['tokens_per_s']:.2f}x |"
        )
        table.append(
            f"| {name} | peak RSS (MB) | {ts['peak_rss_mb']:.0f} | {trl['peak_rss_mb']:.0f} | "
            f"{ts['peak_rss_mb'] / trl['peak_rss_mb']:.2f}x |"
        )
        table.append(f"| {name} | padding fraction | {ts['padding_fraction']:.1%} | {trl['padding_fraction']:.1%} | |")
        if "steady_tokens_per_s" in ts:
            table.append(
                f"| {name} | steady-state tokens/s (median step, first quarter skipped) | "
                f"{ts['steady_tokens_per_s']:.0f} | {trl['steady_tokens_per_s']:.0f} | "
                f"{ts['steady_tokens_per_s'] / trl['steady_tokens_per_s']:.2f}x |"
            )
        table.append(f"| {name} | val loss after 1 epoch | {ts['val_loss']:.4f} | {trl['val_loss']:.4f} | |")
    return summary, "\n".join(table)


def smoke_model(tmp: Path) -> str:
    """A tiny random Llama with the real SmolLM2 tokenizer, for the smoke mode."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunesmith.models.load import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(tmp)
    tok.save_pretrained(tmp)
    return str(tmp)


def main_whole(args: argparse.Namespace, demo: Path, where: dict) -> None:
    """--whole: the short-row set (the first 160 demo rows) and the long-reply set, whole commands."""
    with tempfile.TemporaryDirectory() as tmp:
        sets = {
            "160 short rows (demo triage)": whole_command.subset(demo / "train.jsonl", 160, Path(tmp) / "short.jsonl"),
            "long replies (300 rows)": HERE / "data" / "long_replies_train.jsonl",
        }
        if args.only:
            sets = dict([list(sets.items())[0 if args.only == "demo" else 1]])
        model, repeats = args.model, args.repeats
        if args.smoke:  # the tiny model on 16 rows: the commands work, nothing is measured
            small = whole_command.subset(demo / "train.jsonl", 16, Path(tmp) / "smoke.jsonl")
            model, repeats, sets = smoke_model(Path(tmp) / "smoke"), 1, {"16 rows (smoke)": small}
        summary, table = compare_whole(model, sets, repeats, args.max_len, args.first_run)
    print(table)
    if args.json:
        mode = "whole, first run" if args.first_run else "whole"
        record = {"date": time.strftime("%Y-%m-%d"), "mode": mode, "machine": where, "results": summary}
        args.json.write_text(json.dumps(record, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="Write the medians here.")
    parser.add_argument("--only", choices=["demo", "long"], help="Run one data set instead of both.")
    parser.add_argument(
        "--gradient-checkpointing",
        choices=["on", "off"],
        default="off",
        help="The same on both sides (default off, tunesmith's LoRA default; TRL's own default is on).",
    )
    parser.add_argument(
        "--compile-ab", action="store_true", help="Compare tunesmith with and without torch.compile instead of TRL."
    )
    parser.add_argument("--whole", action="store_true", help="Time the whole commands (see whole_command.py).")
    parser.add_argument(
        "--first-run",
        action="store_true",
        help="In --whole: each tunesmith command starts from an empty TUNESMITH_HOME, as a new user's first does.",
    )
    parser.add_argument("--max-len", type=int, default=256, help="TRL's max_length in --whole (default 256).")
    parser.add_argument("--child", choices=[*LABELS, "trl-whole"], help=argparse.SUPPRESS)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--train", help=argparse.SUPPRESS)
    parser.add_argument("--val", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--max-steps", type=int, help="Stop each run after this many steps (default: one epoch).")
    parser.add_argument("--seed", type=int, default=42, help="The seed of both sides (default 42).")
    args = parser.parse_args()
    SETTINGS["gradient_checkpointing"] = args.gradient_checkpointing == "on"
    SETTINGS["seed"] = args.seed
    if args.child:
        return run_child(args)
    from tunesmith.demo import dataset_path

    demo = dataset_path()
    datasets = {
        "demo (triage JSON)": (demo / "train.jsonl", demo / "test.jsonl"),
        "long replies": (HERE / "data" / "long_replies_train.jsonl", HERE / "data" / "long_replies_test.jsonl"),
    }
    if args.only:
        datasets = dict([list(datasets.items())[0 if args.only == "demo" else 1]])
    where = whole_command.machine_record()
    print(f"machine: {whole_command.describe(where)}", file=sys.stderr)
    if args.whole:
        return main_whole(args, demo, where)
    with tempfile.TemporaryDirectory() as tmp:
        model, repeats, max_steps = args.model, args.repeats, args.max_steps
        if args.smoke:
            model, repeats, max_steps = smoke_model(Path(tmp)), 1, 3
            datasets = dict(list(datasets.items())[:1])
        tools = ("tunesmith-eager", "tunesmith+compile") if args.compile_ab else ("tunesmith", "trl")
        summary, table = summarise(compare(model, datasets, repeats, max_steps, tools))
    print(table)
    if args.json:
        record = {"date": time.strftime("%Y-%m-%d"), "machine": where, "tools": tools, "settings": SETTINGS}
        record["results"] = summary
        args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
