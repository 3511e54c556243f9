"""Samplers that make distributed training and evaluation exact.

- ``ShardSampler``: evaluation shards without padding (contiguous, sizes differ by at most one), so no
  test item is duplicated; VTPModule gathers and trims to the dataset length before scoring once.
- ``ResumableSampler``: the training order is a function of (seed, epoch) only; each rank takes every
  ``world``-th index of the permutation, trimmed to a multiple of ``world`` (``drop_last``) so every rank
  takes the same number of steps. ``skip_batches`` resumes mid-epoch exactly where a checkpoint left off.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


def shard_bounds(length: int, rank: int, world: int) -> tuple[int, int]:
    base, extra = divmod(length, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class ShardSampler(Sampler[int]):
    def __init__(self, length: int, rank: int = 0, world: int = 1) -> None:
        self.start, self.end = shard_bounds(length, rank, world)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end))

    def __len__(self) -> int:
        return self.end - self.start


class ResumableSampler(Sampler[int]):
    def __init__(self, length: int, batch_size: int, rank: int = 0, world: int = 1, seed: int = 0,
                 shuffle: bool = True) -> None:
        self.length, self.batch_size, self.rank, self.world = length, batch_size, rank, world
        self.seed, self.shuffle = seed, shuffle
        self.epoch = 0
        self.skip_batches = 0

    def set_epoch(self, epoch: int, skip_batches: int | None = None) -> None:
        """Lightning calls ``set_epoch(epoch)`` every epoch; a resume sets ``skip_batches`` first, and the
        skip then holds for the rest of that epoch only."""
        if skip_batches is not None:
            self.skip_batches = skip_batches
        elif epoch != self.epoch:
            self.skip_batches = 0
        self.epoch = epoch

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        per_rank = self.length // self.world
        return order[self.rank : per_rank * self.world : self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.skip_batches * self.batch_size :])

    def __len__(self) -> int:
        # the full epoch, also when resuming: Lightning counts the skipped batches as already done
        return self.length // self.world
