"""Choosing and changing a store's chunk/shard layout for its access pattern.

Training reads a store along time only, in contiguous ranges: a rank's partition (plus halo) or a
streaming block (plus halo). The layout that serves this well, on a laptop SSD as on Lustre/GPFS:

* **chunks of about 4 MiB** (1-8 MiB uncompressed): big enough that per-chunk overheads (a file
  open or a byte-range request, a decompressor call) are amortised, small enough that a range
  boundary wastes little (a range reads whole chunks) and that a decoded chunk in flight per
  concurrent read costs little memory;
* **enough chunks per access unit**: a partition should span at least 16 chunks (chunk-aligned
  boundaries then balance ranks within 1/16, and the halo re-reads at most one chunk), and a
  streaming block at least 8 (blocks are whole chunks);
* **few files**: parallel filesystems pay per file (metadata server load, open latency, inode
  quotas). Above :data:`MAX_CHUNK_FILES` chunks the advice groups chunks into shard files (Zarr v3
  sharding: one file, individually addressable inner chunks) of at most :data:`MAX_SHARD_BYTES`,
  aiming for about :data:`TARGET_SHARDS` files.

:func:`advise_layout` turns this into a :class:`LayoutAdvice` (plain data);
:func:`rechunk_store` copies a store to a new layout with dask (bounded memory: a few blocks of
about :data:`COPY_BLOCK_BYTES` in flight), atomically like every store write.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
from tqdm.dask import TqdmCallback

from stzarr.errors import SpecError
from stzarr.store.atomic import check_apart
from stzarr.store.format import (
    DEFAULT_COMPRESSOR,
    FORMAT_KEY,
    INTEGRITY_KEY,
    TARGET_SHARDS,
    Store,
    StoreWriter,
    advised_shard_time,
    is_local,
    open_store,
)
from stzarr.store.format import MAX_CHUNK_FILES as MAX_CHUNK_FILES  # the layout rules, re-exported
from stzarr.store.format import MAX_SHARD_BYTES as MAX_SHARD_BYTES
from stzarr.store.reader import block_steps
from stzarr.units import format_bytes

TARGET_CHUNK_BYTES = 4 * 2**20
MIN_CHUNK_BYTES = 1 * 2**20
MAX_CHUNK_BYTES = 8 * 2**20
MIN_CHUNKS_PER_PARTITION = 16
MIN_CHUNKS_PER_BLOCK = 8
COPY_BLOCK_BYTES = 64 * 2**20
STREAM_SLOTS = 3  # blocks a StreamingLoader holds with its default pool=2, prefetch=1


@dataclass(frozen=True)
class LayoutAdvice:
    """A recommended layout and why.

    Attributes
    ----------
    chunk_time, shard_time : int, int or None
        Steps per chunk and per shard file (None: unsharded).
    chunk_bytes, shard_bytes : int
        Uncompressed bytes of one chunk / shard.
    n_chunks, n_files : int
        Chunks along time, and files holding them (shards, or chunks when unsharded).
    reasons : tuple of str
        One line per rule that shaped the result.
    """

    chunk_time: int
    shard_time: int | None
    chunk_bytes: int
    shard_bytes: int | None
    n_chunks: int
    n_files: int
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for JSON."""
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        return out


def advise_layout(
    n_time: int,
    n_node: int,
    n_feature: int,
    *,
    itemsize: int = 4,
    world_size: int = 1,
    max_memory: int | None = None,
    train_fraction: float = 0.7,
) -> LayoutAdvice:
    """Chunk and shard sizes along time for partitioned and streamed reads of a store.

    Parameters
    ----------
    n_time, n_node, n_feature : int
        Extent of the store (chunks always span all nodes and features).
    itemsize : int
        Bytes per value (4: float32).
    world_size : int
        Ranks the train split will be partitioned over.
    max_memory : int, optional
        Streaming budget per rank (bytes); blocks are about a third of it.
    train_fraction : float
        Share of the steps in the train split (what ranks partition).
    """
    if min(n_time, n_node, n_feature, itemsize, world_size) < 1:
        raise SpecError("store extent, itemsize and world_size must be positive")
    step = n_node * n_feature * itemsize
    reasons = []
    chunk = max(1, round(TARGET_CHUNK_BYTES / step))
    reasons.append(
        f"~{format_bytes(chunk * step)} chunks ({chunk} steps of {format_bytes(step)})"
        + (" (one step is larger than the target)" if step > MAX_CHUNK_BYTES else "")
    )
    part_steps = max(1, int(n_time * train_fraction) // world_size)
    if part_steps < MIN_CHUNKS_PER_PARTITION * chunk:
        chunk = max(1, part_steps // MIN_CHUNKS_PER_PARTITION)
        reasons.append(
            f"{world_size} partitions of {part_steps} steps: {chunk}-step chunks give "
            f"each >= {MIN_CHUNKS_PER_PARTITION} chunks (balance, halo overhead)"
        )
    if max_memory is not None:
        block_steps = max(1, int(max_memory) // STREAM_SLOTS // step)
        if block_steps < MIN_CHUNKS_PER_BLOCK * chunk:
            chunk = max(1, block_steps // MIN_CHUNKS_PER_BLOCK)
            reasons.append(
                f"streaming blocks of ~{block_steps} steps (budget "
                f"{format_bytes(int(max_memory))}): {chunk}-step chunks give each >= "
                f"{MIN_CHUNKS_PER_BLOCK} chunks"
            )
    chunk = min(chunk, n_time)
    if chunk * step < MIN_CHUNK_BYTES and chunk < n_time:
        reasons.append(
            f"chunks of {format_bytes(chunk * step)} are below {format_bytes(MIN_CHUNK_BYTES)}: "
            "expect per-chunk overheads; shards keep the file count down"
        )
    n_chunks = math.ceil(n_time / chunk)
    shard = advised_shard_time(n_time, chunk, step)
    if shard is not None:
        reasons.append(
            f"{n_chunks} chunk files is many for a parallel filesystem: "
            f"{shard // chunk} chunks per shard file ({format_bytes(shard * step)})"
        )
    n_files = n_chunks if shard is None else math.ceil(n_time / shard)
    return LayoutAdvice(
        chunk_time=int(chunk),
        shard_time=None if shard is None else int(shard),
        chunk_bytes=int(chunk * step),
        shard_bytes=None if shard is None else int(shard * step),
        n_chunks=int(n_chunks),
        n_files=int(n_files),
        reasons=tuple(reasons),
    )


MAX_FILES = 4 * TARGET_SHARDS


def layout_problems(
    store: Store,
    *,
    world_size: int = 1,
    max_memory: int | None = None,
    train_fraction: float = 0.7,
) -> list[str]:
    """What is wrong with ``store``'s current layout for the access pattern (empty: nothing).

    The rules are those of :func:`advise_layout`, with the tolerance of its ranges (chunks of
    1-8 MiB, up to :data:`MAX_FILES` files), so a store that is close to the advice is not
    worth rechunking.
    """
    n_time, n_node, n_feature = store.shape
    step = n_node * n_feature * 4
    chunk = store.chunk_time
    advice = advise_store(
        store, world_size=world_size, max_memory=max_memory, train_fraction=train_fraction
    )
    problems = []
    if chunk * step > MAX_CHUNK_BYTES and chunk > 1:
        problems.append(
            f"chunks of {format_bytes(chunk * step)} are above {format_bytes(MAX_CHUNK_BYTES)}"
        )
    if chunk * step < MIN_CHUNK_BYTES and advice.chunk_time > chunk:
        problems.append(
            f"chunks of {format_bytes(chunk * step)} are below {format_bytes(MIN_CHUNK_BYTES)}"
        )
    part_steps = int(n_time * train_fraction) // world_size
    if part_steps < MIN_CHUNKS_PER_PARTITION * chunk:
        problems.append(
            f"{world_size} partitions of {part_steps} steps hold fewer than "
            f"{MIN_CHUNKS_PER_PARTITION} chunks of {chunk} steps"
        )
    if max_memory is not None:
        block_steps = int(max_memory) // STREAM_SLOTS // step
        if block_steps < MIN_CHUNKS_PER_BLOCK * chunk:
            problems.append(
                f"streaming blocks of ~{block_steps} steps hold fewer than "
                f"{MIN_CHUNKS_PER_BLOCK} chunks of {chunk} steps"
            )
    n_files = layout_summary(store)["n_files"]
    if n_files > MAX_FILES:
        problems.append(f"{n_files} files is many for a parallel filesystem (shard them)")
    return problems


def advise_store(store: Store, **kwargs: Any) -> LayoutAdvice:
    """:func:`advise_layout` for an opened store (float32)."""
    return advise_layout(*store.shape, **kwargs)


def copy_block_time(chunk_time: int, shard_time: int | None, step_bytes: int) -> int:
    """Steps per copy task: whole destination shards (or chunks), about COPY_BLOCK_BYTES."""
    return block_steps(shard_time or chunk_time, step_bytes, COPY_BLOCK_BYTES)


def rechunk_store(
    src: str | os.PathLike[str] | Store,
    dst: str | os.PathLike[str],
    *,
    chunk_time: int,
    shard_time: int | None = None,
    compressor: str = DEFAULT_COMPRESSOR,
    overwrite: bool = False,
    progress: bool = True,
) -> Store:
    """Copy a store to ``dst`` with a new chunk/shard layout along time.

    Data, coordinates, graph and attributes (including cached statistics, which do not depend
    on the layout) are copied; the copy runs as a dask graph of independent tasks, each reading
    one block of whole destination shards (or chunks) from ``src`` and writing it, so memory is
    bounded by a few blocks (:func:`copy_block_time`), whatever the store size. The write is
    atomic (see :class:`~stzarr.store.format.StoreWriter`). ``compressor`` is that of
    :class:`~stzarr.store.format.StoreWriter` (``"lz4"`` trades ~10% larger files for ~3x faster
    reads where decompression is the bottleneck).

    Raises
    ------
    SpecError
        When ``chunk_time`` or ``shard_time`` is invalid.
    StoreExistsError
        When ``dst`` exists and ``overwrite`` is False.
    """
    store = src if isinstance(src, Store) else open_store(src)
    if os.fspath(dst).rstrip("/") == store.path.rstrip("/"):
        raise SpecError("destination is the source store; rechunk into a new store")
    if is_local(dst):
        check_apart(os.fspath(dst).removeprefix("file://"), [store.path])
    if chunk_time < 1 or (shard_time is not None and shard_time < 1):
        raise SpecError("--chunk-time and --shard-time must be positive")
    _, n_node, n_feature = store.shape
    derived = (FORMAT_KEY, "created_by", INTEGRITY_KEY)  # the writer records its own
    attrs = {k: v for k, v in store.attrs.items() if k not in derived}
    with StoreWriter(
        dst,
        time=store.time,
        node_ids=store.node_ids,
        feature_names=store.feature_names,
        edge_index=store.edge_index,
        edge_weight=store.edge_weight,
        attrs=attrs,
        chunk_time=chunk_time,
        shard_time=shard_time,
        overwrite=overwrite,
        compressor=compressor,
    ) as writer:
        target = writer.array
        block = copy_block_time(
            int(target.chunks[0]),
            None if target.shards is None else int(target.shards[0]),
            n_node * n_feature * 4,
        )
        source = store.dask_array(block)
        # a pool of its own, shut down waiting: an interruption stops the main thread only,
        # and a block still being written would recreate the partial after its removal
        pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
        try:
            with (
                dask.config.set(scheduler="threads", pool=pool),
                TqdmCallback(desc="rechunk", disable=not progress),
            ):
                da.store(source, target, lock=False)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return open_store(dst)


def layout_summary(store: Store) -> dict[str, Any]:
    """The store's current layout in the terms of :class:`LayoutAdvice`."""
    n_time, n_node, n_feature = store.shape
    step = n_node * n_feature * 4
    chunk, shard = store.chunk_time, store.shard_time
    n_chunks = math.ceil(n_time / chunk)
    return {
        "chunk_time": chunk,
        "shard_time": shard,
        "chunk_bytes": chunk * step,
        "shard_bytes": None if shard is None else shard * step,
        "n_chunks": n_chunks,
        "n_files": n_chunks if shard is None else math.ceil(n_time / shard),
        "bytes": int(np.prod(store.shape)) * 4,
    }
