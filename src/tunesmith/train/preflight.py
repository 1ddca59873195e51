"""`tunesmith check` as one library call, and the gate that `tunesmith train` passes first.

    RunConfig -> tokenizer + the model's stop tokens -> data.checks.check_dataset -> (estimate probe)

It lives in ``train/`` because the estimate needs the training loop's pieces; the checks themselves are in
``data/checks.py`` and need only a tokenizer, so they run before any model weights are loaded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from rich.markup import escape

from tunesmith import console
from tunesmith.config import RunConfig
from tunesmith.data.check_report import CheckReport
from tunesmith.data.checks import check_dataset
from tunesmith.errors import DataError, UserError

# Errors that only the doctor sees: training itself would run with them, so --skip-check can override them.
# (Malformed rows, template failures and overlong: error stop training whatever the flag says.)
SKIPPABLE = frozenset({"leak", "special-tokens", "no-stop-token"})
MAX_LISTED = 20


@dataclass
class CheckResult:
    report: CheckReport
    estimate: Any = None  # train.estimate.Estimate, when the probe ran

    def exit_code(self, strict: bool = False) -> int:
        return self.report.exit_code(strict)

    def as_dict(self, strict: bool = False) -> dict[str, Any]:
        out = {"exit_code": self.exit_code(strict), **self.report.as_dict()}
        out["estimate"] = self.estimate.as_dict() if self.estimate is not None else None
        return out


def run_check(
    cfg: RunConfig,
    *,
    near_threshold: float = 0.8,
    show: int = 0,
    estimate: bool = True,
    price_per_hour: float | None = None,
    nproc: int = 1,
) -> CheckResult:
    """Every check on ``cfg.data.train`` (and ``cfg.data.val``), rendered with ``cfg.model``'s tokenizer at
    ``cfg.data`` settings; then, if asked and any row is trainable, the measured pre-flight estimate."""
    from tunesmith.models.load import load_tokenizer, model_stop_ids

    if cfg.data.train is None:
        raise UserError("no training data: pass the training data file")
    if not 0.0 < near_threshold <= 1.0:
        raise UserError(f"--near-threshold must be in (0, 1], got {near_threshold}")
    tokenizer = load_tokenizer(
        cfg.model.name, trust_remote_code=cfg.model.trust_remote_code, chat_template=cfg.model.chat_template
    )
    report = check_dataset(
        cfg.data.train,
        cfg.data.val,
        tokenizer=tokenizer,
        max_len=cfg.data.max_len,
        overlong=cfg.data.overlong,
        train_on=cfg.data.train_on,
        stop_token_ids=model_stop_ids(cfg.model.name),
        near_threshold=near_threshold,
        show=show,
        columns=cfg.data.columns,
        docs=cfg.data.docs,
    )
    report.settings = {"model": cfg.model.name, **report.settings}
    result = CheckResult(report)
    if estimate and report.kept:
        from tunesmith.train.estimate import estimate_training

        result.estimate = estimate_training(
            cfg, report.kept, report.kept_lengths, report.val_lengths, price_per_hour=price_per_hour, nproc=nproc
        )
    return result


def refuse_on_errors(cfg: RunConfig) -> CheckReport:
    """Run the checks; raise one DataError if any error was found, warn in one line about warnings. The
    report holds the parsed and rendered rows, which training reuses."""
    report = run_check(cfg, estimate=False).report
    errors = report.errors
    if errors:
        if len(errors) > 1:
            console.info(f"tunesmith check found {len(errors)} errors:")
            for f in errors[:MAX_LISTED]:
                console.info(f"  {escape(str(f))}")
            if len(errors) > MAX_LISTED:
                console.info(f"  ... and {len(errors) - MAX_LISTED} more")
        more = len(errors) - 1
        skip = "or pass --skip-check to train anyway" if any(f.code in SKIPPABLE for f in errors) else ""
        if more:
            also = f"; fix them, {skip}" if skip else ""
            tail = f" (and {more} more problem{'s' if more > 1 else ''}; `tunesmith check` lists them all{also})"
        else:
            tail = f" (fix it, {skip})" if skip else ""
        raise DataError(f"{errors[0]}{tail}")
    for f in report.warnings:
        if f.code == "metadata-keys":  # said once, naming the keys: the user may be surprised they are not trained
            console.warn(escape(str(f)))
    others = [f for f in report.warnings if f.code != "metadata-keys"]
    if others:
        counts = ", ".join(f"{n} {code}" for code, n in Counter(f.code for f in others).most_common())
        console.warn(f"tunesmith check: {len(others)} warning(s) ({counts}); `tunesmith check` shows them")
    return report
