"""Which examples go into which optimizer step, and how a micro-batch becomes tensors.

The plan for the whole run is a pure function of (lengths, batch size, seed, epochs), so a resumed run
recomputes it and continues at the saved step: the data position is just the step number.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.data.render import IGNORE, Rendered

Row = list[int]  # indices of the examples that share one sequence (one, unless packed)


@dataclass(frozen=True)
class StepPlan:
    epoch: int
    micro_batches: list[list[Row]]  # one list of rows per forward pass

    @property
    def indices(self) -> list[int]:
        return [i for mb in self.micro_batches for row in mb for i in row]


def plan_steps(
    lengths: list[int],
    batch_size: int,
    micro_batch_size: int,
    epochs: int,
    seed: int,
    *,
    pack: bool = False,
    pack_len: int | None = None,
) -> list[StepPlan]:
    """Seeded shuffle per epoch; a partial last batch is kept, so no example is skipped.

    Packing and micro-batching change only the layout of a step, never which examples it trains on, so
    the update is the same with packing on or off (the loss is normalised per step, see loss.py).
    * unpacked: the step's examples sorted by length, cut into micro-batches of ``micro_batch_size``;
    * packed: the step's examples are packed best-fit-decreasing into rows of ``pack_len`` tokens
      (default: the step's longest example, so attention never spans more than padding would have),
      and rows are grouped into micro-batches of at most ``micro_batch_size`` x that many tokens."""
    steps: list[StepPlan] = []
    for epoch in range(epochs):
        order = list(range(len(lengths)))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        for start in range(0, len(order), batch_size):
            micro = layout_step(
                order[start : start + batch_size], lengths, micro_batch_size, pack=pack, pack_len=pack_len
            )
            steps.append(StepPlan(epoch, micro))
    return steps


def layout_step(
    indices: list[int], lengths: list[int], micro_batch_size: int, *, pack: bool = False, pack_len: int | None = None
) -> list[list[Row]]:
    """One step's examples as micro-batches of rows (see ``plan_steps``); the order of ``indices`` is not used."""
    chunk = sorted(indices, key=lambda i: (lengths[i], i))
    if not pack:
        rows = [[i] for i in chunk]
        return [rows[j : j + micro_batch_size] for j in range(0, len(rows), micro_batch_size)]
    longest = max(lengths[i] for i in chunk)
    packed = pack_best_fit([lengths[i] for i in chunk], pack_len or longest)
    rows = sorted(([chunk[k] for k in r] for r in packed), key=lambda r: (sum(lengths[i] for i in r), r))
    return _group_rows(rows, lengths, budget=micro_batch_size * max(longest, pack_len or 0))


def _group_rows(rows: list[Row], lengths: list[int], budget: int) -> list[list[Row]]:
    """Consecutive rows (sorted by length) per micro-batch while rows x widest row stays within budget."""
    groups: list[list[Row]] = []
    for row in rows:
        width = sum(lengths[i] for i in row)
        if groups and (len(groups[-1]) + 1) * max(width, *(sum(lengths[i] for i in r) for r in groups[-1])) <= budget:
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def fixed_sample(rows: list[Any], n: int, seed: int) -> list[Any]:
    """``n`` of ``rows``, the same ones on every call with the same seed (and on resume), in their order:
    validation on a sample compares like with like from one evaluation to the next."""
    if n >= len(rows):
        return rows
    keep = sorted(random.Random(seed * 7_919 + len(rows)).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


# SFT pads a micro-batch's width up to a multiple of this many tokens. On a CPU every distinct matmul shape
# makes oneDNN build its own kernels and keep them, with their buffers, in its primitive cache; with a new
# width at nearly every step the cache, and the process's memory, grew all run. On the 160-row short set
# (2-vCPU AMX Xeon, 2026-12-06; BENCHMARKS.md) a multiple of 32 cut the peak RSS 3.92 -> 3.12 GB and raised
# the loop's throughput 346 -> 386 tok/s (medians of 2), for ~9% more positions; 16 kept more shapes
# (3.36 GB), 64 padded more (3.48 GB).
WIDTH_MULTIPLE = 32


def padded_width(width: int, multiple: int = 1) -> int:
    """``width`` rounded up to a multiple of ``multiple``."""
    return -(-width // multiple) * multiple


def to_batch(rows: list[list[Rendered]], pad_id: int, multiple: int = 1) -> dict[str, torch.Tensor]:
    """Tensors for one micro-batch of rows of one example or several, always in the packed layout (a 4-D mask,
    position ids); ``multiple``: the width is padded up to a multiple of it. One layout for every pass: a
    compiled decoder layer compiles a variant of itself per kind of mask it is handed (a 2-D mask turned
    4-D by transformers, none where a row has no padding, ours), and the training, validation, probe and KL
    passes of one run mixed all three."""
    return collate_packed(rows, pad_id, multiple)


def collate(examples: list[Rendered], pad_id: int, multiple: int = 1) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch (to a multiple of ``multiple`` positions); padding is masked out of attention
    and out of the labels."""
    width = padded_width(max(len(e.input_ids) for e in examples), multiple)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def pack_best_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """Best-fit-decreasing bin packing: longest first, each into the fullest row it still fits.

    Returns rows of example indices (each row's total length <= capacity, except a single example
    longer than capacity, which gets a row of its own). Ties break on the index, so it is deterministic."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        fits = [r for r in range(len(rows)) if room[r] >= lengths[i]]
        if fits:
            best = min(fits, key=lambda r: (room[r], r))
            rows[best].append(i)
            room[best] -= lengths[i]
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def collate_packed(rows: list[list[Rendered]], pad_id: int, multiple: int = 1) -> dict[str, torch.Tensor]:
    """Several examples per row, each attending only to itself.

    * position ids restart at 0 for every example, as if it were alone;
    * a 4-D boolean mask (True = may attend) is block-diagonal and causal, so no token sees another
      example; padding at the end of a row only sees itself (a row of all -inf would give NaN);
    * the first label of every example is -100, so no example is trained to predict the next one."""
    width = padded_width(max(sum(len(e.input_ids) for e in row) for row in rows), multiple)
    n = len(rows)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE, dtype=torch.long)
    positions = torch.zeros((n, width), dtype=torch.long)
    doc = torch.full((n, width), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        offset = 0
        for d, e in enumerate(row):
            k = len(e.input_ids)
            ids[r, offset : offset + k] = torch.tensor(e.input_ids)
            labels[r, offset : offset + k] = torch.tensor(e.labels)
            labels[r, offset] = IGNORE
            positions[r, offset : offset + k] = torch.arange(k)
            doc[r, offset : offset + k] = d
            offset += k
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    same_doc = (doc[:, :, None] == doc[:, None, :]) & (doc[:, :, None] >= 0)
    mask = (same_doc & causal) | torch.eye(width, dtype=torch.bool)
    # ``segments`` (each token's example in its row, -1 for padding) lets the decoder skip the padding, and
    # ``prefix_source`` the leading tokens examples share (segments.py); the mask serves a model that cannot.
    batch = {"input_ids": ids, "labels": labels, "position_ids": positions, "attention_mask": mask[:, None]}
    return {**batch, "segments": doc, "prefix_source": _prefix_source(rows, width)}


# Examples whose leading tokens could come from another example's pass: the first few of a micro-batch are
# tried as the one they come from (a chat template's system prompt is the same in every row).
PREFIX_OWNERS_TRIED = 8


def _prefix_source(rows: list[list[Rendered]], width: int) -> torch.Tensor:
    """rows x width: for each token that another example of the micro-batch already has at the same place
    (same leading tokens, so the same position ids and, causally, the same hidden states), the flat index
    (row x width + column) of that token in the one example that computes them; -1 for every other position.

    One example (of the first ``PREFIX_OWNERS_TRIED``, the one sharing the most) computes its whole sequence;
    every other one takes the longest prefix it shares with it, keeping at least its own last token. The
    demo's chat template starts every row with the same 24 tokens of system prompt: 15% of a short row."""
    starts, examples = [], []
    for r, row in enumerate(rows):
        offset = 0
        for e in row:
            starts.append(r * width + offset)
            examples.append(e.input_ids)
            offset += len(e.input_ids)
    source = torch.full((len(rows) * width,), -1, dtype=torch.long)
    if len(examples) < 2:
        return source.view(len(rows), width)

    def shared(owner: int, i: int) -> int:
        return 0 if i == owner else min(common_prefix(examples[owner], examples[i]), len(examples[i]) - 1)

    candidates = range(min(PREFIX_OWNERS_TRIED, len(examples)))
    owner = max(candidates, key=lambda o: (sum(shared(o, i) for i in range(len(examples))), -o))
    for i, start in enumerate(starts):
        if k := shared(owner, i):
            source[start : start + k] = torch.arange(starts[owner], starts[owner] + k)
    return source.view(len(rows), width)


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two sequences share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def collate_shared_prefix(pairs: list[tuple[Rendered, Rendered]], pad_id: int) -> dict[str, torch.Tensor]:
    """Two sequences that start alike (a preference pair: one prompt, two replies) in one row, their common
    prefix computed once: ``prefix + rest of the first + rest of the second``.

    * the second's rest has the position ids it would have alone (continuing from the prefix) and attends to
      the prefix and to itself, never to the first's rest, so every hidden state equals the one its own
      sequence would give;
    * the trained positions are listed explicitly (``target_index`` into the flattened rows, ``target_id``,
      ``target_seq``: 0..n-1 the first of each pair, n..2n-1 the second), because the prediction of the first
      token after the prefix comes from the shared last prefix position, whose next token differs per side.

    On the demo's pairs the prefix is 83% of a sequence, so a pair costs 59% of the tokens of two rows."""
    n = len(pairs)
    layouts = []
    for first, second in pairs:
        k = common_prefix(first.input_ids, second.input_ids)
        layouts.append((k, first.input_ids + second.input_ids[k:]))
    width = max(len(ids) for _, ids in layouts)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    positions = torch.zeros((n, width), dtype=torch.long)
    seg = torch.full((n, width), -1, dtype=torch.long)  # 0 prefix, 1 first's rest, 2 second's rest, -1 padding
    index: list[int] = []
    target: list[int] = []
    owner: list[int] = []
    for r, ((first, second), (k, row_ids)) in enumerate(zip(pairs, layouts, strict=True)):
        n1, n2 = len(first.input_ids), len(second.input_ids)
        ids[r, : len(row_ids)] = torch.tensor(row_ids)
        positions[r, :n1] = torch.arange(n1)
        positions[r, n1 : n1 + n2 - k] = torch.arange(k, n2)
        seg[r, :k], seg[r, k:n1], seg[r, n1 : n1 + n2 - k] = 0, 1, 2
        # where each side's token t sits in the row
        at = (list(range(n1)), list(range(k)) + list(range(n1, n1 + n2 - k)))
        for side, e in enumerate((first, second)):
            for t in range(len(e.input_ids) - 1):
                if e.labels[t + 1] != IGNORE:
                    index.append(r * width + at[side][t])
                    target.append(e.labels[t + 1])
                    owner.append(side * n + r)
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    visible = (seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None])
    mask = (visible & causal & (seg[:, :, None] >= 0)) | torch.eye(width, dtype=torch.bool)
    return {
        "input_ids": ids,
        "position_ids": positions,
        "attention_mask": mask[:, None],
        "target_index": torch.tensor(index, dtype=torch.long),
        "target_id": torch.tensor(target, dtype=torch.long),
        "target_seq": torch.tensor(owner, dtype=torch.long),
        "n_seqs": torch.tensor(2 * n),
    }
