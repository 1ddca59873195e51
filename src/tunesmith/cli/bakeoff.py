"""`tunesmith bakeoff`: flags -> BakeoffOptions -> run_bakeoff() -> the reports and the table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tunesmith.cli.options import TrustRemoteCode, option

Opt = typer.Option


def _methods(text: str | None, docs: Path | None) -> tuple[str, ...]:
    from tunesmith import console
    from tunesmith.decide.options import DEFAULT_METHODS, parse_methods

    if text is not None:
        return parse_methods(text)
    if docs is None:
        return DEFAULT_METHODS
    console.info("methods: the defaults + lora+rag (LoRA with retrieval), since --docs is given")
    return (*DEFAULT_METHODS, "lora+rag")


def bakeoff_command(
    train: Annotated[Path, Opt("--train", help="Training data (shots, RAG, LoRA/full), in any format.")],
    test: Annotated[Path, Opt("--test", help="Held-out data every method answers (any format).")],
    columns: Annotated[str | None, option("columns")] = None,
    instructions: Annotated[
        Path | None, Opt("--instructions", help="Instructions for the prompting methods (prompt, fewshot, rag).")
    ] = None,
    docs: Annotated[Path | None, Opt("--docs", help="Folder of .txt/.md files for RAG.")] = None,
    k: Annotated[int, Opt("--k", min=0, help="Examples (and doc chunks) per few-shot / RAG prompt.")] = 4,
    methods: Annotated[
        str | None,
        Opt(
            "--methods",
            help="Comma-separated: prompt,fewshot,rag,lora,full,lora+rag (default: all but lora+rag, and lora+rag "
            "too with --docs).",
        ),
    ] = None,
    model: Annotated[str | None, Opt("--model", help="Base model (default: a run's base or smollm2-135m).")] = None,
    retriever: Annotated[str, Opt("--retriever", help="bm25 or dense (tunesmith[dense]).")] = "bm25",
    rag_examples: Annotated[
        str,
        Opt(
            "--rag-examples",
            help="With --docs: retrieved training examples left out (none, the default: it measured best), as "
            "marked style examples (style), or as earlier turns (turns).",
        ),
    ] = "none",
    lora_run: Annotated[Path | None, Opt("--lora-run", help="Reuse this LoRA run.")] = None,
    full_run: Annotated[Path | None, Opt("--full-run", help="Reuse this full run.")] = None,
    lora_rag_run: Annotated[
        Path | None, Opt("--lora-rag-run", help="Reuse this LoRA run for lora+rag (e.g. one trained with --docs).")
    ] = None,
    train_with_docs: Annotated[
        bool,
        Opt(
            "--train-with-docs/--no-train-with-docs",
            help="lora+rag: train its adapter on prompts with the doc chunks (default), or give the lora "
            "method's adapter retrieval at inference only.",
        ),
    ] = True,
    config: Annotated[Path | None, Opt("--config", help="`tunesmith train` YAML for runs trained here.")] = None,
    price_1k: Annotated[
        float, Opt("--price-per-1k-input-tokens", min=0.0, help="Input price (default 0.0005, illustrative).")
    ] = 0.0005,
    price_hour: Annotated[float, Opt("--price-per-hour", min=0.0, help="Training machine price (default 1.0).")] = 1.0,
    requests_per_month: Annotated[
        float | None, Opt("--requests-per-month", min=0.0, help="Traffic: the winner then minimises 12-month cost.")
    ] = None,
    max_tokens: Annotated[int | None, Opt("--max-tokens", min=1, help="New tokens per reply.")] = None,
    batch_size: Annotated[int, Opt("--batch-size", min=1)] = 16,
    latency_samples: Annotated[int, Opt("--latency-samples", min=1, help="Single requests timed per method.")] = 3,
    max_memory_gb: Annotated[
        float | None, Opt("--max-memory-gb", min=0.0, help="Skip training estimated to need more (default: available).")
    ] = None,
    max_train_minutes: Annotated[
        float | None, Opt("--max-train-minutes", min=0.0, help="Skip training estimated to take longer.")
    ] = None,
    tolerance: Annotated[
        float, Opt("--quality-tolerance", min=0.0, help="Quality gap (0-1) that still counts as a tie.")
    ] = 0.02,
    out: Annotated[Path, Opt("--out", help="Report folder; runs trained here go inside it.")] = Path("runs/bakeoff"),
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Decide with evidence: prompting vs few-shot vs RAG vs LoRA vs full fine-tuning on your data."""
    from tunesmith import console
    from tunesmith.data.sources import columns_flag
    from tunesmith.decide.bakeoff import run_bakeoff
    from tunesmith.decide.options import BakeoffOptions
    from tunesmith.decide.report import print_table, write_reports

    options = BakeoffOptions(
        train=train,
        test=test,
        columns=columns_flag(columns),
        instructions=instructions,
        docs=docs,
        k=k,
        methods=_methods(methods, docs),
        model=model,
        retriever=retriever,
        rag_examples=rag_examples,
        lora_run=lora_run,
        full_run=full_run,
        lora_rag_run=lora_rag_run,
        train_with_docs=train_with_docs,
        config=config,
        price_per_1k_input_tokens=price_1k,
        price_per_hour=price_hour,
        requests_per_month=requests_per_month,
        max_new_tokens=max_tokens,
        batch_size=batch_size,
        latency_samples=latency_samples,
        max_memory_gb=max_memory_gb,
        max_train_minutes=max_train_minutes,
        quality_tolerance=tolerance,
        trust_remote_code=trust_remote_code,
    )
    # Each method's numbers are written as soon as it is measured: a long bakeoff that is stopped keeps them.
    result = run_bakeoff(options, out, on_progress=lambda partial: write_reports(partial, out))
    paths = write_reports(result, out)
    print_table(result)
    console.info(f"report: {paths['html']}  (also {paths['markdown'].name}, {paths['json'].name})")
