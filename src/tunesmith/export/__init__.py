"""`tunesmith export`: a finished run -> a merged HF folder, a PEFT adapter or a GGUF file, each checked.

    run ─► adapter on base (fp32) ─► merge in fp32 ─► check the merge ─► write into OUT's staging folder
        ─► read back with the reference loader ─► parity + template checks ─► export.json ─► rename to OUT

The export is written to a hidden staging folder beside OUT and renamed into place only once every
check has passed, so a folder at OUT is always a complete export that passed. When a check fails,
nothing appears at OUT; the numbers go to ``OUT.failed.json`` and the command exits 1.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunesmith import __version__, console, runs
from tunesmith.errors import UserError
from tunesmith.export.parity import Check, Inputs, ParityFailure

if TYPE_CHECKING:
    from tunesmith.config import RunConfig

FORMATS = ("merged", "adapter", "gguf")
DTYPES = {"merged": ("f32", "f16", "bf16"), "adapter": ("f32",), "gguf": ("f32", "f16", "bf16", "q8_0")}
# merged: fp32 keeps the merge exact (use f16/bf16 to halve the size); gguf: f16 is what llama.cpp users expect.
DEFAULT_DTYPE = {"merged": "f32", "adapter": "f32", "gguf": "f16"}
EXPORT_JSON = "export.json"
EXPORTS_DIR = "exports"

__all__ = ["DEFAULT_DTYPE", "DTYPES", "FORMATS", "ExportResult", "ParityFailure", "export_run"]


@dataclass
class ExportResult:
    out: Path
    format: str
    dtype: str
    checks: list[Check]
    report: dict[str, Any]


def default_out(run_dir: Path, fmt: str, dtype: str) -> Path:
    return run_dir / EXPORTS_DIR / (fmt if fmt == "adapter" else f"{fmt}-{dtype}")


def _validate(run_dir: Path, fmt: str, dtype: str | None) -> str:
    if not runs.is_run(run_dir):
        what = "does not exist" if not run_dir.exists() else "is not a finished tunesmith run (no run.json)"
        raise UserError(f"'{run_dir}' {what}; pass the folder that `tunesmith train --out` wrote")
    if fmt not in FORMATS:
        raise UserError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}")
    dtype = dtype or DEFAULT_DTYPE[fmt]
    if dtype not in DTYPES[fmt]:
        raise UserError(f"--dtype {dtype} does not apply to --format {fmt}; choose one of {', '.join(DTYPES[fmt])}")
    return dtype


def _check_out(out: Path, run_dir: Path, force: bool) -> None:
    if out.resolve() == run_dir.resolve() or out.resolve() in run_dir.resolve().parents:
        raise UserError(f"--out {out} would replace the run itself; choose another folder")
    if out.is_file():
        raise UserError(f"{out} is a file; --out needs a folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise UserError(f"{out} already exists; pass --force to replace it")


def _check_disk(out: Path, need: int) -> None:
    where = out.parent
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    if free < need:
        raise UserError(
            f"not enough disk space in {where}: the export needs about {need / 1e6:.0f} MB, {free / 1e6:.0f} MB free"
        )


def _share(folder: Path) -> None:
    """Give the export the permissions of an ordinary folder: the staging folder (mkdtemp) and some of the
    files in it (written through temporary files) are private to the user otherwise."""
    mask = os.umask(0)
    os.umask(mask)
    folder.chmod(0o777 & ~mask)
    for f in folder.iterdir():
        if f.is_file():
            f.chmod(0o666 & ~mask)


def _publish(staging: Path, out: Path) -> None:
    """Move the finished export into place; an older export at ``out`` (--force) is removed only after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    staging.rename(out)
    runs.fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _versions() -> dict[str, str]:
    out = {"tunesmith": __version__}
    for pkg in ("torch", "transformers", "peft", "gguf"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[pkg] = importlib.metadata.version(pkg)
    return out


def export_run(
    run: Path | str,
    fmt: str,
    *,
    dtype: str | None = None,
    out: Path | str | None = None,
    force: bool = False,
    trust_remote_code: bool = False,
) -> ExportResult:
    """Export a finished run and check it; raises ``UserError`` for bad input, ``ParityFailure`` for a
    failed check (with nothing left at ``out``). ``trust_remote_code`` lets a model that ships its own Python
    code run it, both to load the run and to read the export back."""
    import torch

    from tunesmith.config import load_config
    from tunesmith.export import merge as merging
    from tunesmith.models.load import load_model

    t0 = time.time()
    run_dir = Path(run)
    dtype = _validate(run_dir, fmt, dtype)
    out = Path(out) if out is not None else default_out(run_dir, fmt, dtype)
    _check_out(out, run_dir, force)
    info = runs.read_run(run_dir)
    cfg = load_config(run_dir / runs.CONFIG_YAML)
    weights_dir = info.weights_path(run_dir)
    if fmt == "adapter" and info.method != "lora":
        raise UserError(f"'{run_dir}' is a full fine-tune and has no adapter; export it with --format merged or gguf")

    if fmt == "gguf":  # from the config or the GGUF header: loading the model can take a minute
        from tunesmith.export.gguf_precheck import refuse_unsupported

        refuse_unsupported(run_dir)
    console.info(f"[bold]tunesmith export[/bold]  {run_dir} -> {fmt} ({dtype})")
    model, tokenizer, _ = load_model(
        run_dir, dtype=torch.float32, merge_adapter=False, trust_remote_code=trust_remote_code
    )
    merging.refuse_quantized(model)
    merging.refuse_nonfinite(
        merging.adapter_tensors(model),
        f"the adapter in {weights_dir}",
        "the run diverged; retrain (for example with a lower learning rate) instead of exporting it",
    )
    _check_disk(out, _needed_bytes(fmt, model, tokenizer, dtype, weights_dir))
    made, probes, notes = _merge_and_probe(run_dir, info, cfg, model, tokenizer, fmt, dtype, trust_remote_code)
    del model  # only the adapter export compares against the unmerged model (in ``made``); free it for the others
    checks, report = _write_checked(out, fmt, made, t0, probes, notes)
    return ExportResult(out, fmt, dtype, checks, report)


def _needed_bytes(fmt: str, model: Any, tokenizer: Any, dtype: str, weights_dir: Path) -> int:
    """The disk space the export needs; for gguf, first whether the architecture can be written at all."""
    from tunesmith.export import merge as merging

    if fmt == "gguf":
        from tunesmith.export import gguf as gguf_export

        gguf_export.check_supported(model, tokenizer)
        return gguf_export.estimate_bytes(model, dtype)
    if fmt == "merged":
        return merging.estimate_bytes(model, dtype)
    from tunesmith.export import adapter as adapter_export

    return adapter_export.estimate_bytes(weights_dir)


def _merge_and_probe(
    run_dir: Path,
    info: runs.RunInfo,
    cfg: RunConfig,
    model: Any,
    tokenizer: Any,
    fmt: str,
    dtype: str,
    trust_remote_code: bool,
) -> tuple[_Made, list[Any], list[str]]:
    """Render the probes, merge in fp32 and check the merge: what every format's writer compares with.
    Returns it as ``_Made``, with the probes and the notes of building them."""
    from tunesmith.data.render import Renderer, template_hash
    from tunesmith.export import merge as merging
    from tunesmith.export import parity
    from tunesmith.models.stops import stop_token_ids

    stops = stop_token_ids(model, tokenizer)
    renderer_kw = {"max_len": cfg.data.max_len, "train_on": cfg.data.train_on}
    renderer = Renderer(tokenizer, stop_token_ids=stops, **renderer_kw)
    probes, notes = parity.build_probes(cfg.data.train, renderer, cfg.data.columns)
    inputs = parity.encode(probes, renderer, stops)
    recorded = info.hashes.chat_template
    checks = [
        Check(
            "training_template",
            recorded in (None, template_hash(tokenizer)),
            {"recorded": recorded, "in_run_folder": template_hash(tokenizer)},
        )
    ]
    console.info(f"merging in fp32, then checking on {len(probes)} probes...")
    merged = merging.merge(model)
    merging.refuse_nonfinite(merged.state_dict().items(), "the merged model", "nothing was written")
    parity.set_reference(merged, inputs)
    if info.method == "lora":
        checks.append(parity.check_merge(model, merged, inputs))
    adapter_expected = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
    made = _Made(
        run_dir=run_dir,
        info=info,
        cfg=cfg,
        merged=merged,
        tokenizer=tokenizer,
        inputs=inputs,
        adapter_model=model if fmt == "adapter" else None,
        dtype=dtype,
        renderer_kw=renderer_kw,
        adapter_expected=adapter_expected,
        prior_checks=checks,
        trust_remote_code=trust_remote_code,
    )
    return made, probes, notes


def _write_checked(
    out: Path, fmt: str, made: _Made, t0: float, probes: list[Any], notes: list[str]
) -> tuple[list[Check], dict[str, Any]]:
    """Write the format into a staging folder beside ``out``, check it, and rename it into place only if
    every check passed (else ``OUT.failed.json`` and ``ParityFailure``)."""
    from tunesmith.export import parity

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        writer = {"merged": _export_merged, "adapter": _export_adapter, "gguf": _export_gguf}[fmt]
        checks = [*made.prior_checks, *writer(staging, made)]
        passed = all(c.passed for c in checks)
        report = {
            "status": "passed" if passed else "failed",
            "format": fmt,
            "dtype": made.dtype,
            "run": str(made.run_dir),
            "method": made.info.method,
            "base_model": made.info.base_model,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.time() - t0, 1),
            "files": {p.name: p.stat().st_size for p in sorted(staging.iterdir()) if p.is_file()},
            "probes": [p.source for p in probes],
            "max_new_tokens": parity.MAX_NEW_TOKENS,
            "reference_tokens": sum(len(c) for c in made.inputs.continuations),
            "notes": notes,
            "checks": [c.as_dict() for c in checks],
            "versions": _versions(),
        }
        failed_json = out.with_name(f"{out.name}.failed.json")
        if not passed:
            runs.write_text_atomic(failed_json, json.dumps(report, indent=2, default=str))
            bad = next(c for c in checks if not c.passed)
            raise ParityFailure(f"export check failed, nothing written to {out}: {bad.summary()} (all: {failed_json})")
        runs.write_text_atomic(staging / EXPORT_JSON, json.dumps(report, indent=2, default=str))
        _share(staging)
        _publish(staging, out)
        failed_json.unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return checks, report


@dataclass
class _Made:
    """What export_run has made by the time a format's writer runs: the writers' one typed argument."""

    run_dir: Path
    info: runs.RunInfo
    cfg: RunConfig
    merged: Any  # the fp32 merged model, the reference every read-back is compared with
    tokenizer: Any
    inputs: Inputs  # the probes, rendered by the training tokenizer
    adapter_model: Any  # the unmerged PEFT model (adapter export only; None for the others)
    dtype: str
    renderer_kw: dict[str, Any]  # max_len and train_on, as the run rendered its data
    adapter_expected: dict[str, Any]  # the adapter's tensors, cloned before the merge
    prior_checks: list[Check]  # the checks already done (for the model card)
    trust_remote_code: bool


def _export_merged(staging: Path, made: _Made) -> list[Check]:
    from tunesmith.export import merge as merging
    from tunesmith.export import parity

    merged, inputs, dtype = made.merged, made.inputs, made.dtype
    expected = merging.expected_tensors(merged, dtype)
    merging.write_merged(merged, made.tokenizer, staging, dtype, inputs.stops)
    back, back_tok = merging.read_merged(staging, trust_remote_code=made.trust_remote_code)
    gen = merging.check_generation_config(back, back_tok, inputs.stops)
    return [
        parity.check_readback("merged_readback", back, merged, inputs, dtype, expected),
        Check("generation_config", gen["stops_covered"], gen),
        parity.check_template("template_merged", made.tokenizer, back_tok, inputs, made.renderer_kw),
    ]


def _export_adapter(staging: Path, made: _Made) -> list[Check]:
    from tunesmith.export import adapter as adapter_export
    from tunesmith.export import parity
    from tunesmith.models.load import resolve

    base = resolve(made.info.base_model)
    adapter_export.write_adapter(made.info.weights_path(made.run_dir), made.tokenizer, staging)
    back, back_tok = adapter_export.read_adapter(staging, base, trust_remote_code=made.trust_remote_code)
    inputs = made.inputs
    checks = [
        # Against the unmerged model: the same computation, so any difference is the files' doing.
        parity.check_readback("adapter_readback", back, made.adapter_model, inputs, "f32", made.adapter_expected),
        parity.check_template("template_adapter", made.tokenizer, back_tok, inputs, made.renderer_kw),
    ]
    summaries = [c.summary() for c in [*made.prior_checks, *checks]]
    card = adapter_export.model_card(made.run_dir, made.info, made.cfg, base.path, summaries)
    (staging / "README.md").write_text(card, encoding="utf-8")
    return checks


def _export_gguf(staging: Path, made: _Made) -> list[Check]:
    from tunesmith.export import gguf as gguf_export
    from tunesmith.export import parity, template
    from tunesmith.models.gguf import load_gguf

    merged, tokenizer, inputs, dtype = made.merged, made.tokenizer, made.inputs, made.dtype
    name = f"model-{dtype}.gguf"
    console.info(f"writing {name} and reading it back with transformers' GGUF reader...")
    expected = gguf_export.write_gguf(
        merged, tokenizer, staging / name, dtype, name=made.run_dir.name, stops=list(inputs.stops)
    )
    # Read back before anything else lands in the folder: the reader must see the .gguf alone.
    back, back_tok = load_gguf(staging / name)
    checks = [
        parity.check_readback("gguf_readback", back, merged, inputs, dtype, expected),
        parity.check_template("template_gguf", tokenizer, back_tok, inputs, made.renderer_kw),
    ]
    checks[0].detail["tensor_types"] = gguf_export.written_types(staging / name)
    try:
        shape = template.chat_shape(tokenizer)
    except template.TemplateShapeError as e:
        return [*checks, Check("ollama_template", False, {"error": str(e)})]
    checks.append(parity.check_ollama(tokenizer, shape, inputs))
    stops = [tokenizer.convert_ids_to_tokens(i) for i in inputs.stops]
    (staging / "Modelfile").write_text(template.modelfile(name, shape, stops), encoding="utf-8")
    return checks
