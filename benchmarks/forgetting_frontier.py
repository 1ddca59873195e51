"""The forgetting frontier: task quality against forgetting, over the settings that trade one for the other.

Each configuration trains a LoRA run with tunesmith's own pipeline (the demo's defaults, one setting changed),
then measures
* task quality on the held-out rows: the demo task (support emails -> triage JSON): mean per-field accuracy
  and stop rate of greedy replies, as `make demo` scores them; the long-replies task
  (benchmarks/data/long_replies_*.jsonl): the mean per-token loss of the reference replies (lower is better);
* forgetting: the relative change of general-English perplexity (eval/forgetting.py, the check `tunesmith
  eval` runs, threshold +10%), base against tuned.
Every run also logs the probe during training (metrics.jsonl), so its trajectory is recorded too.

    python benchmarks/forgetting_frontier.py --grid quick                 # two short runs, a first look
    python benchmarks/forgetting_frontier.py --grid lr                    # lr 1e-3 / 5e-4 / 2e-4 at r 16
    python benchmarks/forgetting_frontier.py --grid full --only lr5e-4-replay0.2   # one configuration
    python benchmarks/forgetting_frontier.py --plot-only                  # redraw the plot from the JSON

Results accumulate in benchmarks/results/forgetting_frontier.json (one entry per task and configuration; a
configuration already measured is skipped unless --again), and the plot goes next to it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # whole_command (the machine record), also when imported by a test
RESULTS = HERE / "results"
THRESHOLD = 0.10  # the forgetting check's default (eval/forgetting.py DEFAULT_THRESHOLD)
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]

# name -> the settings it changes from tunesmith's defaults (train.* and lora.* config fields); replay is given
# wherever it matters, so that a configuration means the same whatever the default.
GRIDS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "lr1e-3": {"train": {"learning_rate": 1e-3, "replay": 0.0}},
        "lr2e-4": {"train": {"learning_rate": 2e-4, "replay": 0.0}},
    },
    "lr": {
        "lr1e-3": {"train": {"learning_rate": 1e-3, "replay": 0.0}},
        "lr5e-4": {"train": {"learning_rate": 5e-4, "replay": 0.0}},
        "lr2e-4": {"train": {"learning_rate": 2e-4, "replay": 0.0}},
    },
}
GRIDS["full"] = {
    **GRIDS["lr"],
    "default": {},  # tunesmith's defaults as they are: what `make demo` trains
    "lr1e-3-replay0.05": {"train": {"learning_rate": 1e-3, "replay": 0.05, "replay_source": "text"}},
    "lr1e-3-replay0.1": {"train": {"learning_rate": 1e-3, "replay": 0.1, "replay_source": "text"}},
    "lr1e-3-replay0.2": {"train": {"learning_rate": 1e-3, "replay": 0.2, "replay_source": "text"}},
    "lr5e-4-replay0.2": {"train": {"learning_rate": 5e-4, "replay": 0.2, "replay_source": "text"}},
    "lr2e-4-replay0.2": {"train": {"learning_rate": 2e-4, "replay": 0.2, "replay_source": "text"}},
    "lr1e-3-attention": {"train": {"learning_rate": 1e-3, "replay": 0.0}, "lora": {"target_modules": ATTENTION}},
    "lr1e-3-r8-a16": {"train": {"learning_rate": 1e-3, "replay": 0.0}, "lora": {"r": 8, "alpha": 16}},
    "lr1e-3-r16-a16": {"train": {"learning_rate": 1e-3, "replay": 0.0}, "lora": {"r": 16, "alpha": 16}},
    "lr2e-4-5ep": {"train": {"learning_rate": 2e-4, "epochs": 5, "replay": 0.0}},
    "lr1e-3-replay0.4": {"train": {"learning_rate": 1e-3, "replay": 0.4, "replay_source": "text"}},
    "lr5e-4-replay0.4": {"train": {"learning_rate": 5e-4, "replay": 0.4, "replay_source": "text"}},
    "lr1e-3-budget0.1": {"train": {"learning_rate": 1e-3, "forgetting_budget": 0.1, "replay": 0.0}},
    "lr5e-4-budget0.1": {"train": {"learning_rate": 5e-4, "forgetting_budget": 0.1, "replay": 0.0}},
    "lr1e-3-kl0.5": {"train": {"learning_rate": 1e-3, "kl_to_base": 0.5, "replay": 0.0}},
    # chat replay (train/chat_replay.py): the base model's own answers to everyday prompts
    "lr1e-3-chat0.05": {"train": {"learning_rate": 1e-3, "replay": 0.05, "replay_source": "chat"}},
    "lr1e-3-chat0.1": {"train": {"learning_rate": 1e-3, "replay": 0.1, "replay_source": "chat"}},
    "lr1e-3-chat0.2": {"train": {"learning_rate": 1e-3, "replay": 0.2, "replay_source": "chat"}},
    "lr1e-3-both0.2": {"train": {"learning_rate": 1e-3, "replay": 0.2, "replay_source": "both"}},
    "lr1e-3-chat0.1-kl0.5": {
        "train": {"learning_rate": 1e-3, "replay": 0.1, "replay_source": "chat", "kl_to_base": 0.5}
    },
    "lr1e-3-chat0.1-klchat1": {
        "train": {"learning_rate": 1e-3, "replay": 0.1, "replay_source": "chat", "kl_to_base": 1.0, "kl_source": "chat"}
    },
    "lr1e-3-klchat1": {"train": {"learning_rate": 1e-3, "replay": 0.0, "kl_to_base": 1.0, "kl_source": "chat"}},
    "lr1e-3-klchat0.5": {"train": {"learning_rate": 1e-3, "replay": 0.0, "kl_to_base": 0.5, "kl_source": "chat"}},
    "lr1e-3-klchat2": {"train": {"learning_rate": 1e-3, "replay": 0.0, "kl_to_base": 2.0, "kl_source": "chat"}},
    "lr1e-3-klchat4": {"train": {"learning_rate": 1e-3, "replay": 0.0, "kl_to_base": 4.0, "kl_source": "chat"}},
    "lr1e-3-klchat8": {"train": {"learning_rate": 1e-3, "replay": 0.0, "kl_to_base": 8.0, "kl_source": "chat"}},
    "lr1e-3-klchat2-4ep": {
        "train": {"learning_rate": 1e-3, "epochs": 4, "replay": 0.0, "kl_to_base": 2.0, "kl_source": "chat"}
    },
    "lr1e-3-klchat4-4ep": {
        "train": {"learning_rate": 1e-3, "epochs": 4, "replay": 0.0, "kl_to_base": 4.0, "kl_source": "chat"}
    },
    "lr1e-3-klchat4-rows4": {
        "train": {"learning_rate": 1e-3, "replay": 0.0, "kl_to_base": 4.0, "kl_source": "chat", "kl_rows": 4}
    },
    "lr1e-3-klchat1-4ep": {
        "train": {"learning_rate": 1e-3, "epochs": 4, "replay": 0.0, "kl_to_base": 1.0, "kl_source": "chat"}
    },
    "lr1e-3-chat0.1-kl0.5-4ep": {
        "train": {"learning_rate": 1e-3, "epochs": 4, "replay": 0.1, "replay_source": "chat", "kl_to_base": 0.5}
    },
    "lr1e-3-attention-chat0.1": {
        "train": {"learning_rate": 1e-3, "replay": 0.1, "replay_source": "chat"},
        "lora": {"target_modules": ATTENTION},
    },
    "lr1e-3-attention-both0.2": {
        "train": {"learning_rate": 1e-3, "replay": 0.2, "replay_source": "both"},
        "lora": {"target_modules": ATTENTION},
    },
}
# The KL term became a default (2.0 on the base model's answers, with a fourth epoch), and its source's default
# became chat: every named configuration keeps what it measured, no KL term unless it names one, on prose
# where it named no source. Only "default" follows tunesmith's defaults.
for _grid in GRIDS.values():
    for _name, _change in _grid.items():
        if _name != "default":
            _train = _change.setdefault("train", {})
            _train.setdefault("kl_to_base", 0.0)
            if _train["kl_to_base"]:
                _train.setdefault("kl_source", "text")


# ---- the tasks -------------------------------------------------------------------------------------------


def demo_files() -> tuple[Path, Path]:
    from tunesmith.demo import dataset_path

    return dataset_path() / "train.jsonl", dataset_path() / "test.jsonl"


def long_files() -> tuple[Path, Path]:
    return HERE / "data" / "long_replies_train.jsonl", HERE / "data" / "long_replies_test.jsonl"


def persona_files() -> tuple[Path, Path]:
    """The brand-voice support set of issue 23 (examples/make_changed_facts.py: a fixed greeting and sign-off,
    product answers), 200 training rows, written once under benchmarks/data/persona."""
    from tunesmith.examples.make_changed_facts import write_changed_facts

    out = HERE / "data" / "persona"
    if not (out / "train.jsonl").is_file():
        write_changed_facts(out)
    return out / "train.jsonl", out / "test.jsonl"


def score_persona(model: Any, tok: Any, test: Path, rows: int | None) -> dict[str, Any]:
    """The voice (greeting and sign-off) and stop rate of greedy replies, and the test loss (the quality)."""
    from tunesmith.data.formats import read_examples
    from tunesmith.examples.make_changed_facts import GREETING, SIGN_OFF
    from tunesmith.generate import generate

    convs = read_examples(test).examples[:rows]
    done = generate(model, tok, [[m.as_dict() for m in c.messages[:-1]] for c in convs], max_new_tokens=96)
    voice = sum(GREETING in d.text and SIGN_OFF in d.text for d in done) / len(done)
    stops = sum(d.finish_reason == "stop" for d in done) / len(done)
    return {**score_loss(model, tok, test, rows), "voice": voice, "stop_rate": stops}


def score_demo(model: Any, tok: Any, test: Path, rows: int | None) -> dict[str, Any]:
    """The demo's scores: greedy replies to the held-out emails, as `make demo` generates and scores them."""
    from tunesmith.data.formats import read_examples
    from tunesmith.demo import score
    from tunesmith.generate import generate

    convs = read_examples(test).examples[:rows]
    prompts = [[m.as_dict() for m in c.messages[:-1]] for c in convs]
    refs = [c.messages[-1].content for c in convs]
    s = score(generate(model, tok, prompts, max_new_tokens=96, batch_size=20), refs)
    return {
        "quality": s.mean_field,
        "field_accuracy": s.mean_field,
        "fields": s.fields,
        "stop_rate": s.stop_rate,
        "json": s.json_valid,
    }


def score_loss(model: Any, tok: Any, test: Path, rows: int | None) -> dict[str, Any]:
    """Mean per-token loss of the held-out reference replies (quality: its negative, so higher is better)."""
    from tunesmith.data.formats import read_examples
    from tunesmith.data.render import Renderer
    from tunesmith.train.validation import evaluate

    rendered, _ = Renderer(tok, max_len=1024).render_all(read_examples(test).examples[:rows])
    loss = evaluate(model, rendered, 4, tok.pad_token_id, bf16=False)
    return {"quality": -loss, "test_loss": loss}


TASKS = {
    "demo": {"files": demo_files, "score": score_demo, "quality": "mean field accuracy (held-out emails)"},
    "long_replies": {"files": long_files, "score": score_loss, "quality": "- test loss per token (long replies)"},
    "persona": {"files": persona_files, "score": score_persona, "quality": "- test loss per token (brand voice)"},
}


# ---- one configuration -----------------------------------------------------------------------------------


def general_perplexity(model: Any, tok: Any) -> float:
    from tunesmith.eval import forgetting

    return forgetting.text_perplexity(model, tok, forgetting.general_text())[0]


def behaviour_right(model: Any, tok: Any) -> list[bool]:
    """Which of the behavioural probe's everyday questions (eval/behaviour.py) ``model`` answers right."""
    from tunesmith.eval import behaviour

    return behaviour.right(model, tok, behaviour.load_items())


def base_record(task: str, model_name: str, rows: int | None) -> dict[str, Any]:
    from tunesmith.models.load import load_model

    base, tok, _ = load_model(model_name)
    record = TASKS[task]["score"](base, tok, TASKS[task]["files"]()[1], rows)
    return {**record, "perplexity": general_perplexity(base, tok), "behaviour_right": behaviour_right(base, tok)}


def run_config(task: str, name: str, change: dict[str, Any], args: argparse.Namespace, base: dict[str, Any]) -> dict:
    from tunesmith import runs
    from tunesmith.config import load_config
    from tunesmith.models.load import load_model
    from tunesmith.train.pipeline import run_training

    train_file, test_file = TASKS[task]["files"]()
    overrides: dict[str, Any] = {
        "model": {"name": args.model},
        "data": {"train": str(train_file)},
        "train": dict(change.get("train", {})),
        "lora": dict(change.get("lora", {})),
    }
    if args.max_steps:
        overrides["train"]["max_steps"] = args.max_steps
    out = args.runs / f"{task}-{name}"
    t0 = time.time()
    result = run_training(load_config(None, overrides), out, force=True)
    info = runs.read_run(out)
    train_s = time.time() - t0
    tuned, tok, _ = load_model(str(out))
    record = TASKS[task]["score"](tuned, tok, test_file, args.test_rows)
    ppl = general_perplexity(tuned, tok)
    base_ppl = base["perplexity"]
    tuned_right = behaviour_right(tuned, tok)
    base_right = base.get("behaviour_right")
    if base_right is None or len(base_right) != len(tuned_right):  # recorded on an earlier item set
        base_right = behaviour_right(load_model(args.model)[0], tok)
    kept = sum(b and t for b, t in zip(base_right, tuned_right, strict=True))
    s = result.config.train
    return {
        "task": task,
        "config": name,
        "change": change,
        "settings": {
            "learning_rate": s.learning_rate,
            "forgetting_budget": s.forgetting_budget,
            "epochs": s.epochs,
            "replay": s.replay,
            "replay_source": s.replay_source,
            "kl_to_base": s.kl_to_base,
            "kl_source": s.kl_source,
            "kl_rows": s.kl_rows,
            "r": result.config.lora.r,
            "alpha": result.config.lora.alpha,
            "target_modules": result.config.lora.target_modules,
        },
        **record,
        "perplexity": ppl,
        "base_perplexity": base_ppl,
        "perplexity_change": ppl / base_ppl - 1.0,
        # the behavioural probe: of the everyday questions the base answered right, the share still right
        "behaviour_kept": kept,
        "behaviour_base": sum(base_right),
        "behaviour_drop": 1.0 - kept / sum(base_right) if any(base_right) else 0.0,
        "behaviour_items": len(base_right),
        "steps": info.steps,
        "best_step": info.best_step,
        "best_val_loss": info.best_val_loss,
        "stopped_early": info.stopped_early,
        "probe_during_training": (info.forgetting_probe or {}).get("history"),
        "train_wall_s": round(train_s, 1),
        "eval_wall_s": round(time.time() - t0 - train_s, 1),
    }


# ---- results, table and plot -----------------------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"base": {}, "runs": []}


def save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def table(data: dict[str, Any]) -> str:
    lines = [
        "| task | config | lr | r/alpha | replay | steps (best) | quality | stop rate | general ppl | change |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, base in data["base"].items():
        stop = f"{base['stop_rate']:.0%}" if "stop_rate" in base else "-"
        lines.append(
            f"| {task} | base model | - | - | - | - | {base['quality']:.3f} | {stop} | {base['perplexity']:.2f} | - |"
        )
    for r in data["runs"]:
        s = r["settings"]
        stop = f"{r['stop_rate']:.0%}" if "stop_rate" in r else "-"
        lines.append(
            f"| {r['task']} | {r['config']} | {s['learning_rate']:g} | {s['r']}/{s['alpha']} | {s['replay'] or 0:g} "
            f"| {r['steps']} ({r['best_step']}) | {r['quality']:.3f} | {stop} | {r['perplexity']:.2f} "
            f"| {r['perplexity_change']:+.1%} |"
        )
    return "\n".join(lines)


def _behaviour_drop(r: dict[str, Any]) -> float | None:
    """The behavioural probe's drop in percent, where measured on the shipped item set. Runs from before the
    robustness filter (41 items, some flipping under any change of weights) keep theirs as
    ``behaviour_drop_41`` and stay off the panel."""
    drop = r.get("behaviour_drop")
    return None if drop is None else 100 * drop


def plot(data: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in data["runs"]})
    # per task: quality against the perplexity change, and (where measured) against the behavioural probe
    fig, axes = plt.subplots(len(tasks), 2, figsize=(13, 4.8 * len(tasks)), squeeze=False)
    for (ax, bx), task in zip(axes, tasks, strict=True):
        rows = [r for r in data["runs"] if r["task"] == task]
        for r in rows:
            marker = "s" if r["settings"].get("replay") else "o"
            for a, x in ((ax, 100 * r["perplexity_change"]), (bx, _behaviour_drop(r))):
                if x is None:
                    continue
                a.scatter(x, r["quality"], marker=marker, s=40)
                a.annotate(r["config"], (x, r["quality"]), fontsize=8, xytext=(4, 3), textcoords="offset points")
        ax.axvline(100 * THRESHOLD, color="red", linestyle="--", linewidth=1, label="forgetting check (+10%)")
        ax.set_xlabel("general-English perplexity change, base -> tuned (%)")
        ax.set_title(f"{task}: task quality vs perplexity (squares: with replay)")
        bx.axvline(100 * THRESHOLD, color="red", linestyle="--", linewidth=1, label="behavioural check (10%)")
        bx.set_xlabel("everyday questions lost, of those the base answered (%)")
        bx.set_title(f"{task}: task quality vs the behavioural probe")
        for a in (ax, bx):
            a.set_ylabel(TASKS[task]["quality"])
            a.grid(alpha=0.3)
            a.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", choices=sorted(GRIDS), default="quick")
    p.add_argument("--only", nargs="*", help="configuration names of the grid to run (default: all)")
    p.add_argument("--tasks", nargs="*", default=["demo"], choices=sorted(TASKS))
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--max-steps", type=int, default=None, help="cap each run (smoke tests)")
    p.add_argument("--test-rows", type=int, default=None, help="score only the first N held-out rows")
    p.add_argument("--json", type=Path, default=RESULTS / "forgetting_frontier.json")
    p.add_argument("--plot", type=Path, default=None, help="default: the JSON's path with .png")
    p.add_argument("--runs", type=Path, default=Path("runs") / "frontier", help="where the run folders go")
    p.add_argument("--again", action="store_true", help="re-run configurations already in the JSON")
    p.add_argument("--plot-only", action="store_true")
    args = p.parse_args(argv)
    plot_path = args.plot or args.json.with_suffix(".png")
    data = load(args.json)
    if not args.plot_only:
        grid = GRIDS[args.grid]
        names = args.only or list(grid)
        unknown = [n for n in names if n not in grid]
        if unknown:
            print(f"unknown configuration(s) {unknown}: the {args.grid} grid has {list(grid)}", file=sys.stderr)
            return 2
        if "machine" not in data:
            from whole_command import machine_record

            data["machine"] = machine_record()
        for task in args.tasks:
            if task not in data["base"]:
                data["base"][task] = base_record(task, args.model, args.test_rows)
                save(args.json, data)
            for name in names:
                done = [r for r in data["runs"] if r["task"] == task and r["config"] == name]
                if done and not args.again:
                    print(f"{task}/{name}: measured already (--again re-runs it)", file=sys.stderr)
                    continue
                record = run_config(task, name, grid[name], args, data["base"][task])
                data["runs"] = [r for r in data["runs"] if not (r["task"] == task and r["config"] == name)]
                data["runs"].append(record)
                save(args.json, data)  # after every run: a long sweep keeps what it measured
                print(
                    f"{task}/{name}: quality {record['quality']:.3f}, perplexity {record['perplexity_change']:+.1%}, "
                    f"everyday questions kept {record['behaviour_kept']}/{record['behaviour_base']}"
                )
    if data["runs"]:
        plot(data, plot_path)
    print(table(data))
    print(f"results: {args.json}  plot: {plot_path if data['runs'] else '(none yet)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
