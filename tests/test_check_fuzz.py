"""Property tests: whatever bytes or JSON a file holds, the checker reports problems and never crashes."""

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunesmith.data.checks import check_dataset

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Text that reaches the renderer's corners: special tokens, lone surrogates, control characters, blanks.
texts = st.text(max_size=40) | st.sampled_from(["", " ", "\n", "<|im_end|>", "<|im_start|>assistant\n", "\ud800"])
roles = st.sampled_from(["system", "user", "assistant", "tool", ""]) | json_values
messages = st.fixed_dictionaries(
    {"role": roles, "content": texts | json_values},
    optional={"weight": st.sampled_from([0, 1, 2, 1.0, True, None]), "name": texts},
)
rows = st.one_of(
    json_values,
    st.fixed_dictionaries({"messages": st.lists(messages, max_size=5)}, optional={"id": json_values}),
    st.fixed_dictionaries({"prompt": texts | json_values, "completion": texts | json_values}),
    st.fixed_dictionaries(
        {"instruction": texts, "output": texts | json_values}, optional={"input": texts, "system": texts}
    ),
)


def run_check(tokenizer, content: bytes, val: bytes | None = None):
    with tempfile.TemporaryDirectory() as tmp:
        train = Path(tmp) / "train.jsonl"
        train.write_bytes(content)
        val_path = None
        if val is not None:
            val_path = Path(tmp) / "val.jsonl"
            val_path.write_bytes(val)
        report = check_dataset(train, val_path, tokenizer=tokenizer, max_len=48, stop_token_ids=[2], show=2)
        json.dumps(report.as_dict())  # the --format json document can always be written
        lines = content.count(b"\n") + 1
        assert all(0 <= f.line <= lines for f in report.findings if f.file == str(train))
        assert report.exit_code() in (0, 2) and report.exit_code(strict=True) in (0, 1, 2)
        return report


@FUZZ
@given(content=st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash(tokenizer, content: bytes) -> None:
    run_check(tokenizer, content)


@FUZZ
@given(train=st.lists(rows, max_size=8), val=st.lists(rows, max_size=4))
def test_arbitrary_json_rows_never_crash(tokenizer, train: list, val: list) -> None:
    encode = lambda rs: b"".join(json.dumps(r).encode() + b"\n" for r in rs)  # noqa: E731
    report = run_check(tokenizer, encode(train), encode(val))
    # Every row is accounted for, once: it parsed, or its line is reported as malformed.
    parsed = report.files[0]
    problems = [f for f in report.findings if f.file == parsed.path and f.code not in DOCTOR]
    if any(f.line == 0 for f in problems):  # a whole-file verdict (empty, one JSON array, ...) and nothing else
        assert len(problems) == 1 and parsed.rows == 0
    else:
        assert parsed.rows == len(train) and parsed.valid + len({f.line for f in problems}) == len(train)


# What the doctor adds on top of the parser; every other code is a malformed row or file.
DOCTOR = {"duplicate", "conflict", "near-duplicate", "leak", "near-leak", "special-tokens", "template"}
DOCTOR |= {"overlong", "untrained", "no-stop-token", "metadata-keys"}
