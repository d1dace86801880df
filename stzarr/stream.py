"""Out-of-core index-batching: stream a range of window starts through a bounded memory budget.

A rank's partition (or the whole train split) may not fit in memory. :class:`StreamingLoader`
walks it in **blocks**: contiguous, chunk-aligned ranges of starts, each read with the
``input_steps + horizon - 1`` step halo its last windows need, so every window whose start lies
in a block is complete inside that block. Blocks are read on a background thread (Zarr reads and
decompression release the GIL) while the current ones train, standardised in place with the
global train statistics, and wrapped in a :class:`~stzarr.loader.SeriesBatcher`, so every sample
is byte-identical to the in-memory loaders.

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

which :func:`plan_stream` keeps within ``max_memory``. The plan (blocks, read ranges, per-epoch
schedule) is plain data computed with NumPy only; :class:`StreamingLoader` executes it.
"""

from __future__ import annotations

import ctypes
import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import zarr

from stzarr.errors import SpecError
from stzarr.features import time_feature_names
from stzarr.loader import SeriesBatcher, default_device, resolve_features
from stzarr.monitor import current_rss
from stzarr.partition import PartitionPlan
from stzarr.stats import Stats
from stzarr.store import Store
from stzarr.windows import WindowSpec

BATCH_RESERVE = 4
"""Batches budgeted for: the one the consumer holds, the per-block parts (plus the batcher's
intermediates: ``x`` before the calendar channels are appended, the missing mask) and their
concatenation."""
READ_CONCURRENCY = 2
"""Zarr ``async.concurrency`` of the loader's block reads (see :func:`read_reserve`)."""


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


def _blocks(
    starts: np.ndarray, chunk_time: int, cpb: int, halo: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split sorted starts into ~equal runs of whole chunks (at most ``cpb`` chunks each)."""
    c0, c1 = int(starts[0]) // chunk_time, int(starts[-1]) // chunk_time
    n_chunks = c1 - c0 + 1
    k = math.ceil(n_chunks / cpb)
    chunk_edges = c0 + (np.arange(k + 1, dtype=np.int64) * n_chunks) // k
    edges = np.searchsorted(starts, chunk_edges * chunk_time, side="left")
    edges = np.unique(edges)  # drop blocks without starts (stride > chunk_time)
    lo = starts[edges[:-1]]
    hi = starts[edges[1:] - 1] + halo + 1
    return edges.astype(np.int64), np.stack([lo, hi], axis=1).astype(np.int64)


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
    min_steps = math.ceil(batch_size * spec.stride / chunk_time) * chunk_time
    need = (1 + prefetch) * (min_steps + halo) * step_bytes + fixed
    raise SpecError(
        f"max_memory {_fmt(int(max_memory))} is too small: streaming needs {1 + prefetch} "
        f"blocks (one training, {prefetch} loading) of at least {min_steps} steps (whole "
        f"{chunk_time}-step chunks, one batch of {batch_size} windows) plus the {halo}-step "
        f"halo, {BATCH_RESERVE} batches of {_fmt(batch_bytes)} and {_fmt(read_reserve)} of read "
        f"buffers: about {_fmt(need)} or more"
    )


def _fmt(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@dataclass
class StreamCounters:
    """What a :class:`StreamingLoader` did, for benchmarks and tests (mutable, cumulative).

    Attributes
    ----------
    blocks_loaded : int
    bytes_read : int
        Uncompressed bytes of the blocks loaded.
    read_seconds : float
        Time the background thread spent reading and standardising blocks.
    wait_seconds : float
        Time the consumer waited for a block that was not ready (prefetch too slow).
    resident_bytes : int
        Bytes of the blocks resident or being loaded right now.
    peak_resident_bytes : int
        High-water mark of ``resident_bytes``.
    """

    blocks_loaded: int = 0
    bytes_read: int = 0
    read_seconds: float = 0.0
    wait_seconds: float = 0.0
    resident_bytes: int = 0
    peak_resident_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for JSON."""
        return dict(self.__dict__)


class StreamingLoader:
    """Stream a range of window starts from a store through ``max_memory`` bytes.

    Iterating yields one epoch of ``(x, y)`` batches (``(x, y, mask)`` with ``with_mask``),
    ``x`` ``(b, input_steps, n, F_in)`` and ``y`` ``(b, horizon, n, F_out)``, each window exactly
    once; call :meth:`set_epoch` before each epoch (as with ``DistributedSampler``). Blocks are
    read on one background thread, at most ``plan.capacity`` resident or in flight.

    Parameters
    ----------
    store : Store
    stats : Stats
        Train-split statistics (the same for every rank).
    spec : WindowSpec
    starts : numpy.ndarray
        Sorted global starts to stream: a rank's partition or a whole split.
    batch_size : int
    max_memory : int or None
        Budget in bytes for the loader's blocks, batches and read buffers (see
        :func:`plan_stream`); None loads the whole range as one block.
    pool, prefetch : int
        Blocks shuffled together; blocks loaded ahead (>= 1).
    seed : int
        Epoch ``e`` is shuffled with ``numpy.random.default_rng([seed, e])``.
    shuffle : bool
        False yields windows in time order (evaluation).
    with_mask : bool
        Also yield the mask of missing targets.
    device : torch.device or str, optional
        Where blocks live and batches are built (default: CUDA when available).
    read_concurrency : int
        Zarr ``async.concurrency`` while a block is read (process-wide for the duration of the
        read: zarr's configuration is global); each concurrent read is budgeted
        :func:`read_reserve` bytes.
    num_batches : int, optional
        Batches per epoch; default all (every window once). Fewer keeps the ranks of a DDP job
        in step, as the in-memory partitioned mode does (:meth:`from_partition` sets the plan's
        common steps per epoch); which windows are left out changes with every epoch's shuffle,
        and blocks holding none of the epoch's windows are not read.
    **batcher_kwargs
        Passed to :meth:`stzarr.loader.SeriesBatcher.from_array` (``input_features``,
        ``target_features``, ``time_of_day``, ``day_of_week``, ``fill_missing``).
    """

    def __init__(
        self,
        store: Store,
        stats: Stats,
        spec: WindowSpec,
        starts: np.ndarray,
        *,
        batch_size: int,
        max_memory: int | None,
        pool: int = 2,
        prefetch: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        with_mask: bool = False,
        device: torch.device | str | None = None,
        read_concurrency: int = READ_CONCURRENCY,
        num_batches: int | None = None,
        **batcher_kwargs: Any,
    ) -> None:
        n_time, n_node, n_feature = store.shape
        if int(read_concurrency) < 1:
            raise SpecError(f"read_concurrency must be >= 1, got {read_concurrency}")
        if num_batches is not None and int(num_batches) < 1:
            raise SpecError(f"num_batches must be >= 1, got {num_batches}")
        starts = np.asarray(starts, dtype=np.int64)
        if starts.size and (starts.min() < 0 or starts.max() + spec.span > n_time):
            raise SpecError(
                f"starts {int(starts.min())}..{int(starts.max())} read outside the store's "
                f"{n_time} steps"
            )
        names = store.feature_names
        n_in = len(resolve_features(batcher_kwargs.get("input_features"), names))
        n_out = len(resolve_features(batcher_kwargs.get("target_features"), names))
        n_cal = len(
            time_feature_names(
                time_of_day=batcher_kwargs.get("time_of_day", False),
                day_of_week=batcher_kwargs.get("day_of_week", False),
            )
        )
        batch_bytes = batch_size * n_node * 4 * (
            spec.input_steps * (n_in + n_cal) + spec.horizon * n_out
        ) + (batch_size * spec.horizon * n_node * n_out if with_mask else 0)
        outer_bytes = (store.shard_time or store.chunk_time) * n_node * n_feature * 4
        self.plan = plan_stream(
            starts,
            spec,
            chunk_time=store.chunk_time,
            step_bytes=n_node * n_feature * 4 + n_cal * 4,
            batch_size=batch_size,
            batch_bytes=batch_bytes,
            max_memory=max_memory,
            read_reserve=read_reserve(outer_bytes, read_concurrency),
            pool=pool,
            prefetch=prefetch,
        )
        self.store = store
        self.stats = stats
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.with_mask = bool(with_mask)
        self.device = torch.device(device) if device is not None else default_device()
        self.batcher_kwargs = batcher_kwargs
        self.read_concurrency = int(read_concurrency)
        self.num_batches = None if num_batches is None else int(num_batches)
        self.epoch = 0
        self.counters = StreamCounters()
        self._lock = threading.Lock()

    @classmethod
    def from_partition(
        cls,
        store: Store,
        partitions: PartitionPlan,
        rank: int,
        stats: Stats,
        **kwargs: Any,
    ) -> StreamingLoader:
        """Stream rank ``rank``'s starts of a :class:`~stzarr.partition.PartitionPlan`.

        Keyword arguments are those of :class:`StreamingLoader` (``batch_size``,
        ``max_memory``, ...). The seed is combined with the rank so ranks shuffle differently.
        ``num_batches`` defaults to ``partitions.steps_per_epoch(batch_size)``, the steps every
        rank runs in the in-memory partitioned mode (pass ``num_batches=None`` for all windows).
        """
        if not 0 <= rank < partitions.world_size:
            raise SpecError(
                f"rank {rank} is not in the plan's world of size {partitions.world_size}"
            )
        seed = int(kwargs.pop("seed", 0))
        if "num_batches" not in kwargs and "batch_size" in kwargs:
            kwargs["num_batches"] = partitions.steps_per_epoch(int(kwargs["batch_size"]))
        return cls(
            store,
            stats,
            partitions.spec,
            partitions.rank_starts(rank),
            seed=seed * 1_000_003 + rank,
            **kwargs,
        )

    def __len__(self) -> int:
        """Batches per epoch."""
        n = math.ceil(self.plan.starts.size / self.plan.batch_size)
        return n if self.num_batches is None else min(n, self.num_batches)

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of the next iteration."""
        self.epoch = int(epoch)

    def schedule(self, epoch: int | None = None) -> StreamSchedule:
        """The yield order of ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        return self.plan.schedule(epoch, self.seed, shuffle=self.shuffle)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for _, *batch in self.batches():
            yield tuple(batch)

    def _load(self, b: int) -> SeriesBatcher:
        lo, hi = (int(v) for v in self.plan.read_ranges[b])
        t0 = time.perf_counter()
        with zarr.config.set({"async.concurrency": self.read_concurrency}):
            block = self.store.read(lo, hi)
        release_free_heap()
        batcher = SeriesBatcher.from_array(
            block,
            self.store.time[lo:hi],
            self.stats,
            self.plan.spec,
            offset=lo,
            missing_value=self.store.missing_value,
            device=self.device,
            feature_names=self.store.feature_names,
            copy=False,
            **self.batcher_kwargs,
        )
        with self._lock:
            self.counters.blocks_loaded += 1
            self.counters.bytes_read += block.nbytes
            self.counters.read_seconds += time.perf_counter() - t0
        return batcher

    def _account(self, nbytes: int) -> None:
        with self._lock:
            c = self.counters
            c.resident_bytes += nbytes
            c.peak_resident_bytes = max(c.peak_resident_bytes, c.resident_bytes)

    def batches(self, epoch: int | None = None) -> Iterator[tuple[np.ndarray, ...]]:
        """Yield ``(starts, x, y)`` (``(starts, x, y, mask)`` with ``with_mask``) for one epoch.

        ``starts`` are the global starts of the batch's samples, in the order of the rows.
        """
        plan, sched = self.plan, self.schedule(epoch)
        sizes = plan.block_bytes()
        # the block owning each position of the schedule, to split batches by block
        owner = np.searchsorted(plan.starts[plan.block_edges[1:-1]], sched.starts, side="right")
        pending: dict[int, Future[SeriesBatcher]] = {}
        n_batches = len(self)
        n_loads = int(np.count_nonzero(sched.first_batch < n_batches))  # blocks this epoch needs
        next_load = 0
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stzarr-stream")
        try:
            for i in range(n_batches):
                while next_load < n_loads and len(pending) < plan.capacity:
                    b = int(sched.block_order[next_load])
                    self._account(int(sizes[b]))
                    pending[b] = executor.submit(self._load, b)
                    next_load += 1
                lo, hi = i * plan.batch_size, min((i + 1) * plan.batch_size, sched.starts.size)
                starts, blocks = sched.starts[lo:hi], owner[lo:hi]
                cuts = np.flatnonzero(np.diff(blocks)) + 1
                parts = []
                for seg_starts, seg_blocks in zip(
                    np.split(starts, cuts), np.split(blocks, cuts), strict=True
                ):
                    future = pending[int(seg_blocks[0])]
                    if not future.done():
                        t0 = time.perf_counter()
                        future.result()
                        with self._lock:
                            self.counters.wait_seconds += time.perf_counter() - t0
                    batcher = future.result()
                    parts.append(
                        batcher.batch_masked(seg_starts)
                        if self.with_mask
                        else batcher.batch(seg_starts)
                    )
                    del future, batcher  # an evicted block must not outlive its slot
                batch = (
                    parts[0]
                    if len(parts) == 1
                    else tuple(torch.cat(ts, dim=0) for ts in zip(*parts, strict=True))
                )
                del parts
                for b in np.flatnonzero(
                    (sched.last_batch == i) | ((i == n_batches - 1) & (sched.last_batch > i))
                ):
                    if int(b) not in pending:
                        continue
                    del pending[int(b)]
                    self._account(-int(sizes[b]))
                yield (starts, *batch)
        finally:
            for future in pending.values():
                future.cancel()
            executor.shutdown(wait=True, cancel_futures=True)
            self._account(-sum(int(sizes[b]) for b in pending))
            pending.clear()


def release_free_heap() -> None:
    """Return the C heap's free memory to the OS (glibc ``malloc_trim``; elsewhere a no-op).

    Zarr decodes chunks into buffers of a few MiB on a pool of threads, and glibc keeps freed
    buffers in per-thread heaps: without this a streaming run's RSS creeps above what the loader
    holds (measured: +70 MiB after six 36 MiB block reads). The loader calls it after each block
    read, on the background thread.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


RUNTIME_RESERVE = 64 * 2**20
"""Bytes a whole-process budget keeps back for the runtime's own growth once loading starts
(zarr's and torch's thread pools, allocator slack)."""


def loader_budget(process_budget: int, *, reserve: int = RUNTIME_RESERVE) -> int:
    """The part of a whole-process memory budget left for a :class:`StreamingLoader`.

    ``--max-memory`` on the command line bounds the process (what a batch scheduler enforces);
    the loader gets that minus what the process already holds (interpreter, libraries, model)
    and ``reserve``.

    Raises
    ------
    SpecError
        When the process already uses the whole budget.
    """
    rss = current_rss()
    left = int(process_budget) - rss - int(reserve)
    if left <= 0:
        raise SpecError(
            f"max_memory {_fmt(int(process_budget))} is already used by the process itself "
            f"({_fmt(rss)} resident before loading any data, {_fmt(int(reserve))} reserved)"
        )
    return left


def read_reserve(outer_bytes: int, concurrency: int) -> int:
    """Bytes to budget for a block read in flight: four outer chunks (shards, or chunks when
    unsharded) per concurrent read.

    Zarr fetches a whole shard when a read covers it, then decodes its inner chunks: measured
    on the PeMS-scale store (32.7 MiB shards), a 360 MiB block read peaks 103 MiB above the block
    at concurrency 1, 237 MiB at 2 and 375 MiB at 10, with no gain in speed beyond 1-2 on two
    cores (decompression-bound).
    """
    return 4 * int(concurrency) * int(outer_bytes)
