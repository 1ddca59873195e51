"""What ``tunesmith check`` reports, as data: findings (error or warning, with a stable code), per-file
token statistics (lengths, percentiles, the histogram), and rows shown as training sees them. The checks
that fill these in are in ``data/checks.py``; ``data/check_view.py`` prints and renders them."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from tunesmith.data.formats import Conversation, ParsedFile
from tunesmith.data.render import Renderer, RenderStats

# Everything else (every malformed row, leakage, special tokens, a reply that never trains a stop token,
# a template that cannot render a row) is an error.
WARNINGS = frozenset(
    {"duplicate", "conflict", "near-duplicate", "near-leak", "overlong", "untrained", "metadata-keys", "stale-fact"}
)
HISTOGRAM_BINS = 8


@dataclass(frozen=True)
class Finding:
    severity: str  # error | warning
    code: str  # stable name of the check, e.g. "unknown-role", "near-duplicate" (README lists them all)
    file: str
    line: int  # 1-based; 0 for the whole file
    message: str
    related: str | None = None  # "file:line" of the other row of a duplicate or a leak

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def finding(code: str, file: str, line: int, message: str, related: str | None = None) -> Finding:
    return Finding("warning" if code in WARNINGS else "error", code, file, line, message, related)


@dataclass
class FileReport:
    role: str  # train | val
    path: str
    format: str | None
    rows: int  # non-blank lines
    valid: int  # rows that parsed
    max_len: int
    stats: RenderStats = field(default_factory=RenderStats)
    lengths: list[int] = field(default_factory=list)  # rendered length of every row, before the overlong policy

    def percentile(self, q: float) -> int:
        ordered = sorted(self.lengths)
        return ordered[int(q * (len(ordered) - 1))] if ordered else 0

    def histogram(self) -> list[dict[str, Any]]:
        """Equal-width bins up to max_len, and one bin for the rows the overlong policy acts on."""
        width = max(1, -(-self.max_len // HISTOGRAM_BINS))
        bins = [
            {"lo": k * width + 1, "hi": min((k + 1) * width, self.max_len), "count": 0} for k in range(HISTOGRAM_BINS)
        ]
        bins[0]["lo"] = 0
        over = {"lo": self.max_len + 1, "hi": None, "count": 0}
        for n in self.lengths:
            if n > self.max_len:
                over["count"] += 1
            else:
                bins[min(HISTOGRAM_BINS - 1, max(0, n - 1) // width)]["count"] += 1
        return [*bins, over]

    def as_dict(self) -> dict[str, Any]:
        stats = self.stats.as_dict()
        return {
            "role": self.role,
            "path": self.path,
            "format": self.format,
            "rows": self.rows,
            "valid_rows": self.valid,
            "tokens": {
                **stats,
                "trained_share": round(stats["trained_tokens"] / stats["tokens"], 4) if stats["tokens"] else 0.0,
                "length_p50": self.percentile(0.5),
                "length_p95": self.percentile(0.95),
                "length_max": max(self.lengths, default=0),
                "histogram": self.histogram(),
            },
        }


@dataclass
class Span:
    start: int  # first trained token (0-based)
    end: int  # one past the last trained token
    first: str  # the first and last trained tokens, as text
    last: str
    closes: bool  # the last trained token is a stop token (EOS / end-of-turn)


@dataclass
class MaskedExample:
    """One row as training sees it: text segments, trained or not, and where the loss starts and ends.

    ``segments`` cover the whole rendering, (text, trained, past max_len); only tokens that training really
    trains count as trained, so a row that the overlong policy drops shows none."""

    source: str
    tokens: int
    trained: int
    segments: list[tuple[str, bool, bool]]
    spans: list[Span]
    stop_token: str | None
    max_len: int | None = None  # set when the row is longer than max_len
    note: str = ""

    @property
    def stop_trained(self) -> bool:
        return bool(self.spans) and self.spans[-1].closes

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["segments"] = [{"text": t, "trained": tr, "past_max_len": past} for t, tr, past in self.segments]
        d["stop_trained"] = self.stop_trained
        return d


@dataclass
class CheckReport:
    settings: dict[str, Any]
    files: list[FileReport]
    findings: list[Finding]
    examples: list[MaskedExample] = field(default_factory=list)
    # The training rows that survive the overlong policy and their lengths, for the pre-flight estimate.
    kept: list[Conversation] = field(default_factory=list, repr=False)
    kept_lengths: list[int] = field(default_factory=list, repr=False)
    val_lengths: list[int] = field(default_factory=list, repr=False)
    # What the check parsed and rendered, handed to training so that a run parses and renders once:
    # {"train": ParsedFile, "val": ParsedFile} and the Renderer (with its renderings).
    parsed: dict[str, ParsedFile] = field(default_factory=dict, repr=False)
    renderer: Renderer | None = field(default=None, repr=False)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def exit_code(self, strict: bool = False) -> int:
        if self.errors:
            return 2
        return 1 if strict and self.warnings else 0

    def counts(self) -> dict[str, int]:
        return dict(Counter(f.code for f in self.findings))

    def as_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "counts": self.counts(),
            "files": [f.as_dict() for f in self.files],
            "findings": [f.as_dict() for f in self.findings],
            "examples": [e.as_dict() for e in self.examples],
        }
