"""Which samples, in which batches, for this rank: the epoch plan.

An :class:`EpochPlan` is an immutable value (seed, epoch, rank, world size, batch size,
drop_last, shuffle, dataset length) whose :meth:`~EpochPlan.batches` are this rank's batches
of dataset indices for that epoch. Two equal plans give the same batches on every machine;
the producer is handed a plan and never asks the DataLoader for indices.

The policy (:func:`epoch_indices`) is ``DistributedSampler``'s: a permutation drawn from
``(seed, epoch)`` (identical on every rank), padded to a multiple of ``world_size`` by
repeating its first elements, of which rank ``r`` takes ``order[r::world_size]``;
``drop_last`` then applies per rank to the last partial batch.

:func:`detect_distributed` finds (rank, world_size, local_rank) from explicit arguments,
an initialized ``torch.distributed`` or torchrun's environment.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import NamedTuple, Optional, Tuple

import numpy as np

__all__ = ["EpochPlan", "epoch_indices", "batch_count", "DistributedInfo", "detect_distributed"]


def epoch_indices(n: int, *, seed: int, epoch: int, shuffle: bool, rank: int = 0,
                  world_size: int = 1) -> np.ndarray:
    """This rank's dataset indices for one epoch, in order.

    The order is a permutation drawn from ``(seed, epoch)`` (identical on every rank and
    machine; ``arange(n)`` without shuffle), padded to a multiple of ``world_size`` by
    repeating its first elements (the ``DistributedSampler(drop_last=False)`` policy), of
    which rank ``r`` takes ``order[r::world_size]``. So all ranks get the same count,
    disjoint shares, and the union covers every sample once (plus the repeated pads).
    """
    if n <= 0:
        return np.zeros(0, np.int64)
    if shuffle:
        order = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, int(epoch)]).permutation(n)
    else:
        order = np.arange(n)
    order = order.astype(np.int64)
    total = math.ceil(n / world_size) * world_size
    if total > n:
        reps = math.ceil((total - n) / n)
        order = np.concatenate([order] + [order] * reps)[:total]
    return order[rank::world_size]


def batch_count(n: int, world_size: int, batch_size: int, drop_last: bool) -> int:
    """Batches per epoch on each rank for ``n`` samples (without drawing the permutation)."""
    per_rank = math.ceil(n / world_size) if n > 0 else 0
    return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)


@dataclass(frozen=True)
class EpochPlan:
    """This rank's batches of one epoch, as an immutable value.

    ``length``: samples in the dataset; the other fields as in :class:`fastload.DataLoader`.
    ``plan.batches()`` -> tuple of read-only int64 index arrays (the last one shorter unless
    ``drop_last``); ``len(plan)`` -> their number; ``plan.with_epoch(e)`` /
    ``plan.next_epoch()`` -> the same plan for another epoch. Equal plans give equal batches.
    """
    length: int
    batch_size: int
    seed: int = 0
    epoch: int = 0
    shuffle: bool = False
    drop_last: bool = False
    rank: int = 0
    world_size: int = 1

    def __post_init__(self):
        for name in ("length", "batch_size", "seed", "epoch", "rank", "world_size"):
            object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "shuffle", bool(self.shuffle))
        object.__setattr__(self, "drop_last", bool(self.drop_last))
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size}")
        if self.length < 0:
            raise ValueError(f"length must be >= 0, got {self.length}")
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={self.rank}, "
                             f"world_size={self.world_size}")

    def indices(self) -> np.ndarray:
        """This rank's indices for the epoch, in order (read-only)."""
        idx = epoch_indices(self.length, seed=self.seed, epoch=self.epoch, shuffle=self.shuffle,
                            rank=self.rank, world_size=self.world_size)
        idx.setflags(write=False)
        return idx

    def batches(self) -> Tuple[np.ndarray, ...]:
        """The epoch's batches of indices (read-only views of :meth:`indices`)."""
        idx, bs = self.indices(), self.batch_size
        return tuple(idx[k * bs:(k + 1) * bs] for k in range(len(self)))

    def __len__(self) -> int:
        return batch_count(self.length, self.world_size, self.batch_size, self.drop_last)

    def with_epoch(self, epoch: int) -> "EpochPlan":
        return replace(self, epoch=int(epoch))

    def next_epoch(self) -> "EpochPlan":
        return replace(self, epoch=self.epoch + 1)


class DistributedInfo(NamedTuple):
    rank: int
    world_size: int
    local_rank: int


def detect_distributed(rank: Optional[int] = None,
                       world_size: Optional[int] = None) -> DistributedInfo:
    """(rank, world_size, local_rank) from the arguments, else an initialized
    ``torch.distributed``, else torchrun's ``RANK``/``WORLD_SIZE``, else (0, 1).
    ``local_rank`` is ``LOCAL_RANK`` when set, else the rank under distributed training,
    else 0."""
    if (rank is None) != (world_size is None):
        raise ValueError("give both rank and world_size, or neither")
    if rank is None:
        try:
            import torch.distributed as dist
            if dist.is_available() and dist.is_initialized():
                rank, world_size = dist.get_rank(), dist.get_world_size()
        except Exception:  # a broken torch.distributed build: fall back to the environment
            pass
    if rank is None and "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if rank is None:
        rank, world_size = 0, 1
    rank, world_size = int(rank), int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    local = int(os.environ.get("LOCAL_RANK", rank if world_size > 1 else 0))
    return DistributedInfo(rank, world_size, local)
