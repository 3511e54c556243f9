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

from vtp_bench.choices import MIX_MODES  # noqa: F401 (kept here for the modules that use it)


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


class EpochPosition:
    """Where a training data order stands: its epoch and the batches a resume skips at the start of it. Every
    training order (the map-style samplers, the shard reader) keeps it the same way."""

    epoch: int = 0
    skip_batches: int = 0

    def set_epoch(self, epoch: int, skip_batches: int | None = None) -> None:
        """Lightning calls ``set_epoch(epoch)`` every epoch; a resume sets ``skip_batches`` first, and the
        skip then holds for the rest of that epoch only."""
        if skip_batches is not None:
            self.skip_batches = skip_batches
        elif epoch != self.epoch:
            self.skip_batches = 0
        self.epoch = epoch


class ResumableSampler(EpochPosition, Sampler[int]):
    def __init__(self, length: int, batch_size: int, rank: int = 0, world: int = 1, seed: int = 0,
                 shuffle: bool = True) -> None:
        self.length, self.batch_size, self.rank, self.world = length, batch_size, rank, world
        self.seed, self.shuffle = seed, shuffle
        self.epoch = 0
        self.skip_batches = 0

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




class MixedBatchSampler(EpochPosition, Sampler[list[int]]):
    """Batches for training on several datasets at once: every batch comes from one dataset, and which
    dataset a step reads is a function of (seed, epoch, step) only, so every rank reads the same dataset at
    the same step without communicating (ranks that read different datasets would gather tensors of
    different shapes and hang).

    Indices are global positions in the concatenation of the datasets (``lengths`` in order). Within each
    dataset the order and the rank sharding are ``ResumableSampler``'s; each rank's shard is cut into full
    batches. ``mode``:

    - ``round_robin`` (Frozen-in-Time / MCQ ``zip(*loaders)``): datasets alternate step by step; the epoch ends
      when the dataset with the fewest batches runs out.
    - ``proportional``: every batch of every dataset once per epoch, the dataset order shuffled by
      (seed, epoch) — the mixture weights are the dataset sizes.

    With one dataset both modes give exactly the batches of ``ResumableSampler`` + ``drop_last``.
    """

    def __init__(self, lengths: list[int], batch_size: int, rank: int = 0, world: int = 1, seed: int = 0,
                 mode: str = "round_robin") -> None:
        if mode not in MIX_MODES:
            raise ValueError(f"data.mix must be one of {', '.join(MIX_MODES)}, got {mode!r}")
        self.lengths, self.batch_size, self.mode, self.seed = list(lengths), batch_size, mode, seed
        self.parts = [ResumableSampler(n, batch_size, rank, world, seed=seed + 7919 * i) for i, n in enumerate(lengths)]
        self.offsets = [sum(lengths[:i]) for i in range(len(lengths))]
        self.per_dataset = [(n // world) // batch_size for n in lengths]
        if min(self.per_dataset) == 0:
            small = [n for n, b in zip(lengths, self.per_dataset) if b == 0]
            raise ValueError(f"a training dataset of {small[0]} items holds no full batch of {batch_size} per rank "
                             f"on {world} rank(s); lower data.batch_size")
        self.epoch = 0
        self.skip_batches = 0

    @property
    def sampler(self) -> "MixedBatchSampler":
        """Lightning calls ``set_epoch`` on ``dataloader.sampler`` and ``batch_sampler.sampler`` only."""
        return self

    def schedule(self) -> list[int]:
        """The dataset of every step of this epoch."""
        if self.mode == "round_robin":
            return [i for _ in range(min(self.per_dataset)) for i in range(len(self.lengths))]
        order = [i for i, b in enumerate(self.per_dataset) for _ in range(b)]
        if len(self.lengths) == 1:
            return order
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch + 12_345)
        return [order[j] for j in torch.randperm(len(order), generator=g).tolist()]

    def __iter__(self) -> Iterator[list[int]]:
        streams = []
        for part, offset in zip(self.parts, self.offsets):
            part.set_epoch(self.epoch)
            streams.append(iter([offset + i for i in part._indices()]))
        bs = self.batch_size
        for step, d in enumerate(self.schedule()):
            batch = [next(streams[d]) for _ in range(bs)]
            if step >= self.skip_batches:
                yield batch

    def __len__(self) -> int:
        # the full epoch, also when resuming: Lightning counts the skipped batches as already done
        return len(self.schedule()) if self.mode == "proportional" else min(self.per_dataset) * len(self.lengths)
