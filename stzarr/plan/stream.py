"""The plan of out-of-core index-batching: chunk-aligned blocks of a range of window starts that
fit a memory budget, and the seeded order of every epoch. Plain data, NumPy only: no store reader,
no loader, no torch; :class:`StreamSampler` says, batch by batch, which windows to load from
which block (the :class:`~stzarr.plan.sampler.Sampler` protocol of the resident samplers), and
:class:`stzarr.data.streaming.StreamingLoader` executes it.

A rank's partition (or the whole train split) may not fit in memory. It is walked in **blocks**:
contiguous, chunk-aligned ranges of starts, each read with the ``input_steps + horizon - 1`` step
halo its last windows need, so every window whose start lies in a block is complete inside that
block.

Shuffling is seeded by ``(seed, epoch)`` and works at three levels: the block order is a
permutation; the windows of a *pool* of ``pool`` consecutive blocks (in that order) are spread
over one *stage* per block (block ``j`` of the order is resident for stages
``j - pool + 1 .. j``; its windows are shuffled and split evenly over those stages); and within a
stage, batches drawn from the different blocks are interleaved in a random order. A batch holds
windows of one block (random windows from anywhere in it) except at block boundaries, which keeps
batch building a single gather; the few batches that span two blocks are gathered per block and
concatenated. The stages are concatenated and cut into batches of ``batch_size`` (only the
epoch's last batch can be short), so each window is used exactly once per epoch, as in the
in-memory partitioned mode; only the batch contents differ.

Because every stage holds at least one batch (the planner sizes blocks to guarantee it), a batch
spans at most two stages and needs at most ``pool + 1`` blocks; the loader keeps at most
``pool + prefetch`` blocks resident or in flight (``prefetch >= 1``), so memory is bounded by

    ``(pool + prefetch) * (block_steps + halo) * n_node * n_feature * 4``
    ``+ BATCH_RESERVE * batch_bytes + read_reserve``

which :func:`plan_stream` keeps within ``max_memory``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stzarr.errors import SpecError
from stzarr.plan.sampler import LoadRequest
from stzarr.plan.windows import WindowSpec, chunk_cuts
from stzarr.units import format_bytes

BATCH_RESERVE = 4
"""Batches budgeted for: the one the consumer holds, the per-block parts (plus the batcher's
intermediates: ``x`` before the calendar channels are appended, the missing mask) and their
concatenation."""


@dataclass(frozen=True)
class StreamSchedule:
    """One epoch of a :class:`StreamPlan`: the order in which windows are yielded.

    Attributes
    ----------
    epoch : int
    block_order : numpy.ndarray
        int64 ``(k,)``: blocks in the order they are loaded (first needed first).
    starts : numpy.ndarray
        int64 ``(n,)``: every start of the plan exactly once, in yield order; batch ``i`` is
        ``starts[i * batch_size : (i + 1) * batch_size]`` (sorted within the batch).
    first_batch, last_batch : numpy.ndarray
        int64 ``(k,)`` indexed by block: the first and last batch that reads the block.
    batch_size : int
    """

    epoch: int
    block_order: np.ndarray
    starts: np.ndarray = field(repr=False)
    first_batch: np.ndarray
    last_batch: np.ndarray
    batch_size: int

    @property
    def n_batches(self) -> int:
        """Batches in the epoch."""
        return math.ceil(self.starts.size / self.batch_size)

    def batch(self, i: int) -> np.ndarray:
        """Starts of batch ``i`` (ascending)."""
        return self.starts[i * self.batch_size : (i + 1) * self.batch_size]

    def alive(self) -> np.ndarray:
        """int64 ``(n_batches,)``: blocks that must be resident while each batch is built."""
        counts = np.zeros(self.n_batches + 1, dtype=np.int64)
        np.add.at(counts, self.first_batch, 1)
        np.add.at(counts, self.last_batch + 1, -1)
        return np.cumsum(counts)[:-1]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for JSON (without the starts)."""
        return {
            "epoch": int(self.epoch),
            "block_order": self.block_order.tolist(),
            "n_batches": self.n_batches,
            "first_batch": self.first_batch.tolist(),
            "last_batch": self.last_batch.tolist(),
            "max_alive_blocks": int(self.alive().max(initial=0)),
        }


@dataclass(frozen=True)
class StreamPlan:
    """Blocks of a streamed range of starts and how much memory they take: plain data.

    Attributes
    ----------
    spec : WindowSpec
    starts : numpy.ndarray
        Sorted int64 global starts being streamed (a partition or a whole split).
    block_edges : numpy.ndarray
        int64 ``(k + 1,)`` positions into ``starts``: block ``b`` owns
        ``starts[block_edges[b] : block_edges[b + 1]]``.
    read_ranges : numpy.ndarray
        int64 ``(k, 2)`` half-open time ranges each block reads (its starts plus the halo).
    chunk_time : int
        Steps per chunk of the store; block boundaries (in time) are multiples of it.
    chunks_per_block : int
        Largest number of chunks a block's starts cover.
    batch_size, pool, prefetch : int
        Samples per batch; blocks mixed in one shuffle pool; blocks loaded ahead.
    step_bytes : int
        Bytes one time step of a resident block takes (``n_node * n_feature * 4``).
    batch_bytes : int
        Bytes of one batch ``(x, y)`` as the batcher returns it.
    read_reserve : int
        Bytes budgeted for reads in flight (decompression buffers).
    max_memory : int or None
        The budget the plan was made for (None: unbounded, one block).
    """

    spec: WindowSpec
    starts: np.ndarray = field(repr=False)
    block_edges: np.ndarray
    read_ranges: np.ndarray
    chunk_time: int
    chunks_per_block: int
    batch_size: int
    pool: int
    prefetch: int
    step_bytes: int
    batch_bytes: int
    read_reserve: int
    max_memory: int | None

    @property
    def n_blocks(self) -> int:
        """Number of blocks."""
        return int(self.read_ranges.shape[0])

    @property
    def capacity(self) -> int:
        """Blocks resident or in flight at most."""
        return min(self.n_blocks, self.pool + self.prefetch)

    def block_starts(self, b: int) -> np.ndarray:
        """Starts owned by block ``b``."""
        return self.starts[self.block_edges[b] : self.block_edges[b + 1]]

    def block_bytes(self) -> np.ndarray:
        """int64 ``(k,)``: bytes each block takes when resident."""
        return (self.read_ranges[:, 1] - self.read_ranges[:, 0]) * self.step_bytes

    @property
    def resident_limit(self) -> int:
        """Upper bound of the bytes of resident and in-flight blocks."""
        sizes = np.sort(self.block_bytes())[::-1]
        return int(sizes[: self.capacity].sum())

    @property
    def memory_bound(self) -> int:
        """Upper bound of the loader's memory: blocks, batches and read buffers."""
        return self.resident_limit + BATCH_RESERVE * self.batch_bytes + self.read_reserve

    @property
    def bytes_read(self) -> int:
        """Bytes of the series read per epoch (halos are read twice)."""
        return int(self.block_bytes().sum())

    def schedule(self, epoch: int, seed: int = 0, *, shuffle: bool = True) -> StreamSchedule:
        """The yield order of one epoch, seeded by ``(seed, epoch)``.

        With ``shuffle=False`` blocks and windows stay in time order (evaluation).
        """
        k, pool = self.n_blocks, min(self.pool, self.n_blocks)
        rng = np.random.default_rng([int(seed), int(epoch)])
        order = rng.permutation(k) if shuffle else np.arange(k)
        stages: list[list[np.ndarray]] = [[] for _ in range(k)]
        for j, b in enumerate(order):
            own = self.block_starts(int(b))
            if shuffle:
                own = rng.permutation(own)
            first = max(0, j - pool + 1)
            for stage, part in zip(
                range(first, j + 1), np.array_split(own, j + 1 - first), strict=True
            ):
                stages[stage].append(part)
        bs = self.batch_size
        if shuffle:  # the stage's per-block parts in a random order, each already shuffled
            stages = [[stage[q] for q in rng.permutation(len(stage))] for stage in stages]
        parts = [np.concatenate(stage) if stage else np.zeros(0, np.int64) for stage in stages]
        starts = np.concatenate(parts).astype(np.int64)
        if not shuffle:
            starts = np.sort(starts)
        n_batches = math.ceil(starts.size / bs)
        if shuffle and n_batches > 1:
            # shuffle the order of the batches that lie inside one stage (not those straddling
            # two stages, nor a short last batch): consecutive batches come from different blocks
            stage_of = np.repeat(np.arange(k), [p.size for p in parts])
            first_stage = stage_of[np.arange(n_batches) * bs]
            last_stage = stage_of[np.minimum(np.arange(1, n_batches + 1) * bs, starts.size) - 1]
            movable = first_stage == last_stage
            movable[-1] &= starts.size % bs == 0
            order = np.arange(n_batches)
            for stage in np.unique(first_stage[movable]):
                idx = np.flatnonzero(movable & (first_stage == stage))
                order[idx] = rng.permutation(idx)
            sizes = np.minimum(bs, starts.size - order * bs)
            take = np.repeat(order * bs - np.cumsum(sizes) + sizes, sizes)
            starts = starts[take + np.arange(starts.size)]
        batch_of = np.arange(starts.size) // bs
        # sort within each batch: a batch spanning two blocks is then grouped by block
        starts = starts[np.lexsort((starts, batch_of))]
        block_of = np.searchsorted(self.starts[self.block_edges[1:-1]], starts, side="right")
        first_batch = np.full(k, n_batches, dtype=np.int64)
        last_batch = np.full(k, -1, dtype=np.int64)
        np.minimum.at(first_batch, block_of, batch_of)
        np.maximum.at(last_batch, block_of, batch_of)
        load_order = np.argsort(first_batch, kind="stable")
        return StreamSchedule(
            int(epoch), load_order, starts, first_batch, last_batch, self.batch_size
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for JSON."""
        sizes = self.block_bytes()
        return {
            "spec": self.spec.to_dict(),
            "n_starts": int(self.starts.size),
            "n_blocks": self.n_blocks,
            "chunk_time": int(self.chunk_time),
            "chunks_per_block": int(self.chunks_per_block),
            "block_edges": self.block_edges.tolist(),
            "read_ranges": self.read_ranges.tolist(),
            "batch_size": int(self.batch_size),
            "pool": int(self.pool),
            "prefetch": int(self.prefetch),
            "capacity": self.capacity,
            "step_bytes": int(self.step_bytes),
            "block_bytes_max": int(sizes.max()),
            "batch_bytes": int(self.batch_bytes),
            "read_reserve": int(self.read_reserve),
            "resident_limit": self.resident_limit,
            "memory_bound": self.memory_bound,
            "max_memory": None if self.max_memory is None else int(self.max_memory),
            "bytes_read_per_epoch": self.bytes_read,
        }


class StreamSampler:
    """The streamed schedule of a :class:`StreamPlan` as a :class:`~stzarr.plan.sampler.Sampler`.

    Each epoch is :meth:`StreamPlan.schedule` of ``(seed, epoch)``; :meth:`requests` names the
    block of every window, iteration yields the starts alone.

    Parameters
    ----------
    plan : StreamPlan
    seed : int
        Epoch ``e`` is shuffled with ``numpy.random.default_rng([seed, e])``.
    shuffle : bool
        False yields windows in time order (evaluation).
    num_batches : int, optional
        Batches per epoch; default all (every window once). Fewer keeps the ranks of a DDP job
        in step, as the in-memory partitioned mode does; which windows are left out then
        changes with every epoch's shuffle (at random, not in rotation as the resident
        partitioned samplers do), and blocks holding none of the epoch's windows are not read.
    """

    def __init__(
        self,
        plan: StreamPlan,
        *,
        seed: int = 0,
        shuffle: bool = True,
        num_batches: int | None = None,
    ) -> None:
        if num_batches is not None and int(num_batches) < 1:
            raise SpecError(f"num_batches must be >= 1, got {num_batches}")
        self.plan = plan
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.num_batches = None if num_batches is None else int(num_batches)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the schedule of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = math.ceil(self.plan.starts.size / self.plan.batch_size)
        return n if self.num_batches is None else min(n, self.num_batches)

    def schedule(self, epoch: int | None = None) -> StreamSchedule:
        """The yield order of ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        return self.plan.schedule(epoch, self.seed, shuffle=self.shuffle)

    def requests(self, schedule: StreamSchedule | None = None) -> Iterator[LoadRequest]:
        """The epoch's batches with the block of every window (of ``schedule``, default the
        current epoch's)."""
        plan = self.plan
        sched = self.schedule() if schedule is None else schedule
        owner = np.searchsorted(plan.starts[plan.block_edges[1:-1]], sched.starts, side="right")
        bs = plan.batch_size
        for i in range(len(self)):
            yield LoadRequest(sched.starts[i * bs : (i + 1) * bs], owner[i * bs : (i + 1) * bs])

    def __iter__(self) -> Iterator[np.ndarray]:
        for request in self.requests():
            yield request.starts


def rank_seed(seed: int, rank: int) -> int:
    """The shuffle seed of rank ``rank``'s stream of a partition, so ranks shuffle differently."""
    return int(seed) * 1_000_003 + int(rank)


def _blocks(
    starts: np.ndarray, chunk_time: int, cpb: int, halo: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split sorted starts into ~equal runs of whole chunks (at most ``cpb`` chunks each)."""
    c0, c1 = int(starts[0]) // chunk_time, int(starts[-1]) // chunk_time
    n_chunks = c1 - c0 + 1
    k = math.ceil(n_chunks / cpb)
    # blocks without starts (stride > chunk_time) give no cut of their own
    edges = chunk_cuts(starts, chunk_time, c0 + (np.arange(k + 1) * n_chunks) // k)
    lo = starts[edges[:-1]]
    hi = starts[edges[1:] - 1] + halo + 1
    return edges, np.stack([lo, hi], axis=1).astype(np.int64)


def plan_stream(
    starts: np.ndarray,
    spec: WindowSpec,
    *,
    chunk_time: int,
    step_bytes: int,
    batch_size: int,
    batch_bytes: int,
    max_memory: int | None,
    read_reserve: int = 0,
    pool: int = 2,
    prefetch: int = 1,
) -> StreamPlan:
    """Cut ``starts`` into chunk-aligned blocks that fit ``max_memory``.

    The block size is the largest whole number of chunks such that ``pool + prefetch`` blocks
    (each with its halo), :data:`BATCH_RESERVE` batches and ``read_reserve`` fit the budget; the
    range is then split into equal-sized blocks. When the budget is too small for ``pool`` the
    pool shrinks (down to 1) before giving up.

    Parameters
    ----------
    starts : numpy.ndarray
        Sorted, unique int64 global starts to stream.
    spec : WindowSpec
    chunk_time : int
        Steps per chunk of the store.
    step_bytes : int
        Bytes of one resident time step (``n_node * n_feature * 4`` for float32).
    batch_size : int
    batch_bytes : int
        Bytes of one batch ``(x, y)``.
    max_memory : int or None
        Budget in bytes for the loader (blocks, batches, read buffers). None: one block.
    read_reserve : int
        Bytes to set aside for reads in flight.
    pool : int
        Blocks whose windows are shuffled together.
    prefetch : int
        Blocks loaded ahead of need (at least 1).

    Raises
    ------
    SpecError
        When there are no starts, the arguments are invalid, or the budget cannot hold two
        one-chunk blocks with their halo (one training, one loading) plus the batches.
    """
    starts = np.asarray(starts, dtype=np.int64)
    if starts.ndim != 1 or starts.size == 0:
        raise SpecError("nothing to stream: no window starts")
    if starts.size > 1 and not np.all(np.diff(starts) > 0):
        raise SpecError("starts to stream must be sorted and unique")
    for name, value in (
        ("chunk_time", chunk_time),
        ("batch_size", batch_size),
        ("pool", pool),
        ("prefetch", prefetch),
        ("step_bytes", step_bytes),
    ):
        if int(value) < 1:
            raise SpecError(f"{name} must be >= 1, got {value}")
    halo = spec.halo
    span_chunks = int(starts[-1]) // chunk_time - int(starts[0]) // chunk_time + 1

    def make(cpb: int, pool_: int) -> StreamPlan:
        edges, ranges = _blocks(starts, chunk_time, cpb, halo)
        return StreamPlan(
            spec,
            starts,
            edges,
            ranges,
            int(chunk_time),
            int(cpb),
            int(batch_size),
            int(pool_),
            int(prefetch),
            int(step_bytes),
            int(batch_bytes),
            int(read_reserve),
            max_memory,
        )

    if max_memory is None:
        return make(span_chunks, 1)
    fixed = BATCH_RESERVE * batch_bytes + read_reserve
    for pool_ in range(int(pool), 0, -1):
        slots = pool_ + prefetch
        per_block = (int(max_memory) - fixed) // slots
        cpb = min(span_chunks, (per_block // step_bytes - halo) // chunk_time)
        if cpb < 1:
            continue
        plan = make(cpb, pool_)
        counts = np.diff(plan.block_edges)
        if plan.n_blocks <= plan.capacity or counts.min() >= pool_ * batch_size:
            return plan
    # the smallest budget that plans: the fewest whole chunks per block (pool of one) for which
    # every block holds a batch, with one block training and ``prefetch`` loading
    cpb = next(
        c
        for c in range(1, span_chunks + 1)
        if (p := make(c, 1)).n_blocks <= p.capacity or np.diff(p.block_edges).min() >= batch_size
    )
    need = (1 + prefetch) * (cpb * chunk_time + halo) * step_bytes + fixed
    raise SpecError(
        f"max_memory {format_bytes(int(max_memory))} is too small: streaming needs at least "
        f"{need} bytes ({format_bytes(need)}): {1 + prefetch} blocks (one training, {prefetch} "
        f"loading) of {cpb} {chunk_time}-step chunk(s), each holding a batch of {batch_size} "
        f"windows, plus the {halo}-step halo, {BATCH_RESERVE} batches of "
        f"{format_bytes(batch_bytes)} and {format_bytes(read_reserve)} of read buffers"
    )


def batch_nbytes(
    spec: WindowSpec,
    batch_size: int,
    n_node: int,
    *,
    n_input: int,
    n_target: int,
    n_calendar: int,
    with_mask: bool,
) -> int:
    """Bytes of one float32 batch ``(x, y)`` (plus the boolean-as-float missing mask)."""
    xy = (
        batch_size
        * n_node
        * 4
        * (spec.input_steps * (n_input + n_calendar) + spec.horizon * n_target)
    )
    return xy + (batch_size * spec.horizon * n_node * n_target if with_mask else 0)


def read_reserve(outer_bytes: int, files: int = 4) -> int:
    """Bytes to budget for the block read in flight: the ``files`` outer chunks (shards, or
    chunks when unsharded) :meth:`stzarr.store.format.Store.read` holds read but not yet decoded
    (:func:`stzarr.store.reader.files_in_flight`: four on up to three threads).

    It decodes straight into the block, the chunks cut by the block's ends through a temporary
    each (``benchmarks/pems_scale.py`` records the peak against the budget).
    """
    return int(files) * int(outer_bytes)
