"""Generation benchmark: tunesmith's generate (adapter merged in memory, batched, KV cache, weights in the
precision `tunesmith generate` picks by default) against HF `generate` on an unmerged `PeftModel` loaded the
usual way (`from_pretrained`, which keeps this model's fp32), same prompts, same run, interleaved, medians.
tunesmith is also run in fp32, so the gain from merging alone is reported apart from the gain from bf16.

Every side decodes exactly ``--new-tokens`` tokens per row (EOS is ignored via min_new_tokens), greedy, batch 8.
Reported: decode tokens/s and time to first token, both timed inside the same ``generate`` call by tunesmith's
own ``GenerationClock`` streamer (first token = the prefill; decode = first token to the last one), so a noisy
moment cannot make the decode time come out negative as a difference of two separate calls could.

    python benchmarks/generate_vs_hf.py RUN_DIR            # a LoRA run, e.g. runs/demo
    python benchmarks/generate_vs_hf.py --smoke            # tiny random model + a fresh 2-step run (tests)
    python benchmarks/generate_vs_hf.py RUN_DIR --cache-ab # the growing KV cache alone, vs HF's default cache
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def _inputs(tok, prompts: list[str]) -> dict[str, torch.Tensor]:
    from tunesmith.data.render import Renderer

    renderer = Renderer(tok)
    ids = [renderer.prompt_ids([{"role": "user", "content": p}]) for p in prompts]
    width = max(map(len, ids))
    pad = tok.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
    return {"input_ids": input_ids, "attention_mask": mask}


Sample = tuple[float, float, list]  # time to first token, decode tokens/s, the generated ids


@torch.inference_mode()
def _time(model, inputs: dict[str, torch.Tensor], new_tokens: int, tok, *, tunesmith: bool) -> Sample:
    """(time to first token, decode tokens/s, the ids) of one batched greedy generate of exactly ``new_tokens``.
    ``tunesmith``: through tunesmith's own batch call (``generate_batch``: its KV cache that grows in place);
    otherwise plain ``model.generate``, HF's default dynamic cache."""
    from tunesmith.generate import GenerationClock, GenerationStats, generate_batch
    from tunesmith.models.stops import stop_token_ids

    # min_new_tokens suppresses the stop tokens until the end: the same set on both sides.
    stops = stop_token_ids(model, tok)
    stats = GenerationStats()
    clock = GenerationClock(stats, stops=[])  # starts the clock; min_new_tokens: no row stops early
    kw = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "pad": tok.pad_token_id, "streamer": clock}
    if tunesmith:
        out = generate_batch(model, inputs["input_ids"], inputs["attention_mask"], stops=stops, **kw)
    else:
        kw["pad_token_id"] = kw.pop("pad")
        out = model.generate(**inputs, do_sample=False, eos_token_id=stops, **kw)
    assert stats.ttft_s and stats.decode_tokens_per_s, "generate produced fewer than two tokens"
    return stats.ttft_s[0], stats.decode_tokens_per_s, out.tolist()


def _medians(times: dict[str, list[Sample]]) -> dict[str, dict]:
    return {
        name: {
            "decode_tokens_per_s": statistics.median(s[1] for s in samples),
            "ttft_s": statistics.median(s[0] for s in samples),
        }
        for name, samples in times.items()
    }


def _interleaved(sides: dict, inputs, new_tokens: int, tok, repeats: int) -> dict[str, list]:
    """Every side once per repeat, the order reversed on every other repeat."""
    times: dict[str, list] = {name: [] for name in sides}
    for rep in range(repeats):
        order = list(sides.items())
        for name, (model, tunesmith) in order if rep % 2 == 0 else order[::-1]:
            times[name].append(_time(model, inputs, new_tokens, tok, tunesmith=tunesmith))
    return times


def cache_ab(run_dir: str, prompts: list[str], new_tokens: int, repeats: int) -> dict:
    """The same merged model in the default precision, decoded with the growing KV cache (tunesmith's batch
    call) and with HF's default dynamic cache: the lever alone, and whether the tokens stay identical."""
    from tunesmith.models.load import inference_dtype, load_model

    model, tok, _ = load_model(run_dir, dtype=inference_dtype("auto"))
    inputs = _inputs(tok, prompts)
    times = _interleaved({"growing": (model, True), "dynamic": (model, False)}, inputs, new_tokens, tok, repeats)
    out = _medians(times)
    out["ratio"] = out["growing"]["decode_tokens_per_s"] / out["dynamic"]["decode_tokens_per_s"]
    out["identical_tokens"] = all(a[2] == b[2] for a, b in zip(times["growing"], times["dynamic"], strict=True))
    return out


def run(run_dir: str, prompts: list[str], new_tokens: int, repeats: int) -> dict:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunesmith import runs
    from tunesmith.models.load import inference_dtype, load_model, resolve

    info = runs.read_run(Path(run_dir))
    dtype = inference_dtype("auto")
    ours, tok, _ = load_model(run_dir, dtype=dtype)  # tunesmith's path: base + adapter, merged in memory
    ours32, _, _ = load_model(run_dir, dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(resolve(info.base_model).path)  # the usual way
    hf = PeftModel.from_pretrained(base, str(info.weights_path(Path(run_dir)))).eval()
    inputs = _inputs(tok, prompts)
    sides = {"tunesmith": (ours, True), "tunesmith_fp32": (ours32, True), "hf": (hf, False)}
    out = _medians(_interleaved(sides, inputs, new_tokens, tok, repeats))
    out["tunesmith"]["dtype"] = str(dtype).removeprefix("torch.")
    out["hf"]["dtype"] = str(next(hf.parameters()).dtype).removeprefix("torch.")
    out["ratio"] = out["tunesmith"]["decode_tokens_per_s"] / out["hf"]["decode_tokens_per_s"]
    out["ratio_fp32"] = out["tunesmith_fp32"]["decode_tokens_per_s"] / out["hf"]["decode_tokens_per_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--cache-ab", action="store_true", help="Instead: tunesmith's KV cache against HF's default, same model."
    )
    args = parser.parse_args()
    from tunesmith.demo import dataset_path

    rows = (dataset_path() / "test.jsonl").read_text(encoding="utf-8").splitlines()[: args.batch]
    prompts = [json.loads(r)["messages"][0]["content"] for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run
        if args.smoke:
            run_dir = _smoke_run(Path(tmp))
            args.new_tokens, args.repeats = 4, 1
        if not run_dir:
            sys.exit("give a LoRA run folder, or --smoke")
        measure = cache_ab if args.cache_ab else run
        result = measure(run_dir, prompts, args.new_tokens, args.repeats)
        if args.smoke and not args.cache_ab:  # the suite runs both modes on the one smoke run
            result["cache_ab"] = cache_ab(run_dir, prompts, args.new_tokens, args.repeats)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), **result}, indent=2))


def _smoke_run(tmp: Path) -> str:
    sys.path.insert(0, str(Path(__file__).parent))
    from train_vs_trl import smoke_model

    from tunesmith.config import load_config
    from tunesmith.demo import dataset_path
    from tunesmith.train.pipeline import run_training

    model = smoke_model(tmp / "model")
    cfg = load_config(
        None,
        {"model": {"name": model}, "data": {"train": str(dataset_path() / "train.jsonl")}, "train": {"max_steps": 2}},
    )
    run_training(cfg, tmp / "run", skip_check=True)
    return str(tmp / "run")


if __name__ == "__main__":
    main()
