"""A few steps on the real embedded default model (SmolLM2-135M-Instruct): the integration path."""

from pathlib import Path

import pytest

from tunesmith import runs
from tunesmith.config import load_config
from tunesmith.demo import dataset_path, run_demo
from tunesmith.eval import behaviour
from tunesmith.generate import generate
from tunesmith.models.load import load_model
from tunesmith.train.pipeline import run_training

pytestmark = pytest.mark.slow


def test_default_model_loads_offline_and_stops_on_its_own(default_model_dir: Path) -> None:
    model, tok, source = load_model("smollm2-135m")
    assert source.kind == "alias" and Path(source.path) == default_model_dir
    assert type(model).__name__ == "LlamaForCausalLM" and 134e6 < sum(p.numel() for p in model.parameters()) < 136e6
    out = generate(model, tok, [[{"role": "user", "content": "What is the capital of France?"}]], max_new_tokens=40)
    assert "Paris" in out[0].text and out[0].finish_reason == "stop"
    # The behavioural forgetting probe's questions were kept because this model answers them (greedy, through
    # the renderer and generate): a change of rendering or decoding that loses one shows here (~10 s).
    items = behaviour.load_items()
    assert [it.prompt for it, ok in zip(items, behaviour.right(model, tok, items), strict=True) if not ok] == []


@pytest.mark.parametrize("alias", ["smollm2-135m", "gemma3-270m"])
def test_the_embedded_models_answers_ship_under_the_key_a_run_computes(alias: str) -> None:
    """A first run reads the embedded model's everyday answers from the package instead of generating them
    (~107 s on 2 cores). This fails when the model's export, its template or the prompts change the key: then
    run `python -m tunesmith.examples.make_base_answers` and commit the new files (and drop the old ones)."""
    from tunesmith.models.load import load_tokenizer, resolve
    from tunesmith.train import chat_replay
    from tunesmith.train.rundir import source_hash

    # The run's key: the exported weights' hash and the tokenizer with its chosen template (no weights loaded).
    name = chat_replay.cache_path(source_hash(resolve(alias)), load_tokenizer(alias), chat_replay.prompts()).name
    shipped = chat_replay.shipped_answers()
    assert (shipped / name).is_file(), f"no shipped answers for {alias} under its key {name}"
    assert len(list(shipped.iterdir())) == 2  # one file per embedded model: no stale ones


def test_lora_steps_on_the_real_model(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        {
            "data": {"train": str(dataset_path() / "train.jsonl"), "val_split": 0.05},
            "train": {"max_steps": 4, "batch_size": 4, "micro_batch_size": 4, "eval_every": 4},
        },
    )
    result = run_training(cfg, tmp_path / "run")
    info = runs.read_run(tmp_path / "run")
    assert info.steps == 4 and info.precision in ("bf16-autocast", "fp32")
    first, last = result.loop.history[0]["val_loss"], info.best_val_loss
    assert last == first  # one eval at step 4
    assert last < 2.0, "four LoRA steps on the real model already fit the JSON format somewhat"
    tuned, tok, _ = load_model(tmp_path / "run")
    assert generate(tuned, tok, [[{"role": "user", "content": "Hi"}]], max_new_tokens=8)[0].text


def test_demo_smoke(tmp_path: Path) -> None:
    """The demo's whole path (train, generate base and tuned, score, report) at a tiny size."""
    report = run_demo(tmp_path / "demo", max_steps=2, test_rows=4)
    assert report["test_rows"] == 4 and len(report["rows"]) == 4
    assert {"json_valid", "mean_field_accuracy", "stop_rate"} <= report["tuned"].keys()
    assert (tmp_path / "demo" / "demo.json").is_file() and runs.is_run(tmp_path / "demo")


def test_the_default_run_keeps_both_forgetting_checks(tmp_path: Path) -> None:
    """Issue 20: a short LoRA run on the demo data with every default (lr 1e-3 and the KL-to-base term) passes
    both of `tunesmith eval`'s forgetting checks; the same steps with --kl-to-base 0 already answer everyday
    questions with triage JSON and fail the behavioural one, so the default is what holds the model."""
    from tunesmith.eval import forgetting

    def tuned(name: str, **train: float) -> forgetting.Reading:
        overrides = {"data": {"train": str(dataset_path() / "train.jsonl"), "val_split": 0.0}}
        run_training(load_config(None, {**overrides, "train": {"max_steps": 24, **train}}), tmp_path / name)
        model, tok, _ = load_model(tmp_path / name)
        return forgetting.probe(model, tok)

    base = forgetting.probe(*load_model("smollm2-135m")[:2])
    held = forgetting.compare(base, tuned("default"))
    assert not held.regressed and not held.behaviour.regressed, held.as_dict()
    free = forgetting.compare(base, tuned("no-kl", kl_to_base=0.0))
    assert free.behaviour.regressed, free.as_dict()
