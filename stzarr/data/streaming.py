"""Out-of-core index-batching, executed: stream a :class:`~stzarr.plan.stream.StreamPlan` from
a store through a bounded memory budget.

Blocks are read on a background thread (Zarr reads and decompression release the GIL) while the
current ones train, standardised in place with the global train statistics, and wrapped in a
:class:`~stzarr.data.batcher.SeriesBatcher`, so every sample is byte-identical to the in-memory
loaders. The plan (blocks, read ranges, memory bound) is made by :mod:`stzarr.plan.stream`
(:func:`plan_store_stream` sizes it for a store and a batch contract); the loader is given it and
executes the load requests of its :class:`~stzarr.plan.stream.StreamSampler`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stzarr.data.batcher import SeriesBatcher, default_device
from stzarr.data.contract import BatchContract
from stzarr.errors import SpecError
from stzarr.monitor import release_free_heap
from stzarr.plan.partition import PartitionPlan
from stzarr.plan.stream import (
    StreamPlan,
    StreamSampler,
    StreamSchedule,
    plan_stream,
    rank_seed,
    read_reserve,
)
from stzarr.plan.windows import WindowSpec
from stzarr.store.format import Store
from stzarr.store.io_config import active_pipeline
from stzarr.store.reader import files_in_flight, read_threads
from stzarr.store.stats import Stats


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


def plan_store_stream(
    store: Store,
    spec: WindowSpec,
    starts: np.ndarray,
    contract: BatchContract,
    *,
    batch_size: int,
    max_memory: int | None,
    with_mask: bool = True,
    pool: int = 2,
    prefetch: int = 1,
) -> StreamPlan:
    """The :class:`~stzarr.plan.stream.StreamPlan` of streaming ``starts`` of ``store`` in
    batches of ``contract`` (resolved, :meth:`BatchContract.for_store`) through ``max_memory``
    bytes: block, batch and read-buffer sizes counted from the store's shape and chunks.

    Raises
    ------
    SpecError
        When ``starts`` read outside the store, or ``max_memory`` cannot hold the smallest plan.
    """
    n_time, n_node, n_feature = store.shape
    starts = np.asarray(starts, dtype=np.int64)
    if starts.size and (starts.min() < 0 or starts.max() + spec.span > n_time):
        raise SpecError(
            f"starts {int(starts.min())}..{int(starts.max())} read outside the store's "
            f"{n_time} steps"
        )
    n_cal = len(contract.calendar_names())
    outer_bytes = (store.shard_time or store.chunk_time) * n_node * n_feature * 4
    return plan_stream(
        starts,
        spec,
        chunk_time=store.chunk_time,
        step_bytes=n_node * n_feature * 4 + n_cal * 4,
        batch_size=batch_size,
        batch_bytes=contract.batch_bytes(store, spec, batch_size, with_mask=with_mask),
        max_memory=max_memory,
        read_reserve=read_reserve(
            outer_bytes, files_in_flight(read_threads(active_pipeline().threads))
        ),
        pool=pool,
        prefetch=prefetch,
    )


class StreamingLoader:
    """Execute a :class:`~stzarr.plan.stream.StreamPlan`: stream its windows from a store.

    Iterating yields one epoch of ``(x, y, missing)`` batches (the batch contract;
    ``(x, y)`` with ``with_mask=False``), ``x`` ``(b, input_steps, n, F_in)`` and ``y``
    ``(b, horizon, n, F_out)``, each window exactly once; call :meth:`set_epoch` before each
    epoch (as with ``DistributedSampler``). Blocks are read on one background thread, at most
    ``plan.capacity`` resident or in flight.

    Parameters
    ----------
    store : Store
    stats : Stats
        Train-split statistics (the same for every rank).
    plan : StreamPlan
        What to stream (:func:`plan_store_stream`); its batch bytes must be those of
        ``contract`` and ``with_mask``.
    contract : BatchContract, optional
        What a batch holds (default: :class:`BatchContract`'s defaults for ``store``).
    seed, shuffle, num_batches
        Those of :class:`~stzarr.plan.stream.StreamSampler`.
    with_mask : bool
        Yield the mask of missing targets (default, as every loader does).
    device : torch.device or str, optional
        Where blocks live and batches are built (default: CUDA when available).
    """

    def __init__(
        self,
        store: Store,
        stats: Stats,
        plan: StreamPlan,
        *,
        contract: BatchContract | None = None,
        seed: int = 0,
        shuffle: bool = True,
        num_batches: int | None = None,
        with_mask: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        self.store = store
        self.stats = stats
        self.plan = plan
        self.contract = (contract or BatchContract()).for_store(store)
        self.sampler = StreamSampler(plan, seed=seed, shuffle=shuffle, num_batches=num_batches)
        self.with_mask = bool(with_mask)
        self.device = torch.device(device) if device is not None else default_device()
        self.counters = StreamCounters()
        self._lock = threading.Lock()

    @classmethod
    def from_starts(
        cls,
        store: Store,
        stats: Stats,
        spec: WindowSpec,
        starts: np.ndarray,
        *,
        batch_size: int,
        max_memory: int | None,
        contract: BatchContract | None = None,
        with_mask: bool = True,
        pool: int = 2,
        prefetch: int = 1,
        **kwargs: Any,
    ) -> StreamingLoader:
        """Plan the streaming of ``starts`` (:func:`plan_store_stream`) and build its loader.

        Other keyword arguments are those of :class:`StreamingLoader`.
        """
        contract = (contract or BatchContract()).for_store(store)
        plan = plan_store_stream(
            store,
            spec,
            starts,
            contract,
            batch_size=batch_size,
            max_memory=max_memory,
            with_mask=with_mask,
            pool=pool,
            prefetch=prefetch,
        )
        return cls(store, stats, plan, contract=contract, with_mask=with_mask, **kwargs)

    @classmethod
    def from_partition(
        cls,
        store: Store,
        partitions: PartitionPlan,
        rank: int,
        stats: Stats,
        **kwargs: Any,
    ) -> StreamingLoader:
        """Stream rank ``rank``'s starts of a :class:`~stzarr.plan.partition.PartitionPlan`.

        Keyword arguments are those of :meth:`from_starts` (``batch_size``, ``max_memory``,
        ...). The seed is combined with the rank so ranks shuffle differently.
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
        return cls.from_starts(
            store,
            stats,
            partitions.spec,
            partitions.rank_starts(rank),
            seed=rank_seed(seed, rank),
            **kwargs,
        )

    @property
    def epoch(self) -> int:
        """The epoch the next iteration yields."""
        return self.sampler.epoch

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of the next iteration."""
        self.sampler.set_epoch(epoch)

    def schedule(self, epoch: int | None = None) -> StreamSchedule:
        """The yield order of ``epoch`` (default: the current one)."""
        return self.sampler.schedule(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for _, *batch in self.batches():
            yield tuple(batch)

    def _load(self, b: int) -> SeriesBatcher:
        lo, hi = (int(v) for v in self.plan.read_ranges[b])
        t0 = time.perf_counter()
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
            **self.contract.batcher_options(),
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
        """Yield ``(starts, x, y, missing)`` (``(starts, x, y)`` without the mask) for one epoch.

        ``starts`` are the global starts of the batch's samples, in the order of the rows.
        """
        plan, sched = self.plan, self.schedule(epoch)
        sizes = plan.block_bytes()
        pending: dict[int, Future[SeriesBatcher]] = {}
        n_batches = len(self)
        n_loads = int(np.count_nonzero(sched.first_batch < n_batches))  # blocks this epoch needs
        next_load = 0
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stzarr-stream")
        try:
            for i, request in enumerate(self.sampler.requests(sched)):
                while next_load < n_loads and len(pending) < plan.capacity:
                    b = int(sched.block_order[next_load])
                    self._account(int(sizes[b]))
                    pending[b] = executor.submit(self._load, b)
                    next_load += 1
                parts = []
                for block, seg_starts in request.parts():
                    future = pending[block]
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
                yield (request.starts, *batch)
        finally:
            for future in pending.values():
                future.cancel()
            executor.shutdown(wait=True, cancel_futures=True)
            self._account(-sum(int(sizes[b]) for b in pending))
            pending.clear()
