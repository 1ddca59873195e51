"""Chat replay (train/chat_replay.py): the base model's own answers to everyday prompts, mixed into the steps.

On the tiny model, whose random weights never finish an answer, the base answers come from the cache a real
base model would have written (the same key the run computes), so the whole path runs: cache, rendering with
the run's renderer, the mix, the logs and the reason."""

import json
from pathlib import Path

import pytest

from tunesmith.data.render import IGNORE, Rendered, Renderer
from tunesmith.eval import behaviour
from tunesmith.models.load import load_model, resolve
from tunesmith.train import chat_replay, general
from tunesmith.train.pipeline import run_training
from tunesmith.train.rundir import source_hash

from .conftest import chat_rows, write_jsonl
from .test_train_forgetting import make_cfg, metrics


def test_the_prompts_are_not_the_probes_questions() -> None:
    """The behavioural probe must measure answers the run never trained on: no probe question is replayed, and
    the probe's kinds of question are left out of the replayed prompts."""
    prompts = chat_replay.prompts()
    assert len(prompts) >= 100 and len(set(prompts)) == len(prompts)
    probe = [behaviour.normalize(it.prompt) for it in behaviour.load_items()]
    assert not {behaviour.normalize(p) for p in prompts} & set(probe)
    kinds = ["capital of", "opposite of", "plural of", "past tense", "spell the word", "complete the", "how many"]
    assert not [p for p in prompts if any(k in p.lower() for k in kinds)]
    assert all(any(k in q for q in probe) for k in ("capital of", "opposite of")), "the kinds are the probe's"


def rows_of(trained: list[int]) -> list[Rendered]:
    return [Rendered([1] * (n + 3), [IGNORE] * 3 + [1] * n, source=chat_replay.CHAT_SOURCE) for n in trained]


def test_whole_rows_keep_the_share_on_average() -> None:
    """Rows come whole (a reply cut in half would teach stopping mid-sentence), in order and cyclically, and
    what a step takes over its share is owed back by the next ones."""
    replay = chat_replay.ChatReplay(rows_of([30, 50, 20, 40]))
    state, taken, owed = None, [], 0
    for _ in range(40):
        rows, state = replay.take(25, state)
        taken += rows
        owed += 25
        assert 0 <= sum(r.n_trained for r in taken) - owed < 50  # never behind, never a whole row ahead
    assert [r.n_trained for r in taken[:6]] == [30, 50, 20, 40, 30, 50]
    assert replay.take(0, (1, -10)) == ([], (1, -10))


def test_both_takes_half_from_the_answers_and_half_from_the_prose(tokenizer) -> None:
    both = chat_replay.BothReplay(chat_replay.ChatReplay(rows_of([10, 10])), general.TextReplay([5, 6, 7] * 100))
    rows, state = both.take(41, None)
    chat = [r for r in rows if r.source == chat_replay.CHAT_SOURCE]
    text = [r for r in rows if r.source == general.REPLAY_SOURCE]
    assert sum(r.n_trained for r in chat) == 20 and sum(r.n_trained for r in text) == 21
    assert state == ((0, 0), 21)


def test_answers_render_as_chat_rows_that_train_only_the_reply(tokenizer) -> None:
    answers = [{"prompt": "Name three colors.", "reply": "Red, green and blue."}]
    (row,) = chat_replay.render_answers(Renderer(tokenizer), answers)
    assert row.source == chat_replay.CHAT_SOURCE and general.replay_tokens([row]) == row.n_trained
    trained = tokenizer.decode([t for t in row.labels if t != IGNORE])
    assert trained.startswith("Red, green and blue.") and "Name three" not in trained
    assert "Name three colors." in tokenizer.decode(row.input_ids)


def cache_answers(model_dir: Path, tokenizer, n: int) -> None:
    """What a base model that finished ``n`` answers leaves in the cache (the key the run computes)."""
    asked = chat_replay.prompts()
    path = chat_replay.cache_path(source_hash(resolve(str(model_dir))), tokenizer, asked)
    path.parent.mkdir(parents=True, exist_ok=True)
    answers = [{"prompt": p, "reply": f"A short answer number {i}."} for i, p in enumerate(asked[:n])]
    path.write_text(json.dumps({"model": "test", "answers": answers}))


@pytest.mark.parametrize("finished", [40, 3])
def test_a_run_replays_its_base_answers_or_falls_back_to_text(
    tiny_model_dir: Path, tmp_path: Path, tokenizer, finished: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    _, tok, _ = load_model(str(tiny_model_dir))
    cache_answers(tiny_model_dir, tok, finished)
    data = write_jsonl(tmp_path / "train.jsonl", chat_rows(32))
    result = run_training(make_cfg(tiny_model_dir, data, replay=0.2), tmp_path / "run")
    steps = [m for m in metrics(tmp_path / "run") if "loss" in m]
    replayed = sum(m.get("replay_tokens", 0) for m in steps)
    total = replayed + sum(m["trained_tokens"] for m in steps)
    assert abs(replayed / total - 0.2) < 0.05  # whole rows: the share holds over the run
    reason = next(r for r in result.reasons if r.startswith("replay: 20%"))
    if finished >= chat_replay.MIN_ROWS:
        assert f"base model's own answers to everyday prompts ({finished} of" in reason and "cached" in reason
    else:
        assert f"the base model finished {finished} of" in reason and general.REPLAY_TEXT in reason


def test_answers_are_generated_once_and_then_read_from_the_cache(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(chat_replay, "MAX_NEW_TOKENS", 4)  # the random model never stops: keep it short
    model, tok, _ = load_model(str(tiny_model_dir))
    answers, stored = chat_replay.base_answers(model, tok, "tiny")
    assert stored == "" and model.training is False  # (load_model gives an eval-mode model; left as found)
    assert chat_replay.base_answers(model, tok, "tiny") == (answers, "cached")
    assert chat_replay.base_answers(model, tok, "another model")[1] == ""  # keyed by the model: generated
    assert chat_replay.base_answers(model, tok, "tiny", reuse=False)[1] == ""  # (make_base_answers.py)


def test_answers_shipped_in_the_package_are_read_when_the_cache_has_none(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file under examples/base_answers named by the cache key is the model's answers on a new machine."""
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(chat_replay, "MAX_NEW_TOKENS", 4)  # (the key hashes it: set before the name is taken)
    model, tok, _ = load_model(str(tiny_model_dir))
    name = chat_replay.cache_path("tiny", tok, chat_replay.prompts()).name
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    answers = [{"prompt": "Hi", "reply": "Hello."}]
    (shipped / name).write_text(json.dumps({"model": "tiny", "answers": answers}))
    monkeypatch.setattr(chat_replay, "shipped_answers", lambda: shipped)
    assert chat_replay.base_answers(model, tok, "tiny") == (answers, "shipped")
    assert not (tmp_path / "home" / "replay").exists()  # read in place, nothing generated
    assert chat_replay.base_answers(model, tok, "another model")[1] == ""  # another key: generated


def test_the_kl_term_reads_the_base_answers_when_there_are_enough(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --kl-source chat, --kl-to-base holds the tuned model to its base on the base model's own everyday
    answers (prompt and reply, through the template), even with replay off; --kl-source text reads prose."""
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    _, tok, _ = load_model(str(tiny_model_dir))
    cache_answers(tiny_model_dir, tok, 40)
    data = write_jsonl(tmp_path / "train.jsonl", chat_rows(16))
    result = run_training(
        make_cfg(tiny_model_dir, data, replay=0.0, kl_to_base=0.5, kl_source="chat"), tmp_path / "run"
    )
    reason = next(r for r in result.reasons if r.startswith("KL to the base"))
    assert "base model's own answers to everyday prompts (40 of" in reason
    steps = [m for m in metrics(tmp_path / "run") if "loss" in m]
    assert steps[0]["kl_to_base"] == pytest.approx(0.0, abs=1e-6) and steps[-1]["kl_to_base"] > 0
    assert not any("replay_tokens" in m for m in steps)
    text = run_training(make_cfg(tiny_model_dir, data, replay=0.0, kl_to_base=0.5, kl_source="text"), tmp_path / "run2")
    assert any("general English prose" in r for r in text.reasons if r.startswith("KL to the base"))
