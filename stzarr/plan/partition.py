"""Chunk-aligned, contiguous partitions of a split's window starts across DDP ranks (mode
``partitioned``: generalized-distributed-index-batching).

:func:`plan_partitions` cuts the sorted starts of a split into ``world_size`` contiguous ranges
whose boundaries fall on the store's chunk boundaries along time where that keeps the ranks
balanced: rank ``r`` owns the starts ``s`` with ``b_r <= s < b_{r+1}``. A rank reads from Zarr
only the time steps ``[first start, last start + span)``: its own chunks plus the
``input_steps + horizon - 1`` halo into the next one.

Balance: every rank's count is within 10 % of every other's. A boundary stays on the chunk
boundary nearest its ideal position ``r * n / world_size`` when that moves it by at most
:data:`SNAP` of a rank's share; otherwise it starts inside the chunk. Starting inside chunks makes
the two neighbours share that chunk; when the extra bytes this reads (as a fraction of the
chunk-aligned plan's reads) exceed the fraction of windows the chunk-aligned plan would leave out
per epoch, the chunk-aligned plan is kept, and :meth:`PartitionPlan.skipped` says how many windows
each rank leaves out per epoch.

Equal steps per epoch (so DDP never deadlocks): every rank runs
:meth:`PartitionPlan.steps_per_epoch` batches, the minimum over ranks of the rank's batch count.
A rank with more batches uses a share of its windows that rotates every epoch
(:class:`stzarr.plan.sampler.WindowShuffleSampler`, or the paper's batch-order shuffle
:class:`stzarr.plan.sampler.BatchShuffleSampler`), so no window is dropped for good.

The plan is plain data (:meth:`PartitionPlan.to_dict`) made with NumPy only: no store reader, no
loader, no torch. :mod:`stzarr.data.rank` executes it for one rank (standardised with the cached
train-split statistics, never anything computed over other ranks' data).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from stzarr.errors import SpecError
from stzarr.plan.sampler import BatchShuffleSampler, WindowShuffleSampler
from stzarr.plan.windows import WindowPlan, WindowSpec, chunk_cuts

if TYPE_CHECKING:
    from stzarr.store.format import Store

SNAP = 0.025
"""How far (a fraction of ``n / world_size`` windows) a boundary may move to a chunk boundary: two
moves of at most 2.5 % keep every pair of ranks within 10 % of each other."""

SHUFFLES = ("window", "batch")
"""How a partitioned rank shuffles its training windows (see :meth:`PartitionPlan.sampler`)."""


@dataclass(frozen=True)
class RankPartition:
    """What one rank owns and reads.

    Attributes
    ----------
    rank : int
    index_range : tuple of int
        Half-open range of positions in the split's sorted starts.
    first_start, last_start : int
        Global time index of the rank's first and last start.
    count : int
        Number of windows (starts).
    time_range : tuple of int
        Half-open time steps read: ``[first_start, last_start + span)`` (own range plus halo).
    chunk_range : tuple of int
        Half-open range of time-chunk indices that ``time_range`` touches.
    read_bytes : int
        Uncompressed bytes of the touched chunks (what Zarr decodes).
    memory_bytes : int
        Expected resident data of the rank: the standardised ``time_range`` plus its starts.
    """

    rank: int
    index_range: tuple[int, int]
    first_start: int
    last_start: int
    count: int
    time_range: tuple[int, int]
    chunk_range: tuple[int, int]
    read_bytes: int
    memory_bytes: int

    @property
    def n_chunks(self) -> int:
        """Number of time chunks read."""
        return self.chunk_range[1] - self.chunk_range[0]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for JSON."""
        return {
            "rank": self.rank,
            "index_range": list(self.index_range),
            "starts": [self.first_start, self.last_start],
            "count": self.count,
            "time_range": list(self.time_range),
            "chunk_range": list(self.chunk_range),
            "n_chunks": self.n_chunks,
            "read_bytes": self.read_bytes,
            "memory_bytes": self.memory_bytes,
        }


@dataclass(frozen=True)
class PartitionPlan:
    """Partitions of one split's starts across ``world_size`` ranks: plain data.

    Attributes
    ----------
    spec : WindowSpec
    split : str
    n_time, n_node, n_feature : int
        Extent of the store.
    itemsize : int
        Bytes per value of the loaded series (4 for float32).
    chunk_time : int
        Time steps per chunk of the store.
    partitions : tuple of RankPartition
        One per rank, in rank order; contiguous, disjoint, covering every start of the split.
    starts : numpy.ndarray
        The split's sorted starts (global time indices).
    chunk_aligned : bool
        True when every rank but the first begins on a chunk boundary; False when boundaries
        start inside chunks, to balance the ranks (:attr:`balanced_inside_chunks`) or because
        the split's windows start in fewer time chunks than there are ranks (see
        :attr:`warning`).
    shared_chunk_fraction : float
        Fraction of the chunks read that two or more ranks read.
    balanced_inside_chunks : bool
        True when some boundaries start inside chunks to balance the ranks (no warning: the
        cost is at most one chunk read twice per such boundary).
    """

    spec: WindowSpec
    split: str
    n_time: int
    n_node: int
    n_feature: int
    itemsize: int
    chunk_time: int
    partitions: tuple[RankPartition, ...]
    starts: np.ndarray = field(repr=False)
    chunk_aligned: bool = True
    shared_chunk_fraction: float = 0.0
    balanced_inside_chunks: bool = False

    @property
    def warning(self) -> str | None:
        """One line on a plan whose ranks must split chunks because the windows start in fewer
        chunks than there are ranks, and how to fix it (None otherwise)."""
        if self.chunk_aligned or self.balanced_inside_chunks:
            return None
        n_chunks = math.ceil(self.n_time / self.chunk_time)
        return (
            f"the {self.split} windows start in fewer {self.chunk_time}-step time chunks than "
            f"the {self.world_size} ranks, so partitions start inside chunks and "
            f"{self.shared_chunk_fraction:.0%} of the chunks read are read by two ranks; "
            f"`stzarr rechunk` to smaller time chunks (this store has {n_chunks}) fixes it"
        )

    @property
    def world_size(self) -> int:
        """Number of ranks."""
        return len(self.partitions)

    @property
    def step_bytes(self) -> int:
        """Bytes of one time step of the series."""
        return self.n_node * self.n_feature * self.itemsize

    @property
    def full_memory_bytes(self) -> int:
        """Resident series bytes per rank in mode ``full`` (the whole series), for comparison."""
        return self.n_time * self.step_bytes

    def rank_starts(self, rank: int) -> np.ndarray:
        """The starts rank ``rank`` owns (global time indices, sorted)."""
        lo, hi = self.partitions[rank].index_range
        return self.starts[lo:hi]

    def steps_per_epoch(self, batch_size: int) -> int:
        """Batches every rank runs per epoch: the minimum over ranks of ``ceil(count / b)``."""
        if batch_size < 1:
            raise SpecError(f"batch_size must be >= 1, got {batch_size}")
        return min(math.ceil(p.count / batch_size) for p in self.partitions)

    def skipped(self, batch_size: int) -> list[int]:
        """Windows each rank leaves out per epoch: its count beyond the common steps per epoch.

        The left-out share rotates between epochs (no window is dropped for good), but every
        epoch trains on that many fewer of the rank's windows.
        """
        limit = self.steps_per_epoch(batch_size) * batch_size
        return [max(0, p.count - limit) for p in self.partitions]

    def skipped_fraction(self, batch_size: int) -> float:
        """Fraction of the split's windows left out of every epoch (see :meth:`skipped`)."""
        return sum(self.skipped(batch_size)) / max(1, int(self.starts.size))

    def skipped_line(self, batch_size: int) -> str | None:
        """One line on the windows the ranks leave out per epoch (None when none is)."""
        skipped = self.skipped(batch_size)
        if not any(skipped):
            return None
        return (
            f"with batch size {batch_size} the ranks leave out {'/'.join(map(str, skipped))} "
            f"of their {'/'.join(str(p.count) for p in self.partitions)} {self.split} windows "
            f"per epoch ({self.skipped_fraction(batch_size):.1%}; the left-out windows rotate "
            "between epochs)"
        )

    def sampler(
        self, rank: int, batch_size: int, *, seed: int = 0, shuffle: str = "window"
    ) -> WindowShuffleSampler | BatchShuffleSampler:
        """The training sampler of ``rank``, with the steps per epoch common to all ranks.

        ``shuffle="window"`` (default): a seeded permutation of the rank's own windows every
        epoch (:class:`~stzarr.plan.sampler.WindowShuffleSampler`); ``"batch"``: fixed batches of
        consecutive windows in a shuffled order, as in the paper
        (:class:`~stzarr.plan.sampler.BatchShuffleSampler`).
        """
        if shuffle not in SHUFFLES:
            raise SpecError(f"unknown shuffle {shuffle!r} (choose from {', '.join(SHUFFLES)})")
        kind = WindowShuffleSampler if shuffle == "window" else BatchShuffleSampler
        return kind(
            self.rank_starts(rank),
            batch_size,
            rank=rank,
            seed=seed,
            num_batches=self.steps_per_epoch(batch_size),
        )

    def to_dict(self, *, batch_size: int | None = None) -> dict[str, Any]:
        """Plain-data form for JSON (with ``steps_per_epoch`` when ``batch_size`` is given)."""
        out: dict[str, Any] = {
            "spec": self.spec.to_dict(),
            "split": self.split,
            "shape": [self.n_time, self.n_node, self.n_feature],
            "itemsize": self.itemsize,
            "chunk_time": self.chunk_time,
            "world_size": self.world_size,
            "count": int(self.starts.size),
            "full_memory_bytes": self.full_memory_bytes,
            "chunk_aligned": self.chunk_aligned,
            "shared_chunk_fraction": self.shared_chunk_fraction,
            "balanced_inside_chunks": self.balanced_inside_chunks,
            "partitions": [p.to_dict() for p in self.partitions],
        }
        if batch_size is not None:
            out["batch_size"] = int(batch_size)
            out["steps_per_epoch"] = self.steps_per_epoch(batch_size)
            out["skipped_per_epoch"] = self.skipped(batch_size)
            out["skipped_fraction"] = self.skipped_fraction(batch_size)
        return out


def _boundaries(starts: np.ndarray, chunk_time: int, world_size: int) -> list[int] | None:
    """Positions in ``starts`` where ranks 1..W-1 begin, each at a chunk boundary in time.

    None when the windows start in fewer time chunks than there are ranks.
    """
    n = starts.size
    first_chunk = int(starts[0]) // chunk_time + 1
    last_chunk = int(starts[-1]) // chunk_time
    # number of starts before each chunk boundary; distinct values give distinct partitions
    before = chunk_cuts(starts, chunk_time, np.arange(first_chunk, last_chunk + 1))
    before = before[(before > 0) & (before < n)]
    if before.size < world_size - 1:
        return None
    chosen: list[int] = []
    prev = -1
    m = before.size
    for r in range(1, world_size):
        target = r * n / world_size
        lo, hi = prev + 1, m - (world_size - r)  # leave one candidate per remaining rank
        j = int(np.clip(np.searchsorted(before, target), lo, hi))
        if j > lo and abs(before[j - 1] - target) <= abs(before[j] - target):
            j -= 1
        chosen.append(int(before[j]))
        prev = j
    return chosen


def _balanced_cuts(starts: np.ndarray, chunk_time: int, world_size: int) -> list[int]:
    """Boundaries at ``r * n / world_size``, each moved to the nearest chunk boundary when that
    is within :data:`SNAP` of a rank's share (so the ranks stay within 10 % of each other)."""
    n = starts.size
    share = n / world_size
    chunks = np.arange(int(starts[0]) // chunk_time + 1, int(starts[-1]) // chunk_time + 1)
    aligned = chunk_cuts(starts, chunk_time, chunks)
    cuts = []
    for r in range(1, world_size):
        target = r * share
        cut = round(target)
        if aligned.size:
            j = int(np.clip(np.searchsorted(aligned, target), 1, aligned.size)) - 1
            near = min(aligned[j : j + 2], key=lambda c: abs(c - target))
            if abs(near - target) <= SNAP * share:
                cut = int(near)
        cuts.append(cut)
    if any(b <= a for a, b in zip([0, *cuts], [*cuts, n], strict=True)):
        return [round(r * share) for r in range(1, world_size)]
    return cuts


def _counts_balanced(edges: list[int]) -> bool:
    """Every count within 10 % of every other, or one apart (the best whole windows allow)."""
    counts = np.diff(edges)
    return bool(counts.min() >= 0.9 * counts.max() or counts.max() - counts.min() <= 1)


class SharedChunksWarning(UserWarning):
    """A partition plan whose ranks start inside time chunks, so some chunks are read twice."""


def _shared_chunk_fraction(partitions: list[RankPartition]) -> float:
    """Fraction of the chunks read that more than one rank reads (halo chunks included)."""
    readers: dict[int, int] = {}
    for p in partitions:
        for c in range(*p.chunk_range):
            readers[c] = readers.get(c, 0) + 1
    return sum(1 for k in readers.values() if k > 1) / max(1, len(readers))


def plan_partitions(
    plan: WindowPlan,
    *,
    chunk_time: int,
    world_size: int,
    n_node: int,
    n_feature: int,
    split: str = "train",
    itemsize: int = 4,
) -> PartitionPlan:
    """Split the starts of ``split`` into ``world_size`` contiguous partitions, chunk-aligned
    where that keeps the ranks within 10 % of each other (see the module's description).

    When the split's windows start in fewer time chunks than there are ranks, the partitions
    are equal contiguous ranges that start inside chunks instead; the plan says so
    (``chunk_aligned`` False, :attr:`PartitionPlan.warning`) and a :class:`SharedChunksWarning`
    is issued.

    Parameters
    ----------
    plan : WindowPlan
        Window plan of the store (from :func:`stzarr.plan.windows.make_plan`).
    chunk_time : int
        Time steps per chunk of the store (``store.chunk_time``).
    world_size : int
        Number of ranks.
    n_node, n_feature : int
        Spatial and feature extent of the store (for bytes and memory).
    split : str
        Which split to partition (default ``"train"``).
    itemsize : int
        Bytes per value of the loaded series.

    Returns
    -------
    PartitionPlan

    Raises
    ------
    SpecError
        When the split has no windows or fewer windows than ranks, or ``world_size < 1``.
    """
    if world_size < 1:
        raise SpecError(f"world_size must be >= 1, got {world_size}")
    if chunk_time < 1:
        raise SpecError(f"chunk_time must be >= 1, got {chunk_time}")
    if split not in plan.starts:
        raise SpecError(f"the window plan has no split {split!r} (has {sorted(plan.starts)})")
    starts = np.asarray(plan.starts[split], dtype=np.int64)
    if starts.size == 0:
        raise SpecError(f"split {split!r} has no windows to partition")
    if starts.size < world_size:
        raise SpecError(
            f"split {split!r} has {starts.size} windows, too few for {world_size} ranks"
        )
    cuts = _boundaries(starts, chunk_time, world_size)
    step_bytes = n_node * n_feature * itemsize
    n_chunks_total = math.ceil(plan.n_time / chunk_time)
    layout = {
        "plan": plan,
        "starts": starts,
        "chunk_time": chunk_time,
        "step_bytes": step_bytes,
        "n_chunks_total": n_chunks_total,
    }
    few = cuts is None
    balanced = False
    if cuts is None:  # fewer chunks than ranks: equal ranges, starting inside chunks
        cuts = [round(r * starts.size / world_size) for r in range(1, world_size)]
    elif not _counts_balanced([0, *cuts, starts.size]):
        even = _balanced_cuts(starts, chunk_time, world_size)
        aligned_parts = _partitions([0, *cuts, starts.size], **layout)
        even_parts = _partitions([0, *even, starts.size], **layout)
        read = sum(p.read_bytes for p in aligned_parts)
        extra = (sum(p.read_bytes for p in even_parts) - read) / read
        counts = np.diff([0, *cuts, starts.size])
        left_out = float((counts - counts.min()).sum() / starts.size)
        if extra <= left_out:
            cuts, balanced = even, even != cuts
    aligned = not few and all(starts[c - 1] // chunk_time < starts[c] // chunk_time for c in cuts)
    partitions = _partitions([0, *cuts, starts.size], **layout)
    out = PartitionPlan(
        spec=plan.spec,
        split=split,
        n_time=int(plan.n_time),
        n_node=int(n_node),
        n_feature=int(n_feature),
        itemsize=int(itemsize),
        chunk_time=int(chunk_time),
        partitions=tuple(partitions),
        starts=starts,
        chunk_aligned=aligned,
        shared_chunk_fraction=_shared_chunk_fraction(partitions),
        balanced_inside_chunks=balanced and not aligned,
    )
    if out.warning is not None:
        warnings.warn(out.warning, SharedChunksWarning, stacklevel=2)
    return out


def _partitions(
    edges: list[int],
    *,
    plan: WindowPlan,
    starts: np.ndarray,
    chunk_time: int,
    step_bytes: int,
    n_chunks_total: int,
) -> list[RankPartition]:
    """The ranks' partitions of ``starts`` cut at ``edges`` (positions, first 0, last n)."""
    partitions = []
    for rank in range(len(edges) - 1):
        i0, i1 = edges[rank], edges[rank + 1]
        lo, hi = plan.read_range(starts[i0:i1])
        c0, c1 = lo // chunk_time, min(math.ceil(hi / chunk_time), n_chunks_total)
        read_steps = min(c1 * chunk_time, plan.n_time) - c0 * chunk_time
        partitions.append(
            RankPartition(
                rank=rank,
                index_range=(i0, i1),
                first_start=int(starts[i0]),
                last_start=int(starts[i1 - 1]),
                count=i1 - i0,
                time_range=(lo, hi),
                chunk_range=(c0, c1),
                read_bytes=read_steps * step_bytes,
                memory_bytes=(hi - lo) * step_bytes + (i1 - i0) * 8,
            )
        )
    return partitions


def store_partitions(
    store: Store, plan: WindowPlan, world_size: int, *, split: str = "train"
) -> PartitionPlan:
    """:func:`plan_partitions` with the chunking and extent of ``store`` (float32 series).

    Uses only the store's metadata (``shape``, ``chunk_time``).
    """
    n_time, n_node, n_feature = store.shape
    if plan.n_time != n_time:
        raise SpecError(f"the window plan is for {plan.n_time} steps, the store has {n_time}")
    return plan_partitions(
        plan,
        chunk_time=store.chunk_time,
        world_size=world_size,
        n_node=n_node,
        n_feature=n_feature,
        split=split,
    )
