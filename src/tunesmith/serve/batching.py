"""Continuous batching on one model: every request in flight advances one token per step, together.

    requests ──► pending queue ──► admit (prefill new rows as one left-padded batch, merge their KV cache
                                   into the running batch) ──► decode step for all rows ──► sample per row
                                   ──► emit text deltas ──► retire finished rows (drop them from the cache)

Why a step loop of our own rather than ``model.generate`` (which ``tunesmith.generate`` wraps): requests
join between steps instead of waiting for a whole batch to finish, each row keeps its own sampling
settings, seed (a per-row ``torch.Generator``, so a seeded reply does not depend on what it was batched
with), stop strings and token budget, and text streams out as it is made. Rows of different adapters
share a step: PEFT's ``adapter_names`` routes each row through its own LoRA weights ("__base__": none).
When an engine carries a single adapter it is merged into the weights instead (``merge_single_adapter``),
which saves the per-layer LoRA matmuls and the mixed-batch routing on every step; the first request for
anything else (the base model, or a second adapter attached later) unmerges it once, for good, so that
repeated merge/unmerge rounding never builds up in the weights.
Stop tokens and token counting follow ``tunesmith.generate``: the stop token counts as generated.

The engine runs on one thread that owns the model; other threads talk to it through queues only.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from tunesmith.data.render import Renderer
from tunesmith.kv_cache import GrowingLayer, cache_argument, growing_cache
from tunesmith.models.stops import stop_token_ids
from tunesmith.serve.requests import MIN_TEMPERATURE, Event, GenRequest, Sampling, holdback

log = logging.getLogger("tunesmith.serve")
BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass
class _Row:
    req: GenRequest
    gen: torch.Generator | None
    position: int  # position id of the next token fed to the model
    last: int = -1  # the token sampled last, fed at the next step
    tokens: list[int] = field(default_factory=list)  # generated, without the stop token
    sent: int = 0  # characters of text already emitted
    done: bool = False


def _left_pad(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    if n == 0:
        return t
    shape = list(t.shape)
    shape[dim] = n
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class Engine:
    def __init__(self, model: Any, tokenizer: Any, *, max_batch: int = 32, window_s: float = 0.005) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.stops = set(stop_token_ids(model, tokenizer))
        self.renderer = Renderer(tokenizer, stop_token_ids=self.stops)  # the same prompt format as training
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.stops)
        self.max_batch = max_batch
        self.window_s = window_s
        self.context = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
        self.device = next(model.parameters()).device
        self._cache_arg = cache_argument(model)
        # Fast tokenizers are not safe to share across threads while one encodes: one lock for both sides.
        self.tok_lock = threading.Lock()
        self.stats = {"steps": 0, "prefills": 0, "max_rows": 0, "generated_tokens": 0}
        # Requests submitted and not yet gone (finished, cancelled or failed): what admission counts. Kept
        # as one counter under a lock, because a request moving from the queue into a prefill is briefly in
        # neither, and a count of both would let a burst slip past the limit.
        self._in_flight = 0
        self._count_lock = threading.Lock()
        self._pending: queue.Queue[GenRequest] = queue.Queue()
        self._commands: queue.Queue[tuple[Callable[[], Any], concurrent.futures.Future]] = queue.Queue()
        self._rows: list[_Row] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self._mergeable = True
        self.merged: str | None = None  # the adapter folded into the weights (single-adapter fast path)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tunesmith-engine", daemon=True)

    # -- called from other threads ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def submit(self, req: GenRequest) -> None:
        with self._count_lock:
            self._in_flight += 1
        self._pending.put(req)

    def load(self) -> int:
        """Requests running or waiting: what the concurrency limit counts."""
        return self._in_flight

    def _release(self, n: int) -> None:
        if n:
            with self._count_lock:
                self._in_flight -= n

    def gauges(self) -> dict[str, int]:
        """What is held right now: all zero once every request is gone (no leaked rows or KV cache)."""
        rows, mask = self._rows, self._mask  # read once: the engine thread replaces them, never mutates
        cache = self._cache
        return {
            "in_flight": self._in_flight,
            "queued": self._pending.qsize(),
            "active_sequences": len(rows),
            "kv_cache_tokens": 0 if mask is None else int(mask.shape[0] * mask.shape[1]),
            "kv_cache_layers": 0 if cache is None else len(getattr(cache, "layers", ())),
        }

    def call(self, fn: Callable[[], Any], timeout: float = 600) -> Any:
        """Run ``fn`` on the engine thread between two steps (e.g. attaching an adapter) and return its result."""
        if not self._thread.is_alive():
            return fn()
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._commands.put((fn, fut))
        return fut.result(timeout=timeout)

    # -- the engine thread -------------------------------------------------------------------------------
    def merge_single_adapter(self) -> None:
        """Merge the engine's adapter into the weights when it is the only one (call on the engine thread)."""
        config = getattr(self.model, "peft_config", None)
        if self.merged is not None or not config or len(config) != 1:
            return
        name = next(iter(config))
        self.model.merge_adapter([name])
        self.merged = name

    def unmerge_adapter(self) -> None:
        """Take a merged adapter back out of the weights, so that rows can be routed per adapter again."""
        if self.merged is not None:
            self.model.unmerge_adapter()
            self.merged = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._run_commands()
            new = self._take()
            try:
                with torch.inference_mode():
                    if new:
                        self._prefill(new)
                    if self._rows:
                        self._step()
            except Exception:  # a failed forward must not take the server down: fail the rows in flight
                log.exception("generation failed; failing the requests in flight")
                admitted = {id(r.req) for r in self._rows}
                failed = [r.req for r in self._rows if not r.done] + [q for q in new if id(q) not in admitted]
                for q in failed:
                    q.emit(Event(q.index, finish_reason="error"))
                self._release(len(self._rows) + len(new) - len(admitted & {id(q) for q in new}))
                self._rows, self._cache, self._mask = [], None, None
        for r in self._rows:
            r.req.emit(Event(r.req.index, finish_reason="error"))

    def _run_commands(self) -> None:
        while True:
            try:
                fn, fut = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                fut.set_result(fn())
            except Exception as e:
                fut.set_exception(e)

    def _take(self) -> list[GenRequest]:
        """New requests to admit now. When idle, wait a few ms after the first so that a burst runs together."""
        room = self.max_batch - len(self._rows)
        if room <= 0 or (self._rows and not self._mergeable):
            return []
        new: list[GenRequest] = []
        if not self._rows:
            try:
                new.append(self._pending.get(timeout=0.05))
            except queue.Empty:
                return []
            deadline = time.monotonic() + self.window_s
            while len(new) < room and (left := deadline - time.monotonic()) > 0:
                try:
                    new.append(self._pending.get(timeout=left))
                except queue.Empty:
                    break
        while len(new) < room:
            try:
                new.append(self._pending.get_nowait())
            except queue.Empty:
                break
        live = [r for r in new if not r.cancelled]
        self._release(len(new) - len(live))  # their clients left while they waited: gone without a prefill
        return live

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any, rows: list[_Row]):
        extra: dict[str, Any] = {self._cache_arg: cache}
        if hasattr(self.model, "peft_config") and self.merged is None:  # merged: every row is that adapter
            extra["adapter_names"] = [r.req.adapter or BASE for r in rows]
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            use_cache=True,
            logits_to_keep=1,
            **extra,
        )
        return out.logits[:, -1, :].float(), getattr(out, self._cache_arg)

    def _prefill(self, reqs: list[GenRequest]) -> None:
        if self.merged is not None and any(r.adapter != self.merged for r in reqs):
            self.unmerge_adapter()  # rows already running keep their adapter through per-row routing
        width = max(len(r.prompt_ids) for r in reqs)
        ids = torch.full((len(reqs), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(reqs), width), dtype=torch.long)
        for i, r in enumerate(reqs):
            ids[i, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids)
            mask[i, width - len(r.prompt_ids) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        rows = [_Row(r, self._generator(r.sampling), position=len(r.prompt_ids)) for r in reqs]
        # The cache grows in place (kv_cache.py) instead of being re-copied by every step.
        logits, cache = self._forward(ids, mask, positions, growing_cache(self.model), rows)
        self.stats["prefills"] += 1
        if self._rows:
            self._merge(cache, mask.to(self.device))
        else:
            self._cache, self._mask = cache, mask.to(self.device)
            # Only plain full-attention caches can be padded and concatenated; others (sliding window,
            # hybrid) fall back to dynamic batching: new rows wait until the running batch drains.
            self._mergeable = all(type(layer) in (DynamicLayer, GrowingLayer) for layer in getattr(cache, "layers", []))
        self._rows += rows
        self.stats["max_rows"] = max(self.stats["max_rows"], len(self._rows))
        self._advance(rows, logits)
        self._retire()

    def _step(self) -> None:
        rows = self._rows
        ids = torch.tensor([[r.last] for r in rows], dtype=torch.long)
        positions = torch.tensor([[r.position] for r in rows], dtype=torch.long)
        mask = torch.cat([self._mask, self._mask.new_ones((len(rows), 1))], dim=1)
        logits, self._cache = self._forward(ids, mask, positions, self._cache, rows)
        self._mask = mask
        self.stats["steps"] += 1
        for r in rows:
            r.position += 1
        self._advance(rows, logits)
        self._retire()

    def _generator(self, s: Sampling) -> torch.Generator | None:
        if s.temperature < MIN_TEMPERATURE:
            return None
        gen = torch.Generator(device=self.device)
        if s.seed is None:
            gen.seed()
        else:
            gen.manual_seed(s.seed)
        return gen

    def _sample(self, rows: list[_Row], logits: torch.Tensor) -> list[int]:
        out = logits.argmax(-1).tolist()
        for i, r in enumerate(rows):
            s = r.req.sampling
            if s.temperature < MIN_TEMPERATURE:  # greedy is the limit; dividing by ~0 would give inf, then NaN
                continue
            probs = torch.softmax(logits[i] / s.temperature, dim=-1)
            if s.top_p < 1.0:
                sorted_p, order = probs.sort(descending=True)
                # Keep the smallest set of tokens whose mass reaches top_p (the first token always stays).
                drop = sorted_p.cumsum(-1) - sorted_p >= s.top_p
                drop[0] = False  # a top_p below float32's smallest value (5e-324) would otherwise drop every token
                sorted_p[drop] = 0.0
                probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
            out[i] = int(torch.multinomial(probs, 1, generator=r.gen))
        return out

    def _advance(self, rows: list[_Row], logits: torch.Tensor) -> None:
        for r, tok in zip(rows, self._sample(rows, logits), strict=True):
            if r.req.cancelled:
                r.done = True
                continue
            self.stats["generated_tokens"] += 1
            if tok in self.stops:
                self._finish(r, "stop", len(r.tokens) + 1, self._text(r))
                continue
            r.tokens.append(tok)
            r.last = tok
            text = self._text(r)
            s = r.req.sampling
            hits = [i for i in (text.find(x, max(0, r.sent - len(x))) for x in s.stop) if i >= 0]
            if hits:
                self._finish(r, "stop", len(r.tokens), text[: min(hits)])
            elif len(r.tokens) >= s.max_tokens or r.position + 1 >= self.context:
                self._finish(r, "length", len(r.tokens), text)
            else:
                end = len(text) - holdback(text, s.stop)
                if end > r.sent:
                    r.req.emit(Event(r.req.index, text[r.sent : end]))
                    r.sent = end

    def _text(self, r: _Row) -> str:
        with self.tok_lock:
            return self.tokenizer.decode(r.tokens, skip_special_tokens=True)

    def _finish(self, r: _Row, reason: str, n_tokens: int, text: str) -> None:
        r.done = True
        r.req.emit(Event(r.req.index, text[r.sent :], reason, len(r.req.prompt_ids), n_tokens))

    def _retire(self) -> None:
        keep = [i for i, r in enumerate(self._rows) if not r.done]
        if len(keep) == len(self._rows):
            return
        gone = len(self._rows) - len(keep)
        if not keep:
            self._rows, self._cache, self._mask = [], None, None
            self._release(gone)
            return
        idx = torch.tensor(keep, device=self.device)
        mask = self._mask[idx]
        # Columns that are padding for every remaining row carry nothing: drop them to keep steps cheap.
        first = int(mask.any(dim=0).nonzero()[0])
        self._mask = mask[:, first:]
        self._cache = self._rebuild([(k[idx, :, first:], v[idx, :, first:]) for k, v in self._kv(self._cache)])
        self._rows = [self._rows[i] for i in keep]
        self._release(gone)  # only now: if the rebuild failed, the error path releases these rows instead

    def _merge(self, cache: Any, mask: torch.Tensor) -> None:
        """Append a freshly prefilled batch to the running one, left-padding whichever is shorter."""
        la, lb = self._mask.shape[1], mask.shape[1]
        width = max(la, lb)
        layers = [
            (
                torch.cat([_left_pad(ka, width - la, 2), _left_pad(kb, width - lb, 2)]),
                torch.cat([_left_pad(va, width - la, 2), _left_pad(vb, width - lb, 2)]),
            )
            for (ka, va), (kb, vb) in zip(self._kv(self._cache), self._kv(cache), strict=True)
        ]
        self._cache = self._rebuild(layers)
        self._mask = torch.cat([_left_pad(self._mask, width - la, 1), _left_pad(mask, width - lb, 1)])

    @staticmethod
    def _kv(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _rebuild(self, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
        cache = growing_cache(self.model)
        if cache is None or len(cache.layers) != len(layers):
            return DynamicCache(ddp_cache_data=layers)
        for layer, (keys, values) in zip(cache.layers, layers, strict=True):
            layer.update(keys, values)
        return cache
