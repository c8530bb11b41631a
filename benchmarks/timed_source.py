"""The activation source the training benchmarks feed our loop: fixed batches, cycled, noting when each step asks
for its batch (a step's time is the gap between two requests, so every loop is timed the same way)."""

from __future__ import annotations

import time

import torch

from workbench.dictionaries.training import ActivationBatch


class TimedSource:
    """Fixed batches (the same on every rank of a distributed run), noting when each step asks for its batch."""

    def __init__(self, batches: list[torch.Tensor]) -> None:
        self.batches, self.d_in, self.d_out, self.times = batches, batches[0].shape[1], None, {}

    def batch(self, step: int, batch_size: int) -> ActivationBatch:
        self.times[step] = time.perf_counter()
        return ActivationBatch(self.batches[step % len(self.batches)])
