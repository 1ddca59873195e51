"""The dataset doctor: what would spoil a fine-tune, found before any compute is spent.

    formats.parse_file   every malformed row, with its file, line and a stable code; for tool-calling rows
                         OpenAI's rules too (openai_chat.py: every call answered once, no result without
                         a call, called functions defined, arguments JSON that fits the parameter schema)
    dedup                duplicates, conflicting replies, near-duplicates, train/validation leakage
    special tokens       text that the tokenizer would read as the chat template's control tokens
    render.Renderer      every row rendered exactly as training renders it: lengths against max_len,
                         trained tokens against all tokens, rows that train nothing, replies that
                         never train a stop token, and the masking view (``show``)

Errors are what ``tunesmith train`` refuses to start on; warnings are worth a look but may be intended
(a duplicated row can be deliberate up-weighting). ``CheckReport.exit_code`` turns them into 0 / 1 / 2.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.data import dedup
from tunesmith.data.check_report import CheckReport, FileReport, Finding, MaskedExample, Span, finding
from tunesmith.data.formats import Conversation, ParsedFile, metadata_warning, parse_file
from tunesmith.data.render import IGNORE, Rendered, Renderer, RenderStats
from tunesmith.errors import DataError


# -- content --------------------------------------------------------------------------------------------
def _line(conv: Conversation) -> int:
    return int(conv.meta.get("line", 0))


_DUP_MESSAGES = {
    "duplicate": "duplicate of line {line}",
    "conflict": "same prompt as line {line} with a different reply",
    "near-duplicate": "near-duplicate of line {line} (similarity {sim:.2f})",
}


def _duplicate_findings(name: str, convs: Sequence[Conversation], threshold: float) -> list[Finding]:
    out = []
    for m in dedup.find_duplicates(convs, threshold):
        other = convs[m.other]
        msg = _DUP_MESSAGES[m.kind].format(line=_line(other), sim=m.similarity)
        out.append(finding(m.kind, name, _line(convs[m.index]), msg, other.source))
    return out


def _leak_findings(
    name: str, train: Sequence[Conversation], val: Sequence[Conversation], threshold: float
) -> list[Finding]:
    out = []
    for m in dedup.find_leakage(train, val, threshold):
        t = train[m.other]
        if m.kind == "leak":
            same = dedup.row_key(t) == dedup.row_key(val[m.index])
            msg = f"{'the same row' if same else 'the same prompt'} is in the training data ({t.source})"
        else:
            msg = f"near-duplicate of training row {t.source} (similarity {m.similarity:.2f})"
        out.append(finding(m.kind, name, _line(val[m.index]), msg, t.source))
    return out


def special_tokens(tokenizer: Any) -> list[str]:
    """Every special token's text: the tokenizer reads these strings in any message as control tokens."""
    found = {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special}
    found |= set(getattr(tokenizer, "all_special_tokens", []))
    return sorted((t for t in found if t.strip()), key=len, reverse=True)


def _special_token_findings(name: str, convs: Sequence[Conversation], tokens: list[str]) -> list[Finding]:
    if not tokens:
        return []
    pattern = re.compile("|".join(re.escape(t) for t in tokens))
    out = []
    for conv in convs:
        for i, m in enumerate(conv.messages, start=1):
            hit = pattern.search(m.text)
            if hit:
                what = "the reply" if m.role == "assistant" else f"the {m.role} message"
                msg = (
                    f"{what} (message {i}) contains the special token {hit.group()!r}: the tokenizer reads it "
                    "as a chat-template control token, not as text"
                )
                out.append(finding("special-tokens", name, _line(conv), msg))
                break
    return out


# -- tokens -----------------------------------------------------------------------------------------------
def _strip(e: Exception, conv: Conversation) -> str:
    return str(e).removeprefix(f"{conv.source}: ")


def _render(renderer: Renderer, conv: Conversation) -> Rendered | str:
    """The row as training renders it, or why the template cannot render it."""
    from jinja2 import TemplateError

    try:
        return renderer.render(conv)
    except DataError as e:  # the round-trip guard
        return _strip(e, conv)
    except (TemplateError, ValueError) as e:  # a template's own raise_exception, or text it cannot take
        reason = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
        return f"the chat template cannot render this row ({reason})"


def _apply_policy(
    renderer: Renderer, conv: Conversation, n: int, file: str
) -> tuple[Rendered | None, RenderStats, Finding]:
    """What training does with an overlong row; render_all is the one place that applies the policy."""
    max_len, line = renderer.max_len, _line(conv)
    try:
        rows, stats = renderer.render_all([conv])
    except DataError as e:  # overlong: error, so training would stop on this row
        return None, RenderStats(examples=1), Finding("error", "overlong", file, line, _strip(e, conv))
    head = f"{n} tokens, longer than max_len {max_len}"
    if stats.truncated:
        msg = f"{head}: cut to {max_len} tokens, so the end of the reply and its stop token are not trained"
        return rows[0], stats, finding("overlong", file, line, msg)
    if stats.dropped_untrained:
        msg = f"{head}: cut to {max_len} tokens, no trained token is left, so training drops the row"
        return None, stats, finding("untrained", file, line, msg)
    return None, stats, finding("overlong", file, line, f"{head}: training drops this row (overlong: drop)")


def _add(total: RenderStats, part: RenderStats) -> None:
    for key, value in part.as_dict().items():
        setattr(total, key, getattr(total, key) + value)


def _masked(renderer: Renderer, full: Rendered, kept: Rendered | None, note: str) -> MaskedExample:
    """The masking view of one row: the full rendering, trained where the kept (maybe cut) rendering is."""
    tok, ids, max_len = renderer.tokenizer, full.input_ids, renderer.max_len

    def text(part: list[int]) -> str:
        return tok.decode(part, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def key(k: int) -> tuple[bool, bool]:
        trained = kept is not None and k < len(kept.labels) and kept.labels[k] != IGNORE
        return trained, k >= max_len

    segments, spans = [], []
    for (trained, past), group in itertools.groupby(range(len(ids)), key=key):
        idx = list(group)
        segments.append((text([ids[k] for k in idx]), trained, past))
        if trained:
            first, last = ids[idx[0]], ids[idx[-1]]
            spans.append(Span(idx[0], idx[-1] + 1, text([first]), text([last]), last in renderer.stop_ids))
    stop = tok.eos_token if tok.eos_token_id is not None else None
    n_trained = kept.n_trained if kept is not None else 0
    cut = max_len if len(ids) > max_len else None
    return MaskedExample(full.source, len(ids), n_trained, segments, spans, stop, cut, note)


def _closes(r: Rendered, stop_ids: set[int]) -> bool:
    trained = [i for i, x in enumerate(r.labels) if x != IGNORE]
    return bool(trained) and r.input_ids[trained[-1]] in stop_ids


@dataclass
class _Tokens:
    findings: list[Finding] = field(default_factory=list)
    kept: list[tuple[Conversation, int]] = field(default_factory=list)  # rows training keeps, and their lengths
    shown: list[MaskedExample] = field(default_factory=list)


def _token_checks(renderer: Renderer, report: FileReport, convs: Sequence[Conversation], show: int) -> _Tokens:
    """Render every row as training would, filling ``report``'s statistics."""
    out = _Tokens()
    unclosed: list[Conversation] = []
    for conv in convs:
        full = _render(renderer, conv)
        if isinstance(full, str):
            out.findings.append(finding("template", report.path, _line(conv), full))
            continue
        n = len(full.input_ids)
        report.lengths.append(n)
        r: Rendered | None = full
        note = ""
        if n > renderer.max_len and not conv.text_only:  # (a long document is cut into pieces, not dropped)
            r, stats, found = _apply_policy(renderer, conv, n, report.path)
            _add(report.stats, stats)
            out.findings.append(found)
            note = found.message
        else:
            stats = RenderStats(examples=1, kept=1, tokens=n, trained_tokens=full.n_trained)
            stats.tool_rows = int(conv.uses_tools)
            _add(report.stats, stats)
        if r is not None:
            out.kept.append((conv, min(len(r.input_ids), renderer.max_len)))
            if r.n_trained == 0:
                out.findings.append(
                    finding("untrained", report.path, _line(conv), "no token of this row would be trained")
                )
            elif not r.truncated and not _closes(r, renderer.stop_ids):
                unclosed.append(conv)
        if len(out.shown) < show:
            out.shown.append(_masked(renderer, full, r, note))
    if unclosed:
        no_eos = renderer.tokenizer.eos_token_id is None
        why = "the tokenizer has no EOS token and the template" if no_eos else "the template"
        msg = (
            f"{len(unclosed)} row(s) train no stop token at the end of the reply ({why} closes no reply with "
            "one): the model would never learn to stop"
        )
        out.findings.append(finding("no-stop-token", report.path, _line(unclosed[0]), msg))
    return out


def _stale_fact_findings(path: str, convs: Sequence[Conversation], docs: Path) -> list[Finding]:
    """The drift check (``--docs``): rows whose replies state numbers, dates or names that the docs do not.
    The docs hold the current facts, so these are the rows that would teach stale ones."""
    from tunesmith.decide.retrieval import load_docs
    from tunesmith.errors import UserError
    from tunesmith.eval.facts import stale_replies

    loaded = load_docs(docs)
    if not loaded.chunks:
        raise UserError(loaded.problem or f"--docs {docs}: no text")
    out = []
    for conv, claims in zip(convs, stale_replies(convs, [c.text for c in loaded.chunks]), strict=True):
        if claims:
            said = ", ".join(repr(c) for c in claims[:4])
            msg = f"the reply states {said}, which --docs {docs} does not: the docs may hold a newer fact"
            out.append(finding("stale-fact", path, _line(conv), msg))
    return out


# -- the whole check ------------------------------------------------------------------------------------------
def _file_report(role: str, parsed: ParsedFile, max_len: int) -> tuple[FileReport, list[Finding]]:
    name = str(parsed.path)
    rows = len(parsed.examples) + sum(1 for p in parsed.problems if p.line)
    report = FileReport(role, name, parsed.format, rows, len(parsed.examples), max_len)
    found = [finding(p.code, p.file, p.line, p.message) for p in parsed.problems]
    if warning := metadata_warning(parsed):
        found.append(finding("metadata-keys", name, 0, warning.split(": ", 1)[1]))
    return report, found


def check_dataset(
    train: Path | str,
    val: Path | str | None = None,
    *,
    tokenizer: Any,
    max_len: int = 1024,
    overlong: str = "drop",
    train_on: str = "all",
    stop_token_ids: Iterable[int] = (),
    near_threshold: float = 0.8,
    show: int = 0,
    columns: dict[str, str] | None = None,
    docs: Path | str | None = None,
) -> CheckReport:
    """Run every check on a training file (and a validation file). Bad data never raises: it is reported.

    Only a file that cannot be opened at all raises (``DataError``), as everywhere else in tunesmith."""
    renderer = Renderer(tokenizer, max_len=max_len, overlong=overlong, train_on=train_on, stop_token_ids=stop_token_ids)
    specials = special_tokens(tokenizer)
    parsed = {"train": parse_file(train, columns=columns)}
    if val is not None:
        parsed["val"] = parse_file(val, columns=columns)
    settings = {"max_len": max_len, "overlong": overlong, "train_on": train_on, "near_threshold": near_threshold}
    report = CheckReport(settings, [], [], parsed=parsed, renderer=renderer)
    for role, p in parsed.items():
        file_report, found = _file_report(role, p, max_len)
        report.files.append(file_report)
        found += _duplicate_findings(file_report.path, p.examples, near_threshold)
        if role == "val":
            found += _leak_findings(file_report.path, parsed["train"].examples, p.examples, near_threshold)
        found += _special_token_findings(file_report.path, p.examples, specials)
        if docs is not None and role == "train":
            found += _stale_fact_findings(file_report.path, p.examples, Path(docs))
        tokens = _token_checks(renderer, file_report, p.examples, show if role == "train" else 0)
        found += tokens.findings
        report.findings += sorted(found, key=lambda f: (f.line, f.code))
        if role == "train":
            report.kept = [c for c, _ in tokens.kept]
            report.kept_lengths = [n for _, n in tokens.kept]
            report.examples = tokens.shown
        else:
            report.val_lengths = [n for _, n in tokens.kept]
    return report
