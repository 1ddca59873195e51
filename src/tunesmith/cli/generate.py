"""`tunesmith generate` and `tunesmith chat`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tunesmith.cli.options import ChatTemplate, TrustRemoteCode

Opt = typer.Option
PrecisionOption = Annotated[
    str,
    Opt(
        "--precision",
        help="Weights for generation: auto = bf16 where the hardware computes in bf16 natively, else fp32; "
        "fp32 keeps a merged adapter exact.",
    ),
]


def generate_command(
    model: Annotated[str, typer.Argument(help="Run folder, alias, HF folder, .gguf file or hub id.")],
    prompt: Annotated[list[str] | None, Opt("--prompt", "-p", help="A user message; repeat for a batch.")] = None,
    prompts_file: Annotated[Path | None, Opt("--prompts-file", help="One prompt per line.")] = None,
    system: Annotated[str | None, Opt("--system", help="A system message before each prompt.")] = None,
    max_tokens: Annotated[int, Opt("--max-tokens", min=1)] = 256,
    temperature: Annotated[float, Opt("--temperature", min=0.0, help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, Opt("--top-p", min=0.0, max=1.0)] = 1.0,
    batch_size: Annotated[int, Opt("--batch-size", min=1)] = 16,
    seed: Annotated[int | None, Opt("--seed")] = None,
    precision: PrecisionOption = "auto",
    trust_remote_code: TrustRemoteCode = False,
    chat_template: ChatTemplate = None,
) -> None:
    """Generate replies for one or many prompts, batched, with a KV cache."""
    from tunesmith import console
    from tunesmith.errors import UserError

    prompts = list(prompt or [])
    if prompts_file is not None:
        try:
            prompts += [ln for ln in prompts_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read prompts from {prompts_file}: {e}") from None
    if not prompts:
        raise UserError("nothing to generate: pass --prompt TEXT or --prompts-file FILE")
    from tunesmith.generate import GenerationStats, generate
    from tunesmith.models.load import inference_dtype, load_model

    lm, tok, _ = load_model(
        model, dtype=inference_dtype(precision), trust_remote_code=trust_remote_code, chat_template=chat_template
    )
    stats = GenerationStats()
    prefix = [{"role": "system", "content": system}] if system else []
    convs = [[*prefix, {"role": "user", "content": p}] for p in prompts]
    outs = generate(
        lm,
        tok,
        convs,
        max_new_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        seed=seed,
        stats=stats,
    )
    for p, o in zip(prompts, outs, strict=True):
        if len(prompts) > 1:
            console.console.print(f"> {p}", style="bold", markup=False, highlight=False)
        console.console.print(o.text, markup=False, highlight=False)
        if o.finish_reason == "length":
            console.note(f"stopped at --max-tokens {max_tokens}")
    if not console.quiet():  # timing goes to stderr, so stdout stays just the replies
        console.err_console.print(f"[dim]{len(prompts)} prompt(s): {stats.summary()}[/dim]")


def chat_command(
    model: Annotated[str, typer.Argument(help="Run folder, alias, HF folder, .gguf file or hub id.")],
    system: Annotated[str | None, Opt("--system")] = None,
    max_tokens: Annotated[int, Opt("--max-tokens", min=1)] = 256,
    temperature: Annotated[float, Opt("--temperature", min=0.0)] = 0.0,
    precision: PrecisionOption = "auto",
    trust_remote_code: TrustRemoteCode = False,
    chat_template: ChatTemplate = None,
) -> None:
    """Chat with a model in the terminal (empty line or Ctrl-D to quit, /reset to start over)."""
    from tunesmith import console
    from tunesmith.generate import generate
    from tunesmith.models.load import inference_dtype, load_model

    lm, tok, _ = load_model(
        model, dtype=inference_dtype(precision), trust_remote_code=trust_remote_code, chat_template=chat_template
    )
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    console.info("[dim]Chatting. Empty line or Ctrl-D quits; /reset starts over.[/dim]")
    while True:
        try:
            text = input("you> ")
        except EOFError:
            break
        if not text.strip():
            break
        if text.strip() == "/reset":
            history = history[:1] if system else []
            continue
        history.append({"role": "user", "content": text})
        reply = generate(lm, tok, [history], max_new_tokens=max_tokens, temperature=temperature)[0]
        history.append({"role": "assistant", "content": reply.text})
        console.console.print(f"bot> {reply.text}", markup=False, highlight=False)
