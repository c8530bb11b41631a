"""Data parallelism for the one dictionary training loop, on ``torch.distributed`` (gloo on CPU, NCCL on GPUs).

Under an initialised process group (``torchrun --nproc_per_node N``) :func:`train_dictionary` keeps every
rank's SAE identical, so the run equals one process on the same global batch:

- each rank trains on its own contiguous ``batch_size / N`` rows of every global batch;
- gradients are summed over ranks in one flat all-reduce and divided by ``N`` (the losses are means over
  rows, so this is the global batch's gradient) before the decoder projection, clipping and Adam, which
  then do the same arithmetic on every rank;
- which features fired is OR-ed over ranks, so the dead-feature counters agree;
- resampling runs on rank 0 (from the global batches, as one process would) and its weights and Adam
  moments are broadcast;
- only rank 0 writes checkpoints; they hold the global state, so a run resumes on any number of ranks.

Gradients are all-reduced by hand rather than through ``DistributedDataParallel``: the loop owns the step
(the decoder projection sits between backward and Adam), and one flat all-reduce is exact and simple.
Losses that are not means of per-row terms (BatchTopK's batch-wide top-k, TopK's auxiliary loss normalised
by the batch's variance) see each rank's shard, as in every data-parallel trainer.

With no process group, or a group of one, every method here is a no-op and the loop is the plain one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class Ranks:
    """This process's place in the process group (``rank 0 of 1`` without one)."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> Ranks:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs and writes."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise ValueError(f"batch_size={batch_size} is the global batch and must split evenly over the "
                             f"world size {self.world_size}; use a multiple of {self.world_size}, e.g. "
                             f"{batch_size // self.world_size * self.world_size or self.world_size}, or another "
                             "number of processes")

    def batch(self, source: Any, step: int, batch_size: int) -> Any:
        """This rank's rows of the global batch of ``step``: ``source.shard`` when it has one (reads only those
        rows), else a slice of ``source.batch``."""
        if not self.parallel:
            return source.batch(step, batch_size)
        if hasattr(source, "shard"):
            return source.shard(step, batch_size, self.rank, self.world_size)
        return shard_rows(source.batch(step, batch_size), self.rank, self.world_size)

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Replace each gradient by its mean over ranks, in one all-reduce. A parameter without a gradient on
        any rank keeps none (as Adam skips it in one process); one with a gradient on some rank gets the mean
        with zeros for the others."""
        if not self.parallel:
            return
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        has_grad = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype, device=grads[0].device)
        flat = torch.cat([g.reshape(-1) for g in grads] + [has_grad])
        dist.all_reduce(flat)
        flat[:-len(params)] /= self.world_size
        offset = 0
        for p, g, any_grad in zip(params, grads, flat[-len(params):].tolist(), strict=True):
            mean = flat[offset:offset + g.numel()].view_as(g)
            offset += g.numel()
            if any_grad:
                p.grad = mean.clone()

    def any_rank(self, flags: Tensor) -> Tensor:
        """``flags`` (bool) OR-ed over ranks."""
        if not self.parallel:
            return flags
        counts = flags.to(torch.int32)
        dist.all_reduce(counts)
        return counts > 0

    def broadcast_float(self, value: float) -> float:
        """Rank 0's ``value``."""
        return self._broadcast_scalar(value, torch.float64)

    def broadcast_state(self, module: torch.nn.Module, opt: torch.optim.Optimizer | None = None) -> None:
        """Copy rank 0's weights and buffers (and ``opt``'s per-parameter state) to every rank."""
        if not self.parallel:
            return
        with torch.no_grad():
            for t in module.state_dict().values():
                dist.broadcast(t, 0)
            if opt is not None:
                for p in (p for g in opt.param_groups for p in g["params"]):
                    for t in opt.state.get(p, {}).values():
                        if isinstance(t, Tensor):
                            dist.broadcast(t, 0)

    def share_edit(self, n: int, module: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
        """After rank 0 edited ``module`` and ``opt`` in place (``n`` things changed; 0 on the other ranks),
        broadcast its weights and optimiser state when ``n`` is not 0. Returns rank 0's ``n``."""
        if not self.parallel:
            return n
        n = int(self._broadcast_scalar(n, torch.int64))
        if n:
            self.broadcast_state(module, opt)
        return n

    def mean(self, point: dict[str, float]) -> dict[str, float]:
        """The float values of ``point`` averaged over ranks; integers (the step) are kept. The keys must be
        the same on every rank."""
        if not self.parallel:
            return point
        keys = [k for k, v in point.items() if isinstance(v, float)]
        values = torch.tensor([point[k] for k in keys], dtype=torch.float64, device=_device())
        dist.all_reduce(values)
        return point | dict(zip(keys, (values / self.world_size).tolist(), strict=True))

    def _broadcast_scalar(self, value: float, dtype: torch.dtype) -> float:
        if not self.parallel:
            return value
        t = torch.tensor([value], dtype=dtype, device=_device())
        dist.broadcast(t, 0)
        return t.item()


def _device() -> torch.device:
    """Where the backend's collectives want small tensors: CUDA for NCCL, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def shard_rows(batch: Any, rank: int, world_size: int) -> Any:
    """Rows ``[rank * n, (rank + 1) * n)`` of an :class:`ActivationBatch`, ``n = len / world_size``."""
    n = len(batch.inputs) // world_size
    rows = slice(rank * n, (rank + 1) * n)
    return batch._replace(inputs=batch.inputs[rows],
                          targets=None if batch.targets is None else batch.targets[rows],
                          labels=None if batch.labels is None else {k: v[rows] for k, v in batch.labels.items()})
