"""Padding-free passes (train/segments.py) must change only which positions run, never the maths."""

import pytest
import torch

from tunesmith.config import LoraSettings
from tunesmith.data.formats import read_examples
from tunesmith.data.render import Rendered, Renderer
from tunesmith.models.load import load_model
from tunesmith.models.lora import add_lora, randomize_b
from tunesmith.train import segments
from tunesmith.train.batches import collate_packed, pack_best_fit, padded_width
from tunesmith.train.loss import decoder_hidden, token_loss_sum


@pytest.fixture
def lora_model(tiny_model_dir):
    torch.manual_seed(0)
    model, tok, _ = load_model(str(tiny_model_dir))
    return randomize_b(add_lora(model, LoraSettings(r=4, dropout=0.0)), 0.05), tok


@pytest.fixture
def packed(lora_model, chat_file):
    """Rows of several examples each, of different lengths, so that rows end in padding."""
    _, tok = lora_model
    rows, _ = Renderer(tok).render_all(read_examples(chat_file).examples[:7])
    packed_rows = [[rows[i] for i in r] for r in pack_best_fit([len(e.input_ids) for e in rows], capacity=120)]
    assert any(len(r) > 1 for r in packed_rows)
    batch = collate_packed(packed_rows, tok.pad_token_id, multiple=32)
    assert (batch["segments"] < 0).any(), "the test needs padding to skip"
    return batch


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss, n = token_loss_sum(model, batch)
    loss.backward()
    return loss.detach(), n, {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


def test_padding_free_pass_equals_the_padded_one(lora_model, packed) -> None:
    model, _ = lora_model
    hidden_padded, _ = decoder_hidden(model, packed)
    loss_padded, n_padded, grads_padded = _loss_and_grads(model, packed)
    assert not segments.usable(model, packed)  # not enabled yet: the padded pass above

    assert segments.enable(model)
    assert segments.usable(model, packed)
    hidden_flat, _ = decoder_hidden(model, packed)
    loss_flat, n_flat, grads_flat = _loss_and_grads(model, packed)

    real = packed["segments"] >= 0
    torch.testing.assert_close(hidden_flat[real], hidden_padded[real], atol=1e-5, rtol=1e-5)
    assert (hidden_flat[~real] == 0).all()
    assert n_flat == n_padded
    torch.testing.assert_close(loss_flat, loss_padded, atol=1e-4, rtol=1e-6)
    for name, g in grads_padded.items():
        torch.testing.assert_close(grads_flat[name], g, atol=1e-5, rtol=1e-4, msg=name)


def test_flat_inputs_skip_the_padding_and_keep_examples_apart(packed) -> None:
    args, real, take = segments.flat_inputs(packed)
    n_real = int((packed["segments"] >= 0).sum())
    shared = int((packed["prefix_source"] >= 0).sum())
    assert shared > 0, "the chat template's system prompt starts every row: later examples take it"
    n = n_real - shared
    assert real.numel() == n_real and take.numel() == n_real
    total = args["input_ids"].shape[1]
    assert total % 32 == 0 and n < total <= n + 32  # the running tokens and a tail, to the width multiple
    ids, positions = args["input_ids"][0], args["position_ids"][0]
    # Every real token of the batch has a running token with its id and position.
    assert torch.equal(ids[take], packed["input_ids"].reshape(-1)[real])
    assert torch.equal(positions[take], packed["position_ids"].reshape(-1)[real])
    gather, back = args["segment_gather"], args["segment_back"]
    # Every running token comes back to itself from its example's row of the grid.
    assert torch.equal(gather.reshape(-1)[back], torch.arange(total))
    examples = int(sum(int(s.max()) + 1 for s in packed["segments"]))
    assert gather.shape[0] == examples + 1  # the tail of padding is one more
    # Each example's row of the grid reads its whole sequence in order, shared prefix first.
    grid_ids = packed["input_ids"].reshape(-1)
    for row in range(packed["segments"].shape[0]):
        for doc in range(int(packed["segments"][row].max()) + 1):
            own = grid_ids.view(packed["segments"].shape)[row][packed["segments"][row] == doc]
            assert any(torch.equal(ids[g[: own.numel()]], own) for g in gather), (row, doc)
    assert torch.equal(positions[gather[:, 0]], torch.zeros(gather.shape[0], dtype=torch.long))  # each starts at 0


def _rows_of(*sequences: list[int]) -> list[Rendered]:
    return [Rendered(list(ids), list(ids)) for ids in sequences]


def test_shared_prefixes_run_once_and_change_nothing(lora_model) -> None:
    """Examples that start alike take their leading tokens from one example's pass: the hidden states, loss and
    gradients are the padded pass's, for an example sharing the whole prefix, one sharing part of it, one
    sharing nothing, one that is all prefix (it keeps its last token), and one packed beside another."""
    model, _ = lora_model
    g = torch.Generator().manual_seed(1)
    prefix = torch.randint(3, 1000, (20,), generator=g).tolist()

    def rest(n: int) -> list[int]:
        return torch.randint(3, 1000, (n,), generator=g).tolist()

    a, b, c, d, e = _rows_of(prefix + rest(9), prefix + rest(30), prefix[:7] + rest(12), rest(15), prefix[:10])
    f = _rows_of(prefix + rest(4))[0]
    batch = collate_packed([[a], [b], [c, d], [e, f]], 0, multiple=32)
    source = batch["prefix_source"]
    # a computes; b and f take 20 tokens, c 7, e 9 (its last one runs), d none
    assert [int((source[r] >= 0).sum()) for r in range(4)] == [0, 20, 7, 9 + 20]
    hidden_padded, _ = decoder_hidden(model, batch)
    loss_padded, n_padded, grads_padded = _loss_and_grads(model, batch)
    assert segments.enable(model)
    args, _, _ = segments.flat_inputs(batch)
    assert args["input_ids"].shape[1] == padded_width(int((batch["segments"] >= 0).sum()) - 56 + 1, 32)
    hidden_flat, _ = decoder_hidden(model, batch)
    loss_flat, n_flat, grads_flat = _loss_and_grads(model, batch)
    real = batch["segments"] >= 0
    torch.testing.assert_close(hidden_flat[real], hidden_padded[real], atol=1e-5, rtol=1e-5)
    assert n_flat == n_padded
    torch.testing.assert_close(loss_flat, loss_padded, atol=1e-4, rtol=1e-6)
    for name, grad in grads_padded.items():
        torch.testing.assert_close(grads_flat[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_a_batch_without_a_common_start_shares_nothing() -> None:
    batch = collate_packed([_rows_of([5, 6, 7]), _rows_of([8, 6, 7]), _rows_of([9])], 0, multiple=8)
    assert (batch["prefix_source"] == -1).all()
    alone = collate_packed([_rows_of([5, 6, 7])], 0, multiple=8)
    assert (alone["prefix_source"] == -1).all()


def test_generation_is_unchanged_once_enabled(lora_model, tokenizer) -> None:
    """Calls without segments (generation, DPO's shared-prefix pairs) still run plain sdpa."""
    model, tok = lora_model
    ids = tok("The weather today is", return_tensors="pt")
    before = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert segments.enable(model)
    after = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert torch.equal(before, after)


def test_eager_attention_and_long_windows_stay_padded(tiny_model_dir, packed) -> None:
    model, _, _ = load_model(str(tiny_model_dir))
    model.config._attn_implementation = "eager"
    assert not segments.enable(model)
    model.config._attn_implementation = "sdpa"
    assert segments.enable(model)
    model.config.sliding_window = packed["input_ids"].shape[1] - 1  # shorter than the batch's rows
    assert not segments.usable(model, packed)


def _attend(monkeypatch, query, key, value, gather, back, matmul: bool, scale: float):
    monkeypatch.setattr(segments, "MATMUL_LONGEST", 256 if matmul else 0)
    q, k, v = (x.detach().clone().requires_grad_() for x in (query, key, value))
    out, _ = segments.attention(None, q, k, v, None, scaling=scale, segment_gather=gather, segment_back=back)
    out.backward(torch.ones_like(out) * torch.linspace(-1, 1, out.shape[-1]))
    return [t.detach().double() for t in (out, q.grad, k.grad, v.grad)]


@pytest.mark.parametrize("scale", [0.25, 0.2])  # a power of two goes onto the queries; another onto the scores
def test_matmul_attention_matches_the_flash_kernel(monkeypatch, scale: float) -> None:
    """bf16 examples up to MATMUL_LONGEST tokens attend by matmuls (grouped query heads, probabilities kept for
    backward): outputs and gradients as close to fp64 as the flash kernel's are, with the same heads in order."""
    torch.manual_seed(0)
    lengths = [37, 64, 5, 90]
    segment_ids = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])
    batch = {
        "input_ids": torch.zeros(1, sum(lengths), dtype=torch.long),
        "position_ids": torch.cat([torch.arange(n) for n in lengths])[None],
        "segments": segment_ids[None],
    }
    args, _, _ = segments.flat_inputs(batch)
    gather, back, total = args["segment_gather"], args["segment_back"], args["input_ids"].shape[1]
    # 3 query heads per key head; queries large enough for peaked attention, where scores rounded to bf16
    # (a bf16 matmul's output) lost ~1.5x the flash kernel's accuracy
    query, key, value = (torch.randn(1, h, total, 16) * s for h, s in ((6, 6.0), (2, 1.0), (2, 1.0)))
    exact = _attend(monkeypatch, query.double(), key.double(), value.double(), gather, back, False, scale)
    flash = _attend(monkeypatch, *(x.bfloat16() for x in (query, key, value)), gather, back, False, scale)
    matmul = _attend(monkeypatch, *(x.bfloat16() for x in (query, key, value)), gather, back, True, scale)
    for name, e, f, m in zip(("out", "dq", "dk", "dv"), exact, flash, matmul, strict=True):
        err_flash = float((f - e).norm() / e.norm())
        err_matmul = float((m - e).norm() / e.norm())
        assert err_matmul < 1.25 * err_flash, (name, err_matmul, err_flash)
