"""Dataset analysers behind `tunesmith advise`. Each one measures one property of (input, reply) pairs and
returns plain numbers; ``advise.py`` turns them into reasons with thresholds. No model is loaded.

- consistency: do the replies share one format? JSON objects with a stable key set, or recurring openings
  and closings (eval's style markers), and how much their lengths vary.
- factual load: how much of each reply is copied from its input or from the replies' shared vocabulary
  (labels, field names, stock phrases), against new names, numbers and dates that would have to be
  memorised.
- sufficiency: examples, unique examples, and coverage (the rarest label value of a JSON field; with test
  data, the share of test labels and input words that the training data has).
- volatility: inputs that occur more than once with different replies (the answers changed), and the span
  of the dates the rows mention, which turns the count of changes into changes per month.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from tunesmith.data.formats import Conversation
from tunesmith.eval import metrics as m

Pair = tuple[str, str]  # (input: the user text the reply answers, reply)

RECURRING_MIN_SHARE = 0.05  # a word in at least 5% of replies is shared vocabulary (a label, a stock phrase)
RECURRING_FACT_SHARE = 0.25  # ... a name, number or date only in at least 25% of them
_WORD = re.compile(r"\w+(?:[.,:/-]\w+)*")  # keeps 12.50, 2026-03-01, 10:30 and e-mail parts whole
_MONTHS = [
    *("january", "february", "march", "april", "may", "june"),
    *("july", "august", "september", "october", "november", "december"),
]
_ISO_DATE = re.compile(r"\b(19\d\d|20\d\d)-(0[1-9]|1[0-2])(?:-(0[1-9]|[12]\d|3[01]))?\b")
_TEXT_DATE = re.compile(r"\b(" + "|".join(_MONTHS) + r")\s+(?:\d{1,2}(?:st|nd|rd|th)?,?\s+)?(19\d\d|20\d\d)\b", re.I)


def pairs_of(examples: Sequence[Conversation]) -> list[Pair]:
    """(last user message, final assistant reply) of every conversation that ends on a reply."""
    out = []
    for c in examples:
        msgs = c.as_dicts()
        if msgs[-1]["role"] != "assistant" or c.text_only:  # (a document is no prompt and reply)
            continue
        user = next((x["content"] for x in reversed(msgs[:-1]) if x["role"] == "user"), "")
        out.append((user, msgs[-1]["content"]))
    return out


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _reply_text(reply: str) -> str:
    """What a reply says: for a JSON object its values (the keys are format, not content)."""
    obj = m.parse_json_object(reply)
    if obj is None:
        return reply
    return " ".join(str(v) for v in _values(obj))


def _values(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _values(v)]
    if isinstance(value, list):
        return [x for v in value for x in _values(v)]
    return [value]


# ---- consistency ----------------------------------------------------------------------------------------
@dataclass
class Consistency:
    json_share: float  # replies that are JSON objects
    key_stability: float  # of those, the share with the most common key set
    keys: list[str]  # that key set
    marker_share: float  # replies that use the recurring openings/closings (free text)
    markers: dict[str, list[str]]
    length_cv: float  # coefficient of variation of reply lengths in words
    regularity: float  # the share of replies that follow the dominant format: the headline number
    dominant: str  # that format, in words


def consistency(replies: Sequence[str]) -> Consistency:
    objects = [o for o in (m.parse_json_object(r) for r in replies) if o is not None]
    n = max(1, len(replies))
    json_share = len(objects) / n
    key_sets = Counter(tuple(o) for o in objects)
    keys, count = key_sets.most_common(1)[0] if key_sets else ((), 0)
    stability = count / len(objects) if objects else 0.0
    markers = m.find_style_markers(replies) if replies else m.StyleMarkers()
    marker_share = m.style_adherence(replies, markers) if markers else 0.0
    lengths = [len(r.split()) for r in replies]
    cv = statistics.pstdev(lengths) / statistics.mean(lengths) if lengths and statistics.mean(lengths) else 0.0
    json_regular = count / n  # JSON objects with the dominant key set, among all replies
    if json_regular >= marker_share and objects:
        dominant = f"JSON objects with the keys {', '.join(keys)}"
        regularity = json_regular
    else:
        parts = [f"opening '{markers.openings[0]}'"] if markers.openings else []
        parts += [f"closing '{markers.closings[0]}'"] if markers.closings else []
        dominant = " and ".join(parts) or "no recurring format"
        regularity = marker_share
    return Consistency(json_share, stability, list(keys), marker_share, markers.as_dict(), cv, regularity, dominant)


# ---- factual load ---------------------------------------------------------------------------------------
@dataclass
class FactualLoad:
    reply_tokens: int
    copied_share: float  # reply words that occur in the reply's own input
    recurring_share: float  # not copied, but shared vocabulary of the replies (labels, stock phrases)
    new_fact_share: float  # not copied, not shared: names, numbers and dates that must come from somewhere
    rows_with_new_facts: float  # replies with at least one such fact
    examples: list[str] = field(default_factory=list)  # a few of those facts, for the reader

    @property
    def derivable_share(self) -> float:
        return self.copied_share + self.recurring_share


def _is_fact(word: str, lowercase_words: set[str]) -> bool:
    """A number, a date, or a name: capitalised, and never written in lower case in the replies (so that
    a sentence's capitalised first word is not taken for a name)."""
    if any(ch.isdigit() for ch in word) or word.lower() in _MONTHS:
        return True
    return word[:1].isupper() and word.lower() not in lowercase_words


def factual_load(
    pairs: Sequence[Pair],
    recurring_min_share: float = RECURRING_MIN_SHARE,
    recurring_fact_share: float = RECURRING_FACT_SHARE,
) -> FactualLoad:
    replies = [_WORD.findall(_reply_text(r)) for _, r in pairs]
    lowercase_words = {w for words in replies for w in words if w.islower()}
    doc_freq = Counter(w for words in replies for w in {x.lower() for x in words})
    need = max(2, recurring_min_share * len(pairs))
    need_fact = max(2, recurring_fact_share * len(pairs))
    # A name or number counts as shared vocabulary only when it recurs a lot (a company name in every
    # sign-off); eight prices spread over thirty answers are still facts to look up.
    fact_like = {w for w in doc_freq if w not in lowercase_words or _is_fact(w, lowercase_words)}
    shared = {w for w, c in doc_freq.items() if c >= (need_fact if w in fact_like else need)}
    copied = recurring = facts = total = rows_with = 0
    examples: list[str] = []
    for (inp, _), words in zip(pairs, replies, strict=True):
        seen = {w.lower() for w in _WORD.findall(inp)}
        row_facts = 0
        for w in words:
            total += 1
            low = w.lower()
            if low in seen:
                copied += 1
            elif low in shared:
                recurring += 1
            elif _is_fact(w, lowercase_words):
                facts += 1
                row_facts += 1
                if len(examples) < 8 and w not in examples:
                    examples.append(w)
        rows_with += row_facts > 0
    t = max(1, total)
    return FactualLoad(total, copied / t, recurring / t, facts / t, rows_with / max(1, len(pairs)), examples)


# ---- sufficiency ----------------------------------------------------------------------------------------
@dataclass
class Sufficiency:
    examples: int
    unique: int  # distinct (input, reply) pairs, whitespace and case collapsed
    unique_inputs: int
    rarest_label: str | None  # "field=value" of the least-seen value of a JSON field with few values
    rarest_label_count: int | None
    test_label_coverage: float | None  # test references' label values that the training data has
    test_word_coverage: float | None  # distinct words of the test inputs that the training inputs have


def sufficiency(pairs: Sequence[Pair], test: Sequence[Pair] | None = None) -> Sufficiency:
    unique = len({(_norm(i), _norm(r)) for i, r in pairs})
    unique_inputs = len({_norm(i) for i, _ in pairs})
    replies = [r for _, r in pairs]
    schema = m.infer_schema(replies) if replies else None
    labels: dict[str, Counter] = {}
    if schema:
        enums = {k: p["enum"] for k, p in schema["properties"].items() if "enum" in p}
        for obj in (m.parse_json_object(r) for r in replies):
            for key in enums:
                if obj is not None and key in obj:
                    labels.setdefault(key, Counter())[obj[key]] += 1
    rarest = min(((f"{k}={v}", n) for k, c in labels.items() for v, n in c.items()), key=lambda x: x[1], default=None)
    label_cov = word_cov = None
    if test:
        test_labels = [
            (k, obj[k]) for obj in (m.parse_json_object(r) for _, r in test) if obj for k in labels if k in obj
        ]
        if test_labels:
            label_cov = sum(v in labels[k] for k, v in test_labels) / len(test_labels)
        train_words = {w.lower() for i, _ in pairs for w in _WORD.findall(i)}
        test_words = {w.lower() for i, _ in test for w in _WORD.findall(i)}
        word_cov = len(test_words & train_words) / len(test_words) if test_words else None
    return Sufficiency(
        len(pairs),
        unique,
        unique_inputs,
        rarest[0] if rarest else None,
        rarest[1] if rarest else None,
        label_cov,
        word_cov,
    )


# ---- volatility -----------------------------------------------------------------------------------------
@dataclass
class Volatility:
    repeated_inputs: int  # inputs that occur more than once
    changed_inputs: int  # of those, inputs whose replies differ
    answer_changes: int  # distinct replies beyond the first, summed over the repeated inputs
    drift: float  # changed_inputs / repeated_inputs (0 when nothing repeats)
    dated_rows: float  # rows that mention a date
    first_date: str | None
    last_date: str | None
    span_months: float | None
    changes_per_month: float | None  # answer_changes / span_months, when the rows carry dates


def _dates(text: str) -> list[date]:
    out = [date(int(y), int(mo), int(d or 1)) for y, mo, d in _ISO_DATE.findall(text)]
    out += [date(int(y), _MONTHS.index(mo.lower()) + 1, 1) for mo, y in _TEXT_DATE.findall(text)]
    return out


def volatility(pairs: Sequence[Pair]) -> Volatility:
    replies_of: dict[str, set[str]] = defaultdict(set)
    counts: Counter = Counter()
    for inp, reply in pairs:
        replies_of[_norm(_strip_dates(inp))].add(_norm(reply))
        counts[_norm(_strip_dates(inp))] += 1
    repeated = [k for k, c in counts.items() if c > 1]
    changed = [k for k in repeated if len(replies_of[k]) > 1]
    changes = sum(len(replies_of[k]) - 1 for k in changed)
    dates = [_dates(f"{i}\n{r}") for i, r in pairs]
    all_dates = sorted(d for ds in dates for d in ds)
    span = None
    if len(all_dates) >= 2:
        first, last = all_dates[0], all_dates[-1]
        span = max(1.0, (last.year - first.year) * 12 + (last.month - first.month) + (last.day - first.day) / 30)
    return Volatility(
        len(repeated),
        len(changed),
        changes,
        len(changed) / len(repeated) if repeated else 0.0,
        sum(bool(d) for d in dates) / max(1, len(pairs)),
        all_dates[0].isoformat() if all_dates else None,
        all_dates[-1].isoformat() if all_dates else None,
        span,
        changes / span if span and changes else None,
    )


def _strip_dates(text: str) -> str:
    """The same question asked on another day is the same question."""
    return _TEXT_DATE.sub(" ", _ISO_DATE.sub(" ", text))


@dataclass
class Analysis:
    consistency: Consistency
    factual: FactualLoad
    sufficiency: Sufficiency
    volatility: Volatility

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["factual"]["derivable_share"] = self.factual.derivable_share
        return out


def analyse(train: Sequence[Pair], test: Sequence[Pair] | None = None) -> Analysis:
    return Analysis(
        consistency([r for _, r in train]), factual_load(train), sufficiency(train, test), volatility(train)
    )
