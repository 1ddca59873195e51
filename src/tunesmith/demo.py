"""The demo: LoRA-tune the embedded default model on the shipped support-triage set, then show base vs
tuned on held-out emails, with no instructions in the prompt, and score both."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tunesmith import console
from tunesmith.config import load_config
from tunesmith.data.formats import Conversation, read_examples
from tunesmith.eval.metrics import field_accuracy, json_validity, stop_rate

DATASET = "support_triage"


def dataset_path(name: str = DATASET) -> Path:
    return Path(str(resources.files("tunesmith.examples") / name))


@dataclass
class Scores:
    json_valid: float
    fields: dict[str, float]
    stop_rate: float

    @property
    def mean_field(self) -> float:
        return sum(self.fields.values()) / len(self.fields) if self.fields else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "json_valid": self.json_valid,
            "field_accuracy": self.fields,
            "mean_field_accuracy": self.mean_field,
            "stop_rate": self.stop_rate,
        }


def _prompt(conv: Conversation) -> list[dict[str, str]]:
    return [m.as_dict() for m in conv.messages[:-1]]


def score(outputs: list[Any], refs: list[str]) -> Scores:
    texts = [o.text for o in outputs]
    return Scores(json_validity(texts), field_accuracy(texts, refs), stop_rate([o.finish_reason for o in outputs]))


def run_demo(
    out: Path, *, max_steps: int | None = None, test_rows: int | None = None, model: str | None = None
) -> dict[str, Any]:
    from tunesmith.generate import generate
    from tunesmith.models.load import load_model
    from tunesmith.train.pipeline import run_training

    t0 = time.time()
    data = dataset_path()
    overrides: dict[str, Any] = {"data": {"train": str(data / "train.jsonl")}}
    if model:
        overrides["model"] = {"name": model}
    console.info(
        f"[bold]tunesmith demo[/bold]: support emails -> triage JSON, on {model or 'the default model'} ({data})"
    )
    if max_steps:
        overrides["train"] = {"max_steps": max_steps}
    cfg = load_config(None, overrides)
    info = run_training(cfg, out, force=True).summary
    assert info is not None  # one process, run to the end

    test = read_examples(data / "test.jsonl").examples[:test_rows]
    prompts = [_prompt(c) for c in test]
    refs = [c.messages[-1].content for c in test]
    console.info(f"Generating for {len(test)} held-out emails, base and tuned, no instructions in the prompt...")
    base, tok, _ = load_model(cfg.model.name, chat_template=cfg.model.chat_template)
    base_out = generate(base, tok, prompts, max_new_tokens=96, batch_size=20)
    del base
    tuned, tok, _ = load_model(out)
    tuned_out = generate(tuned, tok, prompts, max_new_tokens=96, batch_size=20)
    base_s, tuned_s = score(base_out, refs), score(tuned_out, refs)
    _show(test, refs, base_out, tuned_out, base_s, tuned_s)
    report = {
        "dataset": DATASET,
        "model": cfg.model.name,
        "test_rows": len(test),
        "base": base_s.as_dict(),
        "tuned": tuned_s.as_dict(),
        "train": {
            "steps": info.steps,
            "train_time_s": info.train_time_s,
            "tokens_per_s": info.tokens_per_s,
            "best_val_loss": info.best_val_loss,
        },
        "wall_time_s": round(time.time() - t0, 1),
        "rows": [
            {"prompt": p[-1]["content"], "reference": r, "base": b.text, "tuned": t.text}
            for p, r, b, t in zip(prompts, refs, base_out, tuned_out, strict=True)
        ],
    }
    (out / "demo.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    console.info(
        f"\nRun folder: {out}  (adapter: {out / 'adapter'}, metrics: {out / 'metrics.jsonl'}, "
        f"scores: {out / 'demo.json'})"
    )
    console.info(f"Try it: tunesmith chat {out}    Demo took {report['wall_time_s']:.0f}s.")
    return report


def _show(
    test: list[Conversation],
    refs: list[str],
    base: list[Any],
    tuned: list[Any],
    base_s: Scores,
    tuned_s: Scores,
) -> None:
    from rich.table import Table

    table = Table(title="Held-out emails (no instructions in the prompt)", show_lines=True, expand=True)
    table.add_column("email", ratio=3)
    table.add_column("reference", ratio=2)
    table.add_column("base", ratio=2)
    table.add_column("tuned", ratio=2)
    for conv, ref, b, t in list(zip(test, refs, base, tuned, strict=True))[:3]:
        email = conv.messages[-2].content
        table.add_row(email[:300] + ("..." if len(email) > 300 else ""), ref, b.text[:300], t.text)
    console.console.print(table)
    fields = ", ".join(f"{k} {base_s.fields.get(k, 0):.0%}->{v:.0%}" for k, v in tuned_s.fields.items())
    console.console.print(
        f"[bold]score[/bold]  JSON valid: base {base_s.json_valid:.0%} -> tuned {tuned_s.json_valid:.0%}   "
        f"mean field accuracy: base {base_s.mean_field:.0%} -> tuned {tuned_s.mean_field:.0%}   "
        f"stopped on its own: base {base_s.stop_rate:.0%} -> tuned {tuned_s.stop_rate:.0%}"
    )
    console.console.print(f"[dim]per field: {fields}[/dim]")
