"""What one rank reads, holds and trains on, for every mode: plain data (NumPy only; no store
reader, no loader, no torch). :mod:`stzarr.data.rank` executes it.

Modes
-----
``single``
    One process, the standardised series on the CPU (index-batching).
``device``
    One process, the series on CUDA when present (GPU-index-batching; CPU otherwise).
``full``
    DDP (distributed-index-batching): every rank holds the whole standardised series and takes
    its share of a seeded global shuffle (:class:`~stzarr.plan.sampler.GlobalShuffleSampler`).
``partitioned``
    DDP (generalized-distributed-index-batching): every rank holds only its chunk-aligned range
    of training time plus the halo (:func:`~stzarr.plan.partition.plan_partitions`) and shuffles
    the order of its fixed batches (:class:`~stzarr.plan.sampler.BatchShuffleSampler`).

Whether a rank **loads** its range whole or **streams** it in chunk-aligned blocks
(:mod:`stzarr.plan.stream`) is decided in one place, :meth:`RankPlan.streams`: it streams a
range whose series does not fit ``max_memory``. Validation and test windows are split among
ranks in contiguous shares; a rank whose training series holds the whole store evaluates from it,
otherwise it reads the range its share needs when it evaluates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from stzarr.errors import SpecError
from stzarr.plan.partition import PartitionPlan, store_partitions
from stzarr.plan.sampler import GlobalShuffleSampler, Sampler
from stzarr.plan.stream import BATCH_RESERVE
from stzarr.plan.windows import WindowPlan
from stzarr.units import format_bytes

if TYPE_CHECKING:
    from stzarr.store.format import Store

MODES = ("single", "device", "full", "partitioned")
DISTRIBUTED_MODES = ("full", "partitioned")
EVAL_SPLITS = ("val", "test")


def eval_share(starts: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Contiguous share of evaluation windows for ``rank`` (may be empty)."""
    return np.array_split(np.asarray(starts, dtype=np.int64), world_size)[rank]


@dataclass(frozen=True)
class RankPlan:
    """One rank's data: which starts it trains and evaluates on and which steps it reads.

    Attributes
    ----------
    mode : str
    rank, world_size : int
    batch_size, seed : int
    windows : WindowPlan
        The store's window plan.
    train_range : tuple of int
        Half-open time steps of the training series the rank reads.
    eval_starts : dict
        The rank's share of each evaluation split's starts.
    step_bytes : int
        Bytes of one standardised time step (``n_node * n_feature * 4``).
    max_memory : int or None
        Bytes of series and batch buffers the rank may hold (None: no limit).
    partitions : PartitionPlan or None
        The partition plan (mode ``partitioned``).
    shuffle : str
        How a partitioned rank that holds its range shuffles: ``"window"`` (a permutation of its
        windows every epoch) or ``"batch"`` (the paper's batch-order shuffle). A streamed rank
        shuffles windows across its pool of resident blocks either way.
    batch_bytes : int
        Bytes of one batch ``(x, y, missing)``; :data:`~stzarr.plan.stream.BATCH_RESERVE` of
        them count against ``max_memory``.
    """

    mode: str
    rank: int
    world_size: int
    batch_size: int
    seed: int
    windows: WindowPlan = field(repr=False)
    train_range: tuple[int, int]
    eval_starts: Mapping[str, np.ndarray] = field(repr=False)
    step_bytes: int
    max_memory: int | None = None
    partitions: PartitionPlan | None = field(default=None, repr=False)
    shuffle: str = "window"
    batch_bytes: int = 0

    def range_bytes(self, time_range: tuple[int, int]) -> int:
        """Bytes of the standardised series over ``time_range``."""
        return (time_range[1] - time_range[0]) * self.step_bytes

    def needs_bytes(self, time_range: tuple[int, int]) -> int:
        """Bytes held when ``time_range`` is loaded whole: the series and the batch buffers."""
        return self.range_bytes(time_range) + BATCH_RESERVE * self.batch_bytes

    def streams(self, time_range: tuple[int, int]) -> bool:
        """Whether ``time_range`` is streamed in blocks (True) or loaded whole (False)."""
        return self.max_memory is not None and self.needs_bytes(time_range) > self.max_memory

    @property
    def train_streamed(self) -> bool:
        """Whether the training series is streamed."""
        return self.streams(self.train_range)

    @property
    def train_starts(self) -> np.ndarray:
        """The starts this rank samples its training batches from."""
        if self.partitions is not None:
            return self.partitions.rank_starts(self.rank)
        return np.asarray(self.windows.starts["train"], dtype=np.int64)

    def eval_range(self, split: str) -> tuple[int, int] | None:
        """Steps the rank's share of ``split`` reads; None when the training series holds them
        (the whole store, resident) or the share is empty."""
        starts = self.eval_starts[split]
        if starts.size == 0:
            return None
        if self.train_range == (0, self.windows.n_time) and not self.train_streamed:
            return None
        return self.windows.read_range(starts)

    def sampler(self) -> Sampler:
        """A fresh training sampler of this rank (in-memory modes)."""
        if self.partitions is not None:
            return self.partitions.sampler(
                self.rank, self.batch_size, seed=self.seed, shuffle=self.shuffle
            )
        return GlobalShuffleSampler(
            self.train_starts,
            self.batch_size,
            world_size=self.world_size,
            rank=self.rank,
            seed=self.seed,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for JSON."""
        return {
            "mode": self.mode,
            "rank": self.rank,
            "world_size": self.world_size,
            "train_range": list(self.train_range),
            "train": "streamed" if self.train_streamed else "loaded",
            "series_bytes": self.range_bytes(self.train_range),
            "max_memory": self.max_memory,
            "shuffle": "pool" if self.train_streamed else self.shuffle,
            "eval_counts": {s: int(v.size) for s, v in self.eval_starts.items()},
        }


def plan_rank(
    windows: WindowPlan,
    store: Store,
    *,
    mode: str,
    rank: int,
    world_size: int,
    batch_size: int,
    seed: int = 0,
    max_memory: int | None = None,
    shuffle: str = "window",
    batch_bytes: int = 0,
) -> RankPlan:
    """Plan what rank ``rank`` of ``world_size`` reads and trains on in ``mode``.

    Parameters
    ----------
    windows : WindowPlan
        The store's window plan.
    store : Store
        The store (only its metadata is used: ``shape``, ``chunk_time``).
    mode : str
        One of :data:`MODES`.
    rank, world_size : int
    batch_size, seed : int
        Samples per batch on each rank; the samplers' seed.
    max_memory : int, optional
        Bytes of series and batch buffers the rank may hold; larger ranges are streamed.
    shuffle : {"window", "batch"}
        How a partitioned rank holding its range shuffles (:meth:`PartitionPlan.sampler`).
    batch_bytes : int
        Bytes of one batch (:func:`stzarr.plan.stream.batch_nbytes`), for the budget.

    Raises
    ------
    SpecError
        For an unknown mode, a rank outside the world, a plan made for another store, or mode
        ``full`` under a budget smaller than the series (every rank of ``full`` holds all of it).
    """
    if mode not in MODES:
        raise SpecError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    if world_size < 1 or not 0 <= rank < world_size:
        raise SpecError(f"rank {rank} is not in a world of size {world_size}")
    if windows.n_time != store.shape[0]:
        raise SpecError(
            f"the window plan is for {windows.n_time} steps, the store has {store.shape[0]}"
        )
    partitions = None
    train_range = (0, windows.n_time)
    if mode == "partitioned":
        partitions = store_partitions(store, windows, world_size)
        train_range = partitions.partitions[rank].time_range
    plan = RankPlan(
        mode=mode,
        rank=rank,
        world_size=world_size,
        batch_size=batch_size,
        seed=seed,
        windows=windows,
        train_range=train_range,
        eval_starts={s: eval_share(windows.starts[s], rank, world_size) for s in EVAL_SPLITS},
        step_bytes=store.shape[1] * store.shape[2] * 4,
        max_memory=max_memory,
        partitions=partitions,
        shuffle=shuffle,
        batch_bytes=int(batch_bytes),
    )
    if mode == "full" and plan.train_streamed:
        raise SpecError(
            f"mode 'full' holds the whole series ({format_bytes(plan.needs_bytes(train_range))}"
            " with its batches)"
            f" on every rank, more than max_memory {format_bytes(max_memory or 0)}: use mode "
            f"'partitioned'"
        )
    return plan
