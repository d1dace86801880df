"""Stream blocks from a source into a :class:`stzarr.StoreWriter`, reading ahead on a thread.

The next block is read on a background thread while the current one is converted, counted,
compressed and written (Blosc and HDF5 I/O release the GIL), so conversion runs close to the
speed of a plain read. Memory is bounded by two source blocks plus one float32 block.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from stzarr.errors import StzarrError
from stzarr.store.format import StoreWriter

BLOCK_BYTES = 32 * 2**20  # float32 bytes per write (a whole number of chunks)
MIN_SHARDS = 2  # shards per write: zarr encodes one shard's chunks serially, shards in parallel
HASH_PIECE = 16 * 2**20


@dataclass
class MissingCounts:
    """Readings counted while streaming.

    ``zero`` counts exact zeros, ``nan`` NaN readings in the source and ``inf`` infinite ones
    (also values beyond the float32 range); infinities are stored as NaN. ``missing`` follows
    the store's convention: zeros + NaN + inf for ``"zero"``, NaN + inf for ``"nan"``.
    """

    missing_value: str
    total: int = 0
    zero: int = 0
    nan: int = 0
    inf: int = 0

    def add(self, block: np.ndarray) -> None:
        """Count ``block`` (float32) and replace infinities by NaN in place."""
        self.total += block.size
        self.zero += int(np.count_nonzero(block == 0))
        finite = np.isfinite(block)
        if not finite.all():
            bad = block[~finite]
            n_nan = int(np.count_nonzero(np.isnan(bad)))
            self.nan += n_nan
            self.inf += bad.size - n_nan
            block[~finite] = np.nan

    @property
    def missing(self) -> int:
        """Missing readings under the store's convention."""
        return self.nan + self.inf + (self.zero if self.missing_value == "zero" else 0)

    def merged(self, recorded: dict) -> MissingCounts:
        """These counts plus those ``recorded`` earlier (a store's ``missing`` attribute)."""
        return MissingCounts(
            self.missing_value,
            *(getattr(self, k) + int(recorded[k]) for k in ("total", "zero", "nan", "inf")),
        )

    def to_dict(self) -> dict:
        """Plain data for the store's ``missing`` attribute."""
        out = asdict(self)
        out["missing"] = self.missing
        out["fraction"] = self.missing / self.total if self.total else 0.0
        return out


def block_steps(writer: StoreWriter, step_bytes: int, target_bytes: int | None = None) -> int:
    """Steps per read/write block: about ``target_bytes`` (default :data:`BLOCK_BYTES`) of
    float32 in whole chunks; when sharded, whole shards, :data:`MIN_SHARDS` of them if that
    stays within four times the target (memory then scales with the shard size)."""
    target_bytes = target_bytes or BLOCK_BYTES
    unit = writer.block_time
    unit_bytes = max(1, unit * step_bytes)
    least = 1
    if writer.array.shards is not None and MIN_SHARDS * unit_bytes <= 4 * target_bytes:
        least = MIN_SHARDS
    return unit * max(least, target_bytes // unit_bytes)


def stream_into(
    writer: StoreWriter,
    read: Callable[[int, int], np.ndarray],
    *,
    missing_value: str,
    desc: str,
    progress: bool = True,
    offset: int = 0,
) -> MissingCounts:
    """Copy ``read(t0, t1)`` blocks, ``(t, node, feature)`` of any float dtype, into ``writer``.

    Parameters
    ----------
    writer : StoreWriter
        The open store writer (or anything with its ``shape``, ``block_time``, ``array``,
        ``path`` and ``write``); its shape gives the extent.
    read : callable
        Returns source steps ``[t0, t1)``; runs on a background thread one block ahead.
    missing_value : {"zero", "nan"}
        Convention used for the counts.
    desc : str
        Progress-bar label.
    progress : bool
        Show a tqdm bar.
    offset : int
        Store step of source step 0 (``stzarr append`` writes after the existing steps); the
        blocks are cut on the store's chunk (or shard) boundaries.

    Returns
    -------
    MissingCounts
    """
    n_total, n_node, n_feature = writer.shape
    n_time = n_total - offset
    step = block_steps(writer, n_node * n_feature * 4)
    edges = [offset, *range((offset // step + 1) * step, n_total, step), n_total]
    ranges = [(a - offset, b - offset) for a, b in itertools.pairwise(edges)]
    counts = MissingCounts(missing_value)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stzarr-read")
    try:
        with tqdm(
            total=n_time, unit="step", unit_scale=True, desc=desc, disable=not progress
        ) as bar:
            pending: Future = pool.submit(read, *ranges[0])
            for i, (t0, t1) in enumerate(ranges):
                block = pending.result()
                if i + 1 < len(ranges):
                    pending = pool.submit(read, *ranges[i + 1])
                block = np.asarray(block, dtype=np.float32)
                if block.shape != (t1 - t0, n_node, n_feature):
                    raise StzarrError(f"source block {t0}:{t1} has shape {block.shape}")
                counts.add(block)
                try:
                    writer.write(offset + t0, block)
                except OSError as exc:
                    raise StzarrError(f"writing {writer.path} failed: {exc}") from None
                del block
                bar.update(t1 - t0)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return counts


class FileHasher:
    """SHA-256 of a file computed on a background thread (hashlib releases the GIL).

    With ``follow`` (a callable returning how far into the file the conversion has read, or
    None when unknown) the hasher stays behind the conversion's reads, so each byte comes from
    disk once and the hash reads it back from the page cache; :meth:`release` lets it finish
    the rest. Without ``follow`` it reads freely.
    """

    def __init__(
        self, path: str | os.PathLike[str], follow: Callable[[], int | None] | None = None
    ) -> None:
        self.path = Path(path)
        self._follow = follow
        self._digest: str | None = None
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._released = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stzarr-sha256", daemon=True)
        self._thread.start()

    def _wait_for(self, end: int) -> None:
        while not (self._stop.is_set() or self._released.is_set()):
            front = self._follow() if self._follow is not None else None
            if front is None or front >= end:
                return
            self._released.wait(0.02)

    def _run(self) -> None:
        try:
            sha = hashlib.sha256()
            size = self.path.stat().st_size
            with self.path.open("rb") as fh:
                pos = 0
                while not self._stop.is_set():
                    self._wait_for(min(pos + HASH_PIECE, size))
                    piece = fh.read(HASH_PIECE)
                    if not piece:
                        self._digest = sha.hexdigest()
                        return
                    sha.update(piece)
                    pos += len(piece)
        except BaseException as exc:  # reported by result()
            self._error = exc

    def release(self) -> None:
        """Stop following the conversion: hash the rest at full speed."""
        self._released.set()

    def result(self) -> str:
        """Wait for and return the hex digest."""
        self.release()
        self._thread.join()
        if self._error is not None:
            raise StzarrError(f"cannot checksum {self.path}: {self._error}")
        if self._digest is None:
            raise StzarrError(f"checksum of {self.path} was cancelled")
        return self._digest

    def cancel(self) -> None:
        """Stop hashing (used when the conversion fails)."""
        self._stop.set()
        self._thread.join()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file, read in pieces (memory stays small)."""
    sha = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while piece := fh.read(HASH_PIECE):
            sha.update(piece)
    return sha.hexdigest()
