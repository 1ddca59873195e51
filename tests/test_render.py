import pytest

from tunesmith.data.formats import Conversation, Message
from tunesmith.data.render import IGNORE, Renderer
from tunesmith.errors import DataError


def conv(*pairs: tuple[str, str], weights: tuple[int, ...] | None = None, system: str | None = None) -> Conversation:
    msgs = [Message("system", system)] if system else []
    for i, (role, text) in enumerate(pairs):
        w = 1
        if weights is not None and role == "assistant":
            w = weights[sum(1 for r, _ in pairs[:i] if r == "assistant")]
        msgs.append(Message(role, text, w))
    return Conversation(msgs, source="t.jsonl:1")


def trained_text(tokenizer, rendered) -> str:
    return tokenizer.decode([t for t, lab in zip(rendered.input_ids, rendered.labels, strict=True) if lab != IGNORE])


def test_prompt_is_masked_and_eos_is_trained(tokenizer) -> None:
    r = Renderer(tokenizer).render(conv(("user", "Where is my order?"), ("assistant", "It ships today.")))
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert trained_text(tokenizer, r) == "It ships today.<|im_end|>"
    # Everything before the reply is -100, and so is the newline the template writes after <|im_end|>.
    first = next(i for i, lab in enumerate(r.labels) if lab != IGNORE)
    assert all(lab == IGNORE for lab in r.labels[:first])
    assert r.labels[-1] == IGNORE and r.input_ids[-2] == eos and r.labels[-2] == eos


def test_round_trip_prompt_equals_generation_prompt(tokenizer) -> None:
    renderer = Renderer(tokenizer)
    c = conv(("user", "Hi"), ("assistant", "Hello!"), ("user", "Bye"), ("assistant", "Goodbye."), system="Be brief.")
    r = renderer.render(c)
    for turn in (2, 4):  # indices of the assistant messages (after the system message)
        prompt = renderer.prompt_ids(c.messages[:turn])
        assert r.input_ids[: len(prompt)] == prompt
        assert r.labels[len(prompt)] != IGNORE, "the reply starts right where the generation prompt ends"
        assert all(lab == IGNORE for lab in r.labels[len(prompt) - 3 : len(prompt)])


def test_all_turns_vs_last_turn_and_weights(tokenizer) -> None:
    c = conv(("user", "a"), ("assistant", "first"), ("user", "b"), ("assistant", "second"))
    assert trained_text(tokenizer, Renderer(tokenizer).render(c)) == "first<|im_end|>second<|im_end|>"
    assert trained_text(tokenizer, Renderer(tokenizer, train_on="last").render(c)) == "second<|im_end|>"
    w = conv(("user", "a"), ("assistant", "first"), ("user", "b"), ("assistant", "second"), weights=(0, 1))
    assert trained_text(tokenizer, Renderer(tokenizer).render(w)) == "second<|im_end|>"


def test_trailing_user_turn_is_not_rendered(tokenizer) -> None:
    c = conv(("user", "a"), ("assistant", "first"), ("user", "dangling"))
    r = Renderer(tokenizer).render(c)
    assert "dangling" not in tokenizer.decode(r.input_ids)


def test_overlong_policies_are_counted(tokenizer) -> None:
    long = conv(("user", "word " * 200), ("assistant", "ok"))
    short = conv(("user", "hi"), ("assistant", "ok"))
    rows, stats = Renderer(tokenizer, max_len=64, overlong="drop").render_all([long, short])
    assert len(rows) == 1 and stats.dropped_overlong == 1 and stats.kept == 1
    # Truncating a row whose reply lies beyond max_len leaves nothing to train: dropped and counted.
    rows, stats = Renderer(tokenizer, max_len=64, overlong="truncate").render_all([long, short])
    assert stats.dropped_untrained == 1 and len(rows) == 1
    reply_cut = conv(("user", "hi"), ("assistant", "word " * 200))
    rows, stats = Renderer(tokenizer, max_len=64, overlong="truncate").render_all([reply_cut])
    assert stats.truncated == 1 and len(rows[0].input_ids) == 64 and rows[0].n_trained > 0
    with pytest.raises(DataError, match="longer than max_len 64"):
        Renderer(tokenizer, max_len=64, overlong="error").render_all([long])


def test_template_without_eos_gets_one_added(tokenizer) -> None:
    """A template that never closes replies with a stop token must still teach the model to stop."""
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] + ':\n' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant:\n' }}{% endif %}"
    )
    r = Renderer(tok).render(conv(("user", "hi"), ("assistant", "there")))
    assert r.input_ids[-1] == tok.eos_token_id and r.labels[-1] == tok.eos_token_id
    assert trained_text(tok, r) == "there" + tok.eos_token


def test_a_prompt_that_tokenizes_differently_trains_after_the_generation_prompt(tokenizer) -> None:
    """'assistant: ' + 'there' merges the space into ' there' when rendered whole, so the whole rendering's
    prompt is not what generation feeds the model. The row is trained from its own rendering instead: the
    generation prompt's exact tokens, then the reply's, and the renderer says so."""
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    renderer = Renderer(tok)
    c = conv(("user", "hi"), ("assistant", "there"))
    whole = renderer._ids(renderer.conversation_text(c.messages))
    prompt = renderer.prompt_ids(c.messages[:1])
    assert whole[: len(prompt)] != prompt, "the premise: rendered whole, the prompt tokenizes differently"
    r = renderer.render(c)
    assert r.input_ids[: len(prompt)] == prompt and all(lab == IGNORE for lab in r.labels[: len(prompt)])
    assert trained_text(tok, r) == "there" + tok.eos_token
    assert any("exactly the prompt generation shows" in n for n in renderer.notices)


def test_fallback_template_for_base_tokenizers(tokenizer) -> None:
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    r = Renderer(tok).render(conv(("user", "hi"), ("assistant", "there")))
    assert trained_text(tok, r).endswith(tok.eos_token)
