"""Training on several processes and nodes with torch.distributed: the process group, and the engines
(see engine.py) through which the one training loop (loop.py) runs a model with its peers. launch.py
starts the processes:

    tunesmith train --nproc N ...                       re-launches itself through torchrun, N local processes
    torchrun --nnodes .. --nproc-per-node .. -m tunesmith train ...   the same, from a cluster's launcher

* Backend: NCCL with one process per GPU where CUDA is present; gloo on CPU, where the cores are split
  between the local processes (torch.set_num_threads(cores // local processes)).
* LoRA -> DistributedDataParallel. Only trainable tensors take part (the frozen base is not even broadcast
  at start-up: every rank loaded the same file); the accumulation micro-batches of a step skip the
  all-reduce (``no_sync``), so it runs once per optimizer step.
* Full fine-tuning -> FSDP2 (``fully_shard``) per decoder layer, then a root module that computes the loss,
  so weights, gradients and AdamW state are split between the ranks; bf16 runs use a mixed-precision policy
  (bf16 compute, fp32 gradient reduction). Checkpoints are sharded (torch.distributed.checkpoint).
* Data: every rank computes the same plan (same seed) and deals each optimizer step's rows round-robin
  (rows are sorted by length, so the ranks get about the same number of tokens); each rank regroups its rows
  so that no forward pass is larger than the step's largest single-process micro-batch. No row is dropped
  or repeated: a step trains on exactly the single-process step's examples. The remainder (a step with fewer
  rows than ranks, or rows that do not divide evenly) leaves some ranks with fewer micro-batches: they run a
  placeholder forward/backward with weight 0, so every rank makes the same collective calls.
* Loss: every rank knows the step's global trained-token count from the plan, and each micro-batch
  contributes (summed token loss) / (global trained tokens); DDP *averages* gradients over the ranks, so
  there it is multiplied by the world size, while FSDP2 is set to sum them. The update equals the
  single-process one up to float summation order.
* Evaluation is sharded the same way and the sums are all-reduced; logging, metrics, the progress bar and
  LoRA checkpoints are rank 0's alone.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from tunesmith.runs import DistributedInfo
from tunesmith.train import checkpoint as ckpt
from tunesmith.train.batches import Row, _group_rows
from tunesmith.train.engine import Engine, ObjectiveModule
from tunesmith.train.loss import causal_lm_parts
from tunesmith.train.objectives import Objective, Sums
from tunesmith.train.objectives.sft import SFT

# A collective that waits longer than this raises instead of hanging. (A rank that *dies* is noticed by
# torchrun within a second, and it stops the others; this is for a rank that is stuck.) Generous, because
# rank 0 alone writes LoRA checkpoints and the data check while the others wait at their next collective.
DEFAULT_TIMEOUT_S = 300
TIMEOUT_ENV = "TUNESMITH_DIST_TIMEOUT"


# ---- the process group --------------------------------------------------------------------------------


def launched() -> bool:
    """True inside a process started by torchrun (or any launcher that sets the same variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1")) if launched() else 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def device() -> torch.device:
    """Where this process trains: its own GPU (LOCAL_RANK) when CUDA is present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def session() -> Iterator[None]:
    """Join the process group for the duration of a command; a no-op outside torchrun or with one process."""
    if env_world_size() <= 1:
        yield
        return
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if torch.cuda.is_available():
        torch.cuda.set_device(device())
        backend = "nccl"
    else:
        # N processes on one machine would each default to every core: split them instead.
        torch.set_num_threads(max(1, cpu_cores() // local_world))
        backend = "gloo"
    if int(os.environ["RANK"]) != 0:
        os.environ["TUNESMITH_QUIET"] = "1"  # rank 0 speaks for the job; warnings and errors still print
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    dist.init_process_group(backend, timeout=timeout)
    try:
        yield
    finally:
        dist.destroy_process_group()


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (pickled: for small things, a path or a LoRA checkpoint)."""
    if not active():
        return value
    box = [value if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ---- the engines for several processes ----------------------------------------------------------------


class PeerEngine(Engine):
    """What every engine with peers shares: dealing a step's rows, adding up, and checkpoints written by
    rank 0 (LoRA's are small, so rank 0 writes the single-process format, which any world size resumes)
    or by every rank (full fine-tuning's shards, which reshard on load)."""

    def __init__(self, model: Any, objective: Objective | None = None, *, sharded_checkpoints: bool = False) -> None:
        super().__init__(model, objective, sharded_checkpoints=sharded_checkpoints)
        self.rank, self.world = rank(), world()
        self.grad_scale = float(self.world)  # DDP averages gradients over the ranks; the update wants the sum

    def shard(self, micro_batches: list[list[Row]], lengths: list[int]) -> tuple[list[list[Row]], int]:
        rows = sorted((row for mb in micro_batches for row in mb), key=lambda r: (sum(lengths[i] for i in r), r))
        budget = max(len(mb) * max(sum(lengths[i] for i in row) for row in mb) for mb in micro_batches)
        per_rank = [_group_rows(rows[k :: self.world], lengths, budget) for k in range(self.world)]
        mine, most = per_rank[self.rank], max(len(p) for p in per_rank)
        return mine + [[rows[0]]] * (most - len(mine)), len(mine)

    def eval_shard(self, n_batches: int) -> tuple[list[int], int]:
        return list(range(self.rank, n_batches, self.world)), math.ceil(n_batches / self.world)

    def all_sum(self, *values: float) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def all_max(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def latest_checkpoint(self, folder: Path) -> Path | None:
        return broadcast_object(ckpt.latest_valid(folder) if self.is_main else None)

    def load_checkpoint(self, found: Path, params: dict[str, Any], optimizer: Any) -> dict[str, Any]:
        if ckpt.is_sharded(found):
            return ckpt.load_sharded(found, self.model, params, optimizer)
        if self.sharded_checkpoints:
            from tunesmith.errors import UserError

            raise UserError(f"{found.name} was written by an older single-process run: resume it with one process")
        return broadcast_object(ckpt.load_checkpoint(found) if self.is_main else None)

    def save_checkpoint(self, folder: Path, step: int, **kwargs: Any) -> None:
        if self.sharded_checkpoints:
            ckpt.save_sharded(folder, step, model=self.model, **kwargs)
        elif self.is_main:
            ckpt.save_checkpoint(folder, step, **kwargs)

    def save_pretrained(self, out: Path) -> None:
        if self.is_main:
            self.model.save_pretrained(out, safe_serialization=True)


class DDPEngine(PeerEngine):
    def __init__(self, model: Any, objective: Objective | None = None) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        super().__init__(model, objective)
        wrapper = ObjectiveModule(model, self.objective)
        frozen = [f"model.{n}" for n, p in model.named_parameters() if not p.requires_grad]
        frozen += [f"model.{n}" for n, _ in model.named_buffers()]
        DDP._set_params_and_buffers_to_ignore_for_model(wrapper, frozen)
        ids = [self.device.index] if self.device.type == "cuda" else None
        # Buffers (rotary tables) are constants computed alike everywhere: no broadcast before each forward.
        self.module = DDP(wrapper, device_ids=ids, forward_sync_buffers=False)

    def sync(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext() if last else self.module.no_sync()


class FSDPEngine(PeerEngine):
    def __init__(self, model: Any, bf16: bool, objective: Objective | None = None) -> None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(device().type, (world(),))
        policy = (
            MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            if bf16
            else MixedPrecisionPolicy()
        )
        decoder, _ = causal_lm_parts(model)
        for layer in decoder.layers:
            fully_shard(layer, mesh=mesh, mp_policy=policy)
        wrapper = ObjectiveModule(model, objective or SFT())
        # The root holds what no layer owns (embeddings, final norm, output head, tied or not).
        fully_shard(wrapper, mesh=mesh, mp_policy=policy)
        # Sum the gradients instead of averaging them: gloo has no AVG reduction (FSDP2 would ask for it in
        # fp32), and with a sum the loss needs no x world factor.
        for m in wrapper.modules():
            if isinstance(m, FSDPModule):
                m.set_force_sum_reduction_for_comms(True)
                m.set_gradient_divide_factor(1.0)
        super().__init__(model, wrapper.objective, sharded_checkpoints=True)
        self.module = wrapper
        self.grad_scale = 1.0

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Sums]:
        out = super().forward(batch)
        if not torch.is_grad_enabled():
            # The root keeps its weights gathered after a forward, for the backward that follows in training.
            # Evaluation has no backward: shard them again, or the model would hold plain (unsharded)
            # tensors where the optimizer and checkpoints expect its shards.
            self.module.reshard()
        return out

    def save_pretrained(self, out: Path) -> None:
        """Consolidate: gather every full tensor to rank 0's CPU (one collective), rank 0 writes."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.is_main:
            # Gathered tied weights (embeddings = output head) come back as two tensors: keep the one name
            # named_parameters() keeps, as an unsharded model's save would.
            names = {n for n, _ in self.model.named_parameters()} | {n for n, _ in self.model.named_buffers()}
            full = {k: v for k, v in full.items() if k in names}
            self.model.save_pretrained(out, state_dict=full, safe_serialization=True)


def make_engine(model: Any, method: str, bf16: bool, objective: Objective | None = None) -> Engine:
    """The engine for this process: DDP for LoRA and FSDP2 for full fine-tuning when there are peers."""
    model.to(device())
    if not active():
        return Engine(model, objective, sharded_checkpoints=method == "full")
    if method == "lora":
        return DDPEngine(model, objective)
    return FSDPEngine(model, bf16, objective)


def info() -> DistributedInfo | None:
    """How this run is spread, for run.json (None in one process)."""
    if not active():
        return None
    backend = dist.get_backend()
    threads = torch.get_num_threads() if backend == "gloo" else None
    return DistributedInfo(processes=world(), backend=backend, threads_per_process=threads)
