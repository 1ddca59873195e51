"""Issue 22 in tests: validation within a budget (never every step of a short run; a fixed sample when even a few
evaluations on every row cost too much), the start-up breakdown, the cached GEMM peak and precision chosen from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tunesmith import runs
from tunesmith.config import TrainSettings, load_config
from tunesmith.train import auto
from tunesmith.train.batches import fixed_sample
from tunesmith.train.pipeline import run_training

from .conftest import chat_rows, write_jsonl


def test_a_short_run_with_a_small_validation_set_validates_on_a_sample_within_budget() -> None:
    """The reported case: 18 steps over 160 rows of ~110 tokens, 16 held-out rows. The old cadence validated
    after every step (18 // 10 = 1), as much compute as the training itself."""
    plan = auto.plan_validation(None, 0.1, 18, 160 * 110, [110] * 16)
    assert plan.n_evals == auto.evaluations(18, plan.eval_every) >= auto.MIN_EVALS
    assert plan.eval_every > 1 and plan.share <= 0.1
    assert auto.MIN_VAL_ROWS <= plan.rows < 16  # 5 evaluations on all 16 rows would cost ~17%


def test_a_run_too_short_for_five_probed_evaluations_validates_twice_and_says_it_is_over_budget() -> None:
    """Issue 22's case with the forgetting probe on (the default): 18 steps of 160 rows of ~168 tokens. Five
    evaluations on 8 rows plus the probe's ~3,200 tokens cost ~36% of the run, which the plan used to call "within
    the 10% budget". Now it validates twice (best weights still choose) and the reason says it is over budget."""
    plan = auto.plan_validation(None, 0.1, 18, 144 * 168, [168] * 16, per_eval_tokens=3217)
    assert (plan.n_evals, plan.rows) == (auto.FEWEST_EVALS, auto.MIN_VAL_ROWS)
    assert 0.1 < plan.share < 0.2
    why = auto._validation_reason(plan, 16, False, 0.1, 3217)
    assert "over the 10% budget" in why and "within" not in why
    roomy = auto.plan_validation(None, 0.1, 180, 1440 * 168, [168] * 16, per_eval_tokens=3217)
    assert roomy.n_evals >= auto.MIN_EVALS and roomy.share <= 0.1
    assert "within the 10% budget" in auto._validation_reason(roomy, 16, False, 0.1, 3217)


def test_a_cheap_validation_set_gets_about_ten_evaluations_on_every_row() -> None:
    plan = auto.plan_validation(None, 0.1, 18, 1000 * 110, [110] * 20)
    assert plan.rows == 20 and plan.n_evals == 9 and plan.eval_every == 2  # ceil(18 / 10): never every step
    plan = auto.plan_validation(None, 0.1, 300, 10_000 * 110, [110] * 100)
    assert plan.rows == 100 and plan.n_evals == 10 and plan.share <= 0.1


def test_the_forgetting_probe_counts_against_the_budget() -> None:
    """The probe reads its text (~3,500 tokens for SmolLM2) at every validation: as much as the rows here, so
    with it the plan validates less often, and its share says what the rows and the probe cost together."""
    without = auto.plan_validation(None, 0.1, 100, 1500 * 100, [100] * 30)
    with_probe = auto.plan_validation(None, 0.1, 100, 1500 * 100, [100] * 30, per_eval_tokens=3000)
    assert without.n_evals == 10 and with_probe.n_evals < 10 and with_probe.share <= 0.1
    # every evaluation reads the rows and the probe's text; the probe also reads it once before the first step
    spent = with_probe.n_evals * (30 * 100 + 3000) + 3000
    assert with_probe.share == pytest.approx(spent / (auto.TRAIN_TOKEN_COST * 1.5e5))
    reasons = auto.resolve(TrainSettings(), 2000, 100, [100] * 30, train_tokens=2000 * 100, probe_tokens=3000).reasons
    assert any("forgetting probe's 3000 tokens" in r for r in reasons)


def test_the_budget_is_settable_and_a_given_cadence_is_kept() -> None:
    tight = auto.plan_validation(None, 0.02, 100, 2000 * 100, [100] * 200)
    loose = auto.plan_validation(None, 0.5, 100, 2000 * 100, [100] * 200)
    assert tight.share <= 0.02 and loose.n_evals == 10 and loose.rows == 200
    assert tight.rows < 200 or tight.n_evals < loose.n_evals
    given = auto.plan_validation(1, 0.1, 18, 160 * 110, [110] * 16)
    assert (given.eval_every, given.rows, given.n_evals) == (1, 16, 18)
    reasons = auto.resolve(TrainSettings(eval_every=1), 160, 110, [110] * 16, train_tokens=160 * 110).reasons
    assert any("as configured" in r and "~" in r for r in reasons), reasons


def test_the_sample_is_the_same_rows_every_time() -> None:
    rows = list(range(50))
    a, b = fixed_sample(rows, 8, seed=3), fixed_sample(rows, 8, seed=3)
    assert a == b == sorted(a) and len(set(a)) == 8
    assert fixed_sample(rows, 60, seed=3) == rows


def test_a_run_validates_as_planned_and_says_what_it_costs(tmp_path: Path, tiny_model_dir: Path) -> None:
    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    write_jsonl(train, chat_rows(24))
    write_jsonl(val, chat_rows(40)[24:])
    cfg = load_config(
        None,
        {
            "model": {"name": str(tiny_model_dir)},
            "data": {"train": str(train), "val": str(val), "max_len": 256},
            "lora": {"r": 4, "alpha": 8},
            "train": {"batch_size": 2, "epochs": 1, "learning_rate": 5e-3, "early_stopping_patience": None},
        },
    )
    result = run_training(cfg, tmp_path / "run", skip_check=True)
    why = next(r for r in result.reasons if r.startswith("validation every"))
    assert "fixed sample of" in why and "of the 16 rows" in why and "budget" in why, why
    info = runs.read_run(tmp_path / "run")
    assert why in info.choices
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if "val_loss" in x]
    every = load_config(tmp_path / "run" / "config.yaml").train.eval_every
    assert len(evals) == auto.evaluations(12, every) >= auto.FEWEST_EVALS and every > 1


def test_start_up_is_broken_down_in_run_json_and_the_gemm_peak_is_measured_once_per_machine(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch
) -> None:
    from tunesmith.train import perf

    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    probes: list[object] = []
    real = perf.measure_peak_flops
    monkeypatch.setattr(perf, "measure_peak_flops", lambda dtype: probes.append(dtype) or real(dtype, seconds=0.05))
    first, source = perf.peak_flops(torch.float32)
    again, cached = perf.peak_flops(torch.float32)
    assert len(probes) == 1 and again == first > 0
    assert source == "GEMM probe at start-up" and "cached for this machine" in cached
    assert (tmp_path / "home" / "cache" / perf.PEAK_CACHE).is_file()
    perf.peak_flops(torch.bfloat16)  # whichever precision the run picks, its peak is now cached

    data = tmp_path / "train.jsonl"
    write_jsonl(data, chat_rows(8))
    cfg = load_config(
        None,
        {
            "model": {"name": str(tiny_model_dir)},
            "data": {"train": str(data), "val_split": 0.0, "max_len": 256},
            "train": {"batch_size": 4, "max_steps": 1},
        },
    )
    run_training(cfg, tmp_path / "run")
    info = runs.read_run(tmp_path / "run")
    assert {"data check", "loading the model", "rendering", "GEMM peak"} <= info.startup.keys(), info.startup
    assert all(v >= 0 for v in info.startup.values()) and info.startup["loading the model"] > 0
    assert info.peak_flops.source == cached and len(probes) == 2, "the run read the cached peak"
    assert sum(info.startup.values()) <= info.wall_time_s + 0.5


def test_auto_precision_follows_this_machines_measured_gemm_peaks(monkeypatch) -> None:
    """bf16 only where it measured faster: a CPU whose bf16 GEMMs are barely faster than fp32 trains in fp32."""
    from tunesmith.train import perf, setup

    if setup.inference_dtype("auto") != torch.bfloat16:
        pytest.skip("no native bf16 on this machine: fp32 whatever is measured")
    peaks = {torch.bfloat16: 1.0e12, torch.float32: 0.9e12}
    monkeypatch.setattr(perf, "peak_flops", lambda dtype: (peaks[dtype], "probe"))
    bf16, why = setup.choose_precision("auto", "lora")
    assert not bf16 and "not worth it" in why and "bf16 1.00, fp32 0.90" in why
    peaks[torch.bfloat16] = 4.0e12
    bf16, why = setup.choose_precision("auto", "lora")
    assert bf16 and "bf16 4.00" in why
    assert setup.choose_precision("bf16", "lora")[0], "asked for bf16 explicitly: no measurement overrides it"


def test_a_runs_weights_do_not_depend_on_whether_the_gemm_peak_is_cached(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch
) -> None:
    """The probe runs only on a cold cache; it must not draw from the run's seeded RNG (dropout follows)."""
    from safetensors.torch import load_file

    from tunesmith.train import startup

    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    data = write_jsonl(tmp_path / "train.jsonl", chat_rows(8))
    cfg = load_config(
        None,
        {
            "model": {"name": str(tiny_model_dir)},
            "data": {"train": str(data), "val_split": 0.0, "max_len": 256},
            "lora": {"r": 4, "dropout": 0.3},
            "train": {"batch_size": 4, "max_steps": 2, "learning_rate": 1e-2},
        },
    )
    startup.count_from_process_start()  # as the command line does; here the process is pytest, not the command
    run_training(cfg, tmp_path / "cold")  # probes, and caches
    run_training(cfg, tmp_path / "warm")  # reads the cache
    cold, warm = runs.read_run(tmp_path / "cold"), runs.read_run(tmp_path / "warm")
    assert "GEMM probe" in cold.peak_flops.source and "cached" in warm.peak_flops.source
    a = load_file(tmp_path / "cold" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "warm" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Started by the test runner, not by `tunesmith`: pytest's age is no run's start-up.
    assert "interpreter, imports, arguments" not in cold.startup


def test_an_fp32_run_sizes_its_micro_batches_for_fp32_activations() -> None:
    """fp32 activations take twice bf16's memory: the same rows get half the tokens per forward pass."""
    bf16 = auto.resolve(TrainSettings(), 160, 224, [], train_tokens=160 * 168)
    fp32 = auto.resolve(TrainSettings(), 160, 224, [], train_tokens=160 * 168, fp32=True)
    assert (bf16.settings.batch_size, bf16.settings.micro_batch_size) == (8, 8)
    assert fp32.settings.micro_batch_size == 4
    assert any("micro-batch 4: ~1024 tokens" in r and "fp32" in r for r in fp32.reasons), fp32.reasons
    pinned = auto.resolve(TrainSettings(micro_batch_size=8), 160, 224, [], fp32=True)
    assert pinned.settings.micro_batch_size == 8, "a micro-batch the user set is kept"


def test_a_machines_measurements_are_kept_apart_from_another_cpu_of_the_same_name(monkeypatch) -> None:
    """Cloud VMs name a Zen 3 (AVX2 only) and a Zen 4 (AVX-512 BF16) both "AMD EPYC"; a GEMM peak measured on
    one must not be read back on the other."""
    from tunesmith import machine

    zen3 = {"model": "AMD EPYC", "flags": ["avx2"], "cores": 2}
    zen4 = {"model": "AMD EPYC", "flags": ["avx512_bf16", "avx512f", "avx2"], "cores": 2}
    monkeypatch.setattr(machine, "cpu_info", lambda: zen3)
    first = machine.key(torch.float32)
    assert machine.key(torch.float32) == first, "the same machine finds its own measurement again"
    monkeypatch.setattr(machine, "cpu_info", lambda: zen4)
    assert machine.key(torch.float32) != first


def test_set_up_sizes_the_micro_batch_for_the_precision_it_chose(tiny_model_dir: Path) -> None:
    """The precision is chosen before the micro-batch, and the micro-batch follows it (a run asked for fp32
    gets fp32's size on any machine)."""
    from tunesmith.models.load import load_model
    from tunesmith.train import setup

    model, _, _ = load_model(str(tiny_model_dir))
    cfg = load_config(None, {"model": {"name": str(tiny_model_dir)}, "train": {"precision": "fp32"}})
    prepared = setup.prepare(cfg, model, [224] * 160, val_lengths=[], compile=False)
    assert not prepared.bf16 and prepared.settings.micro_batch_size == 4
    assert any("~1024 tokens per forward pass (fp32" in r for r in prepared.reasons), prepared.reasons


def test_over_budget_the_probe_reads_at_the_last_evaluation_only_unless_something_picks_by_it() -> None:
    """The issue's short run: two evaluations on 8 rows cost ~2,700 tokens, the probe's 3,217 at each ~6,400.
    Read once (at the end), the share falls from ~17% to ~13%. With a forgetting budget (which picks weights by
    the probe), a cadence the user gave, or a plan within budget, it reads at every evaluation as before."""
    args = (None, 0.1, 18, 144 * 168, [168] * 16, 3217)
    every = auto.plan_validation(*args)
    thin = auto.plan_validation(*args, probe_may_thin=True)
    assert (thin.n_evals, thin.rows) == (every.n_evals, every.rows) == (2, 8)
    assert not every.probe_last_only and thin.probe_last_only
    assert thin.share == pytest.approx((2 * 8 * 168 + 2 * 3217) / (3 * 144 * 168))
    assert every.share == pytest.approx((2 * (8 * 168 + 3217) + 3217) / (3 * 144 * 168))
    assert not auto.plan_validation(2, *args[1:], probe_may_thin=True).probe_last_only  # a given cadence
    roomy = auto.plan_validation(None, 0.1, 180, 1440 * 168, [168] * 16, 3217, probe_may_thin=True)
    assert not roomy.probe_last_only
    settings = TrainSettings(batch_size=8, epochs=1)
    plain = auto.resolve(settings, 144, 168, [168] * 16, train_tokens=144 * 168, probe_tokens=3217)
    assert plain.probe_last_only
    assert any("the probe at the last one only" in r for r in plain.reasons), plain.reasons
    budget = settings.model_copy(update={"forgetting_budget": 0.1})
    picked = auto.resolve(budget, 144, 168, [168] * 16, train_tokens=144 * 168, probe_tokens=3217)
    assert not picked.probe_last_only
