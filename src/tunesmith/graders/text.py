"""``string_check`` and ``text_similarity``: scores computed in-process (no user code runs here).

Libraries: sacrebleu (bleu), rouge-score (rouge_1..5, rouge_l), nltk (gleu, meteor), the standard library's
difflib (fuzzy_match), and the all-MiniLM-L6-v2 model the dense retriever already ships (cosine). Each is
imported on first use so that importing the graders stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any


def string_check(operation: str, text: str, reference: str) -> float:
    """OpenAI's semantics: eq / ne compare exactly; like is 'reference occurs in input', ilike the same
    ignoring case."""
    if operation == "eq":
        return float(text == reference)
    if operation == "ne":
        return float(text != reference)
    if operation == "like":
        return float(reference in text)
    if operation == "ilike":
        return float(reference.lower() in text.lower())
    raise ValueError(f"unknown operation {operation!r}")  # spec validation refuses it first


def similarity(metric: str, texts: list[str], references: list[str]) -> list[float]:
    """The metric for each (input, reference) pair, each in [0, 1]. Batched because cosine embeds all the
    texts in one call."""
    if metric == "cosine":
        return _cosine(texts, references)
    score = _PAIR_METRICS[metric] if metric in _PAIR_METRICS else _rouge(metric)
    return [min(1.0, max(0.0, float(score(t, r)))) for t, r in zip(texts, references, strict=True)]


def _fuzzy(text: str, reference: str) -> float:
    import difflib

    return difflib.SequenceMatcher(None, text, reference, autojunk=False).ratio()


def _bleu(text: str, reference: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_bleu(text, [reference]).score / 100.0


def _gleu(text: str, reference: str) -> float:
    from nltk.translate.gleu_score import sentence_gleu

    return sentence_gleu([reference.split()], text.split())


class _NoSynonyms:
    """nltk's METEOR asks WordNet for synonyms; WordNet's data is a separate download that tunesmith does
    not fetch, so METEOR here matches exact words and Porter stems (its first two stages) only."""

    def synsets(self, *args: Any, **kwargs: Any) -> list:
        return []


def _meteor(text: str, reference: str) -> float:
    from nltk.translate.meteor_score import single_meteor_score

    if not text.split() or not reference.split():
        return float(text.split() == reference.split())
    return single_meteor_score(reference.split(), text.split(), wordnet=_NoSynonyms())


_PAIR_METRICS: dict[str, Callable[[str, str], float]] = {
    "fuzzy_match": _fuzzy,
    "bleu": _bleu,
    "gleu": _gleu,
    "meteor": _meteor,
}


def _rouge(metric: str) -> Callable[[str, str], float]:
    kind = "rougeL" if metric == "rouge_l" else "rouge" + metric.split("_")[1]
    scorer = _rouge_scorer(kind)
    return lambda text, reference: scorer.score(reference, text)[kind].fmeasure


@cache
def _rouge_scorer(kind: str) -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([kind], use_stemmer=False)


def _cosine(texts: list[str], references: list[str]) -> list[float]:
    model = _embedder()
    a = model.encode(texts, normalize_embeddings=True, convert_to_tensor=True)
    b = model.encode(references, normalize_embeddings=True, convert_to_tensor=True)
    # Unit vectors: the row-wise dot product is the cosine; clamp the rare negative to 0 like the others.
    return [max(0.0, min(1.0, float(x))) for x in (a * b).sum(dim=1).tolist()]


@cache
def _embedder() -> Any:
    """The dense retriever's embedding model (all-MiniLM-L6-v2), loaded once per process."""
    from tunesmith.decide.retrieval import minilm_path
    from tunesmith.errors import UserError

    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise UserError("the cosine metric needs sentence-transformers: pip install 'tunesmith[dense]'") from None
    return SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
