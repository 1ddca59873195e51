"""The verdict when facts change: "LoRA for the voice + retrieval for the facts" when the bakeoff measured it
winning on facts with the voice kept, and otherwise what it would take. Pure: a bakeoff.json in, a verdict
(the first line of `advise`) and its evidence out.

    facts change   --changes-per-month > 0, or the docs contradict training replies (the drift check)
    wins on facts  lora+rag's fact accuracy (else its share of claims found in the docs) is within
                   TOLERANCE of the best measured, above LoRA alone's by more than TOLERANCE, and at least
                   MIN_FACTS (a verdict does not rest on a method that states few current facts)
    voice kept     lora+rag's style adherence (the training replies' recurring openings and closings) is
                   within VOICE_MARGIN of LoRA alone's, and at least MIN_VOICE
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TOLERANCE = 0.02
VOICE_MARGIN = 0.10
MIN_VOICE = 0.5
MIN_FACTS = 0.5
VOICE_AND_FACTS = "LoRA for the voice + retrieval for the facts"


@dataclass
class FactsVerdict:
    method: str | None  # "lora+rag" when it won; else None (the measured winner stands)
    line: str  # the verdict, one line
    evidence: dict[str, Any] = field(default_factory=dict)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def fact_key(methods: dict[str, Any]) -> str | None:
    for key in ("fact_accuracy", "fact_consistency"):
        if any(key in m["metrics"] for m in methods.values()):
            return key
    return None


def facts_verdict(result: dict[str, Any], why_change: str, rerun: str) -> FactsVerdict:
    """``why_change``: why the facts count as changing (for the evidence); ``rerun``: the bakeoff command
    that would measure lora+rag, for the verdict that says what is missing."""
    methods = result["methods"]
    key = fact_key(methods)
    facts = {n: m["metrics"].get(key) for n, m in methods.items()} if key else {}
    voice = {n: m["metrics"].get("style_adherence") for n, m in methods.items()}
    evidence: dict[str, Any] = {"facts_change": why_change, "fact_metric": key, "facts": facts, "voice": voice}
    if "lora+rag" not in methods:
        line = f"{VOICE_AND_FACTS} was not measured; the facts change ({why_change}): measure it with {rerun}"
        return FactsVerdict(None, line, evidence)
    if key is None or facts.get("lora+rag") is None:
        line = (
            f"{VOICE_AND_FACTS} cannot be judged on facts: give the test rows a `fact` (or must_contain / "
            "must_not_contain) field, or give the bakeoff --docs to check replies against"
        )
        return FactsVerdict(None, line, evidence)
    best_name = max((n for n in facts if facts[n] is not None), key=lambda n: facts[n])
    lr, best = facts["lora+rag"], facts[best_name]
    lora_facts = facts.get("lora")
    wins = lr >= best - TOLERANCE and lr >= MIN_FACTS and (lora_facts is None or lr > lora_facts + TOLERANCE)
    lora_voice, lr_voice = voice.get("lora"), voice.get("lora+rag")
    kept = lr_voice is None or (lr_voice >= MIN_VOICE and (lora_voice is None or lr_voice >= lora_voice - VOICE_MARGIN))
    evidence.update(wins_on_facts=wins, voice_kept=kept)
    label = "fact accuracy" if key == "fact_accuracy" else "claims found in the docs"
    said = f"LoRA + retrieval {label} {_pct(lr)}" + "".join(
        f", {n} {_pct(v)}" for n, v in facts.items() if n != "lora+rag" and v is not None
    )
    voice_said = f"voice kept in {_pct(lr_voice)} of replies (LoRA alone {_pct(lora_voice)})"
    if wins and kept:
        return FactsVerdict("lora+rag", f"{VOICE_AND_FACTS} ({said}; {voice_said})", evidence)
    needs = []
    if not wins:
        than = f"as well as {best_name}, " if best_name != "lora+rag" else ""
        needs.append(
            f"LoRA + retrieval to state the current facts {than}in at least {MIN_FACTS:.0%} of replies and more "
            f"often than LoRA alone (it does in {_pct(lr)}): "
            "train its adapter on prompts with the doc chunks (bakeoff --train-with-docs, train --docs), fix the "
            "rows `tunesmith check --docs` lists, or a larger model"
        )
    if not kept:
        needs.append(f"it to keep the voice ({voice_said}): more epochs, or more rows in the voice")
    line = f"not yet {VOICE_AND_FACTS}: it would need " + "; and ".join(needs) + f" ({said})"
    return FactsVerdict(None, line, evidence)
