"""The output head's fused paths (loss.py): the cross-entropy and the KL to the base, computed chunk by chunk in
place. They must equal the plain autograd formulas, count argmax hits exactly (ties included), and allocate
nothing vocabulary-sized once warm: that reuse is what saves their time (BENCHMARKS.md)."""

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import profile

from tunesmith.train.loss import linear_cross_entropy, linear_kl_to_base, linear_log_softmax


def _largest_allocation(fn) -> int:
    """The largest single allocation of one call to ``fn`` (bytes), after a call that warms the scratch."""
    fn()
    with profile(profile_memory=True) as prof:
        fn()
    return max((e.cpu_memory_usage for e in prof.events()), default=0)


def test_argmax_hits_are_exact_where_logits_tie() -> None:
    """Two vocabulary rows alike: their logits tie at the maximum, and argmax takes the first. A target on
    the second is a miss, one on the first a hit, as ``argmax == target`` counts them."""
    head = torch.nn.Linear(4, 6, bias=False).double().requires_grad_(False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(6, 4, dtype=torch.float64))
        head.weight[5] = head.weight[2]
    hidden = torch.tensor([[0.0, 0.0, 3.0, 0.0]] * 2 + [[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    targets = torch.tensor([5, 2, 0])
    assert int((head(hidden).argmax(-1) == targets).sum()) == 2
    _, correct = linear_cross_entropy(head, hidden, targets, chunk_rows=2)
    assert correct == 2


@pytest.mark.parametrize("chunk_rows", [7, 64])
def test_fused_kl_equals_kl_div_of_log_softmax(chunk_rows: int) -> None:
    """fp64, so that only the formula could differ: KL(base || tuned) summed over rows, and its gradient
    (scaled, as the loop scales the term), against F.kl_div on F.log_softmax."""
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 300, bias=False).double().requires_grad_(False)
    base_hidden = torch.randn(50, 16, dtype=torch.float64)
    base = linear_log_softmax(head, base_hidden, torch.empty(50, 300, dtype=torch.float64))
    torch.testing.assert_close(base, F.log_softmax(head(base_hidden), -1), atol=1e-12, rtol=0)
    hidden = (base_hidden + 0.3 * torch.randn_like(base_hidden)).requires_grad_(True)
    plain = F.kl_div(F.log_softmax(head(hidden), -1), base, log_target=True, reduction="sum")
    import tunesmith.train.loss as loss_module

    fused = loss_module._FusedLinearKL.apply(hidden, head.weight, base, chunk_rows, torch.float64)
    torch.testing.assert_close(fused, plain, atol=1e-10, rtol=0)
    (g_fused,) = torch.autograd.grad(0.37 * fused, [hidden])
    (g_plain,) = torch.autograd.grad(0.37 * plain, [hidden])
    torch.testing.assert_close(g_fused, g_plain, atol=1e-12, rtol=0)
    assert float(plain.detach()) > 1e-3, "the two sides differ, so the KL is not trivially zero"


def test_fused_kl_under_bf16_autocast_matches_autograd() -> None:
    """Training's case: a frozen bf16 head, bf16 hidden states, autocast on; fp32 softmax on both sides."""
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 1000, bias=False).to(torch.bfloat16).requires_grad_(False)
    base_hidden = torch.randn(40, 64, dtype=torch.bfloat16)
    hidden = (base_hidden.float() + 0.3 * torch.randn(40, 64)).to(torch.bfloat16).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        base = linear_log_softmax(head, base_hidden)
        plain_base = F.log_softmax(head(base_hidden).float(), -1)
        fused = linear_kl_to_base(head, hidden, base)
        plain = F.kl_div(F.log_softmax(head(hidden).float(), -1), plain_base, log_target=True, reduction="sum")
    torch.testing.assert_close(base, plain_base, atol=1e-5, rtol=0)
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, plain, atol=1e-4, rtol=1e-4)
    (g_fused,) = torch.autograd.grad(fused, [hidden])
    (g_plain,) = torch.autograd.grad(plain, [hidden])
    assert g_fused.dtype == torch.bfloat16
    torch.testing.assert_close(g_fused.float(), g_plain.float(), atol=1e-4, rtol=1e-2)


def test_a_trainable_head_takes_autograd_for_the_kl() -> None:
    """A full fine-tune trains the head: the fused path (which computes no weight gradient) must not run."""
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False).double()
    base = F.log_softmax(torch.randn(5, 50, dtype=torch.float64), -1)
    kl = linear_kl_to_base(head, torch.randn(5, 8, dtype=torch.float64), base)
    (g_weight,) = torch.autograd.grad(kl, [head.weight])
    assert float(g_weight.abs().sum()) > 0


def test_the_fused_head_allocates_nothing_vocabulary_sized_once_warm() -> None:
    """Each chunk's logits, softmax and gradient live in reused scratch: a warm call's largest allocation is
    far below one chunk of logits (here 64 rows x 4096 x 4 bytes = 1 MB). Fresh tensors of that size per op
    were most of the head's time on a 2-vCPU Xeon."""
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 4096, bias=False).to(torch.bfloat16).requires_grad_(False)
    hidden = torch.randn(300, 64, dtype=torch.bfloat16, requires_grad=True)
    targets = torch.randint(0, 4096, (300,))
    chunk = 64 * 4096 * 4
    base = torch.empty(300, 4096)

    def cross_entropy() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            linear_cross_entropy(head, hidden, targets, chunk_rows=64)

    def kl() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            linear_log_softmax(head, hidden.detach(), base)
            linear_kl_to_base(head, hidden, base)

    assert _largest_allocation(cross_entropy) < chunk / 8
    assert _largest_allocation(kl) < chunk / 8
