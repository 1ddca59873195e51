"""RFT benchmark: tunesmith's GRPO against transformers + PEFT + TRL's GRPOTrainer, same machine, same run.

Identical settings on both sides: the model, the RFT example's triage prompts
(`examples/support_triage_rft/train.jsonl`), K completions per prompt, 4 prompts per optimizer step (TRL:
per_device_train_batch_size = 4 x K, num_generations K, one generation per step), completions of at most
``max_completion`` tokens at temperature 1, LoRA r=16 / alpha 32 / dropout 0 on every linear layer, lr 1e-4,
no KL term (beta 0, TRL's default), TRL's default loss ("dapo", which tunesmith's matches: tests/test_rft.py),
bf16 where the CPU supports it, no validation. The reward is the same on both sides: 1 when the completion
names the email's product (tunesmith: a string_check ilike grader; TRL: the same test as a Python function;
the base model sometimes does, so the start probe lets it train); the smoke mode's random model never does, so
there it is 1 when the completion holds the letter "q".

Every result records the machine (CPU model, AMX / AVX-512 BF16, the measured GEMM peaks). Every run is a
fresh subprocess (so peak RSS is per run), runs are interleaved A/B/B/A. Reported: median
optimizer steps per second over the training loop (tunesmith: the loop's wall time, its start probe excluded;
TRL: trainer.train()), split into sampling (generation), grading and training (everything else: log-probs,
loss, backward, optimizer), and median peak RSS.

    python benchmarks/grpo_vs_trl.py                    # 8 steps, K 4, 64 tokens, 3 repeats per side
    python benchmarks/grpo_vs_trl.py --repeats 1 --steps 4 --k 4 --max-completion 32
    python benchmarks/grpo_vs_trl.py --smoke            # tiny random model, 2 steps
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import whole_command
from trl_common import benchmark_parser, child_result, interleaved, lora_config, peak_rss_mb, trl_cpu_args

HERE = Path(__file__).resolve().parent
PROMPTS = HERE.parent / "src" / "tunesmith" / "examples" / "support_triage_rft" / "train.jsonl"
SETTINGS = {"prompts_per_step": 4, "r": 16, "alpha": 32, "lr": 1e-4, "temperature": 1.0, "seed": 42}
GRADER = {
    "type": "string_check",
    "name": "names_the_product",
    "input": "{{sample.output_text}}",
    "reference": "{{item.product}}",
    "operation": "ilike",
}
SMOKE_NEEDLE = "q"  # a random model's completions hold it sometimes: rewards vary, so the probe lets it train


def _rows(path: Path, n: int) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()[:n]]


def child_tunesmith(
    model: str, data: Path, out: Path, steps: int, k: int, max_completion: int, needle: str | None
) -> dict:
    from tunesmith.config import load_config
    from tunesmith.train.pipeline import run_training

    s = SETTINGS
    grader = out / "grader.json"
    grader.write_text(json.dumps(GRADER | ({"reference": needle} if needle else {})))
    cfg = load_config(
        None,
        {
            "model": {"name": model},
            "data": {"train": str(data), "val_split": 0.0},
            "lora": {"r": s["r"], "alpha": s["alpha"], "dropout": 0.0},
            "train": {
                "objective": "rft",
                "grader": str(grader),
                "generations": k,
                "temperature": s["temperature"],
                "max_completion_len": max_completion,
                "epochs": 1,
                "batch_size": s["prompts_per_step"],
                "micro_batch_size": s["prompts_per_step"] * k,  # one forward per step, as TRL's
                "learning_rate": s["lr"],
                "max_steps": steps,
                "seed": s["seed"],
                "compile": False,
            },
        },
    )
    result = run_training(cfg, out / "run")
    lines = [json.loads(x) for x in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    steps_done = [x for x in lines if "sample_s" in x]
    sampling = sum(x["sample_s"] for x in steps_done)
    grading = sum(x["grade_s"] for x in steps_done)
    seconds = result.summary.loop_wall_s
    return {
        "steps": len(steps_done),
        "seconds": seconds,
        "sampling_s": sampling,
        "grading_s": grading,
        "training_s": seconds - sampling - grading,
        "reward_mean": statistics.mean(x["reward_mean"] for x in steps_done),
        "peak_rss_mb": peak_rss_mb(),
    }


def child_trl(model: str, data: Path, out: Path, steps: int, k: int, max_completion: int, needle: str | None) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from tunesmith.models.load import load_tokenizer, resolve

    s = SETTINGS
    rows = [{"prompt": r["messages"], "product": r["product"]} for r in _rows(data, 10_000)]

    def names_the_product(completions: list, product: list, **_: object) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [float((needle or p).lower() in t.lower()) for t, p in zip(texts, product, strict=True)]

    tok = load_tokenizer(model)
    hf = AutoModelForCausalLM.from_pretrained(resolve(model).path, dtype=torch.float32)
    config = GRPOConfig(
        output_dir=str(out / "trl"),
        per_device_train_batch_size=s["prompts_per_step"] * k,
        num_generations=k,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        max_completion_length=max_completion,
        temperature=s["temperature"],
        learning_rate=s["lr"],
        max_steps=steps,
        beta=0.0,
        gradient_checkpointing=False,
        **trl_cpu_args(s["seed"]),
    )
    trainer = GRPOTrainer(
        model=hf,
        reward_funcs=names_the_product,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        peft_config=lora_config(s["r"], s["alpha"]),
    )
    timers = {"_generate": 0.0, "_calculate_rewards": 0.0}
    for name in timers:  # time TRL's own sampling and grading, as tunesmith's metrics split its step
        original = getattr(trainer, name)

        def timed(*a: object, _f=original, _n=name, **kw: object) -> object:
            t0 = time.perf_counter()
            try:
                return _f(*a, **kw)
            finally:
                timers[_n] += time.perf_counter() - t0

        setattr(trainer, name, timed)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    rewards = [x["reward"] for x in trainer.state.log_history if "reward" in x]
    return {
        "steps": trainer.state.global_step,
        "seconds": seconds,
        "sampling_s": timers["_generate"],
        "grading_s": timers["_calculate_rewards"],
        "training_s": seconds - timers["_generate"] - timers["_calculate_rewards"],
        "reward_mean": statistics.mean(rewards) if rewards else float("nan"),
        "peak_rss_mb": peak_rss_mb(),
    }


def run_child(args: argparse.Namespace) -> None:
    out = Path(args.out)
    child = child_trl if args.child == "trl" else child_tunesmith
    result = child(args.model, Path(args.data), out, args.steps, args.k, args.max_completion, args.needle)
    result["steps_per_s"] = result["steps"] / result["seconds"]
    (out / "result.json").write_text(json.dumps(result))


def one_run(tool: str, args: argparse.Namespace, model: str, data: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", tool, "--model", model, "--data", str(data)]
    cmd += ["--steps", str(args.steps), "--k", str(args.k), "--max-completion", str(args.max_completion)]
    cmd += ["--needle", args.needle] if args.needle else []
    return child_result(tool, cmd)


KEYS = ("steps_per_s", "sampling_s", "grading_s", "training_s", "peak_rss_mb", "reward_mean")


def summarise(runs: dict[str, list[dict]]) -> tuple[dict, str]:
    med = {tool: {k: statistics.median(r[k] for r in rs) for k in KEYS} for tool, rs in runs.items()}
    ts, trl = med["tunesmith"], med["trl"]
    steps = {tool: rs[0]["steps"] for tool, rs in runs.items()}

    def row(name: str, key: str, fmt: str, per_step: bool = False) -> str:
        a, b = ts[key], trl[key]
        if per_step:
            a, b = a / steps["tunesmith"], b / steps["trl"]
        return f"| {name} | {a:{fmt}} | {b:{fmt}} | {a / b:.2f}x |" if b else f"| {name} | {a:{fmt}} | {b:{fmt}} | |"

    table = [
        "| metric (median) | tunesmith | TRL GRPOTrainer | ratio |",
        "|---|---|---|---|",
        row("steps/s", "steps_per_s", ".3f"),
        row("sampling s/step", "sampling_s", ".2f", per_step=True),
        row("grading s/step", "grading_s", ".3f", per_step=True),
        row("training s/step (log-probs, loss, backward, update)", "training_s", ".2f", per_step=True),
        row("peak RSS (MB)", "peak_rss_mb", ".0f"),
        f"| mean reward over the run | {ts['reward_mean']:.3f} | {trl['reward_mean']:.3f} | |",
    ]
    return med, "\n".join(table)


def main() -> None:
    parser = benchmark_parser(__doc__, "--data", "--needle")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-completion", type=int, default=64)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return
    where = whole_command.machine_record()
    print(f"machine: {whole_command.describe(where)}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if args.smoke:
            sys.path.insert(0, str(HERE))
            from train_vs_trl import smoke_model

            model, args.repeats, args.steps, args.max_completion = smoke_model(Path(tmp) / "tiny"), 1, 2, 8
            args.needle = SMOKE_NEEDLE
        data = Path(tmp) / "prompts.jsonl"  # exactly the prompts the steps use, on both sides
        n = args.steps * SETTINGS["prompts_per_step"]
        data.write_text("".join(json.dumps(r) + "\n" for r in _rows(PROMPTS, n)))
        runs = interleaved(
            args.repeats, lambda tool: one_run(tool, args, model, data), lambda r: f"{r['steps_per_s']:.3f} steps/s"
        )
    medians, table = summarise(runs)
    print(table)
    if args.json:
        settings = SETTINGS | {"k": args.k, "steps": args.steps, "max_completion": args.max_completion, "model": model}
        record = {"date": time.strftime("%Y-%m-%d"), "machine": where, "settings": settings}
        args.json.write_text(json.dumps(record | {"medians": medians, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
