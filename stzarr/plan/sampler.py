"""Per-epoch batch orders for training, as pure NumPy (no I/O).

A sampler says what to load; a loader executes it. Every sampler follows the :class:`Sampler`
protocol: ``set_epoch(epoch)``, ``len()`` (batches per epoch, the same on every rank), iteration
yielding int64 arrays of *global* window starts (so each also works as a ``batch_sampler`` of a
stock ``torch.utils.data.DataLoader``), and :meth:`Sampler.requests` yielding the same batches as
:class:`LoadRequest` s: which windows, from which block. The samplers of a resident series have
one block (0); the streamed schedule (:class:`stzarr.plan.stream.StreamSampler`) names the block
of every window. :class:`stzarr.testing.samplers.SamplerTests` checks the protocol's promises
(each window once per epoch, ranks disjoint, reproducible from the seed, equal steps per rank)
for any sampler.

* :class:`GlobalShuffleSampler` (mode ``full``, distributed-index-batching): every epoch a
  permutation of *all* training starts seeded by ``(seed, epoch)``; every rank computes the same
  permutation and takes every ``world_size``-th start from its rank on, so no data moves between
  ranks. The step-``k`` batches of all ranks together are batch ``k`` of one process with batch
  size ``batch_size * world_size`` (the last step may repeat a few starts: the permutation is
  padded by wrapping around to a multiple of ``world_size``).
* :class:`BatchShuffleSampler` (mode ``partitioned``, generalized-distributed-index-batching):
  a rank's own starts are cut once into fixed batches of consecutive starts; each epoch only the
  batch order is shuffled, seeded by ``(seed, epoch, rank)``. With ``num_batches`` below the
  rank's batch count (ranks must run the same number of steps), each epoch uses a window of
  ``num_batches`` batches that rotates by ``num_batches`` every epoch, so every batch is used at
  least once in any ``ceil(n_batches / num_batches)`` consecutive epochs.
* :class:`WindowShuffleSampler` (mode ``partitioned``, the default ``--shuffle window``): every
  epoch a seeded permutation of the rank's own starts, cut into batches, so batches mix windows
  from anywhere in the partition (as a global shuffle does within one rank's data). Windows never
  move between ranks, and the partition is resident, so this costs no memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from stzarr.errors import SpecError


@dataclass(frozen=True)
class LoadRequest:
    """One batch to load: its windows and the block each is read from.

    Attributes
    ----------
    starts : numpy.ndarray
        int64 ``(b,)`` global window starts, in the order of the batch's rows.
    blocks : numpy.ndarray
        int64 ``(b,)`` the block holding each window (0 for a resident series).
    """

    starts: np.ndarray = field(repr=False)
    blocks: np.ndarray = field(repr=False)

    def parts(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(block, starts)`` of each run of consecutive rows read from one block."""
        cuts = np.flatnonzero(np.diff(self.blocks)) + 1
        for starts, blocks in zip(
            np.split(self.starts, cuts), np.split(self.blocks, cuts), strict=True
        ):
            yield int(blocks[0]), starts


@runtime_checkable
class Sampler(Protocol):
    """What a loader needs from a sampler."""

    def set_epoch(self, epoch: int) -> None:
        """Select the order of ``epoch`` (call before iterating, as with DDP samplers)."""

    def __len__(self) -> int:
        """Batches per epoch."""

    def __iter__(self) -> Iterator[np.ndarray]:
        """The epoch's batches: int64 arrays of global window starts."""

    def requests(self) -> Iterator[LoadRequest]:
        """The epoch's batches as load requests (the same starts as iteration)."""


class _Resident:
    """Load requests of a sampler over a resident series (one that iterates its batches):
    every window from block 0."""

    def requests(self) -> Iterator[LoadRequest]:
        """The epoch's batches, each read from block 0."""
        for starts in self:  # type: ignore[attr-defined]
            yield LoadRequest(starts, np.zeros(starts.size, dtype=np.int64))


def _as_starts(starts: np.ndarray) -> np.ndarray:
    starts = np.asarray(starts)
    if starts.ndim != 1 or not np.issubdtype(starts.dtype, np.integer):
        raise SpecError(f"starts must be a 1-d integer array, got {starts.dtype} {starts.shape}")
    if starts.size == 0:
        raise SpecError("no window starts to sample from")
    return starts.astype(np.int64, copy=False)


def _check_batch_size(batch_size: int) -> int:
    if int(batch_size) < 1:
        raise SpecError(f"batch_size must be >= 1, got {batch_size}")
    return int(batch_size)


class GlobalShuffleSampler(_Resident):
    """Seeded global shuffle of all training starts, split across ranks (mode ``full``).

    Parameters
    ----------
    starts : numpy.ndarray
        All training starts (global time indices), identical on every rank.
    batch_size : int
        Samples per batch on each rank.
    world_size, rank : int
        Number of ranks and this rank.
    seed : int
        Base seed; epoch ``e`` uses the permutation of ``numpy.random.default_rng([seed, e])``.
    shuffle : bool
        False keeps the starts in order (evaluation).
    drop_last : bool
        False (default) pads the permutation by wrapping around so that every start is used at
        least once per epoch and every rank gets ``ceil(n / world_size)`` samples; True drops
        the tail (fewer than ``world_size`` starts) and each rank's last partial batch.
    """

    def __init__(
        self,
        starts: np.ndarray,
        batch_size: int,
        *,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise SpecError(f"rank {rank} is not in a world of size {world_size}")
        self.starts = _as_starts(starts)
        self.batch_size = _check_batch_size(batch_size)
        self.world_size = int(world_size)
        self.rank = int(rank)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        n = self.starts.size
        self.samples_per_rank = n // world_size if drop_last else math.ceil(n / world_size)
        if self.samples_per_rank == 0:
            raise SpecError(f"{n} starts cannot feed {world_size} ranks with drop_last=True")

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (call before iterating, as with DDP samplers)."""
        self.epoch = int(epoch)

    def rank_starts(self) -> np.ndarray:
        """This rank's starts for the current epoch, in the order they are batched."""
        n = self.starts.size
        order = (
            np.random.default_rng([self.seed, self.epoch]).permutation(n)
            if self.shuffle
            else np.arange(n)
        )
        total = self.samples_per_rank * self.world_size
        order = np.resize(order, total)  # wraps around when padding, truncates when dropping
        return self.starts[order[self.rank :: self.world_size]]

    def __len__(self) -> int:
        if self.drop_last:
            return self.samples_per_rank // self.batch_size
        return math.ceil(self.samples_per_rank / self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        mine = self.rank_starts()
        for k in range(len(self)):
            yield mine[k * self.batch_size : (k + 1) * self.batch_size]


class _RankSampler(_Resident):
    """A rank's own starts, ``num_batches`` batches per epoch (see the subclasses)."""

    def __init__(
        self,
        starts: np.ndarray,
        batch_size: int,
        *,
        rank: int = 0,
        seed: int = 0,
        num_batches: int | None = None,
        shuffle: bool = True,
    ) -> None:
        self.starts = _as_starts(starts)
        self.batch_size = _check_batch_size(batch_size)
        self.rank = int(rank)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.epoch = 0
        self.n_batches = math.ceil(self.starts.size / self.batch_size)
        if num_batches is None:
            num_batches = self.n_batches
        if not 1 <= num_batches <= self.n_batches:
            raise SpecError(
                f"num_batches={num_batches} must be between 1 and this rank's "
                f"{self.n_batches} batches"
            )
        self.num_batches = int(num_batches)

    def __len__(self) -> int:
        return self.num_batches


class BatchShuffleSampler(_RankSampler):
    """Fixed batches of a rank's own starts; only their order is shuffled (mode ``partitioned``).

    Parameters
    ----------
    starts : numpy.ndarray
        This rank's starts (global time indices), in time order.
    batch_size : int
        Samples per batch; batch ``i`` is ``starts[i*batch_size : (i+1)*batch_size]``.
    rank : int
        This rank (part of the seed, so ranks shuffle independently).
    seed : int
        Base seed; epoch ``e`` uses ``numpy.random.default_rng([seed, e, rank])``.
    num_batches : int, optional
        Batches per epoch (default: all of this rank's batches). Use the minimum over ranks
        (:meth:`stzarr.plan.partition.PartitionPlan.steps_per_epoch`) so every rank runs the same
        number of steps; the window of used batches rotates each epoch.
    shuffle : bool
        False yields the window's batches in time order.
    """

    def set_epoch(self, epoch: int) -> None:
        """Select the batch window and order of ``epoch``."""
        self.epoch = int(epoch)

    def batch_ids(self) -> np.ndarray:
        """Indices of this epoch's batches (into the fixed batches), in the order yielded."""
        offset = (self.epoch * self.num_batches) % self.n_batches
        ids = (offset + np.arange(self.num_batches)) % self.n_batches
        if self.shuffle:
            ids = np.random.default_rng([self.seed, self.epoch, self.rank]).permutation(ids)
        return ids

    def batch(self, i: int) -> np.ndarray:
        """Fixed batch ``i`` (its contents never change between epochs)."""
        return self.starts[i * self.batch_size : (i + 1) * self.batch_size]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in self.batch_ids():
            yield self.batch(int(i))


class WindowShuffleSampler(_RankSampler):
    """Seeded permutation of a rank's own starts every epoch (mode ``partitioned``).

    The rank's starts are shuffled as a whole (never across ranks) and cut into batches: epoch
    ``e`` yields a permutation seeded by ``(seed, e, rank)``. With fewer batches than the rank
    has (ranks must run the same number of steps), epoch ``e`` takes the ``m`` samples at
    positions ``e*m, ..., e*m + m - 1`` (mod ``count``) of a fixed permutation seeded by
    ``(seed, rank)`` and shuffles them: no window twice in an epoch, and every window within any
    ``ceil(count / m)`` consecutive epochs.

    Parameters
    ----------
    starts : numpy.ndarray
        This rank's starts (global time indices).
    batch_size : int
        Samples per batch.
    rank : int
        This rank (part of the seed, so ranks shuffle independently).
    seed : int
        Base seed.
    num_batches : int, optional
        Batches per epoch (default: all, ``ceil(count / batch_size)``); use the minimum over
        ranks (:meth:`stzarr.plan.partition.PartitionPlan.steps_per_epoch`).
    shuffle : bool
        False yields the starts in time order (evaluation).
    """

    @property
    def samples_per_epoch(self) -> int:
        """Samples per epoch: the rank's windows, or ``num_batches`` full batches of them."""
        return min(self.starts.size, self.num_batches * self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch``."""
        self.epoch = int(epoch)

    def epoch_starts(self) -> np.ndarray:
        """This epoch's starts in the order they are batched."""
        n, m = self.starts.size, self.samples_per_epoch
        if not self.shuffle:
            return self.starts[(self.epoch * m + np.arange(m)) % n]
        rotation = np.random.default_rng([self.seed, self.rank]).permutation(n)
        chosen = rotation[(self.epoch * m + np.arange(m)) % n]
        return self.starts[
            np.random.default_rng([self.seed, self.epoch, self.rank]).permutation(chosen)
        ]

    def __iter__(self) -> Iterator[np.ndarray]:
        mine = self.epoch_starts()
        for k in range(self.num_batches):
            yield mine[k * self.batch_size : (k + 1) * self.batch_size]
