"""stzarr's read path for a store's ``data``: each file read once, checked, decoded in parallel.

:meth:`stzarr.store.format.Store.read` comes here for the stores stzarr writes (float32, chunks
spanning
all nodes and features, codecs ``bytes`` -> optional Blosc -> ``crc32c``, sharded or not, with
the integrity record of :mod:`stzarr.store.chunks`). A read of ``[start, stop)``:

* plans the files (chunks, or shards) that hold those steps and, within a shard, the inner
  chunks needed;
* reads each file from storage once, on a thread pool: a whole file in one read, or, for a
  shard only partly needed, its index and then each contiguous run of the inner chunks needed
  (local files: one ``open`` per file; URL stores: one request per file or per run);
* checks those same bytes (presence, shard index, every CRC-32C; the messages of
  :class:`~stzarr.store.chunks.ChunkCheckedStore`) and decodes them (Blosc through ``numcodecs``,
  which releases the GIL) straight into the output, an inner chunk per task, so that reading,
  checking and decoding of different files overlap;
* keeps at most :func:`files_in_flight` files' worth of bytes read but not yet decoded.

What it does not recognise (another codec, a store written before checksums) is read by one
call of zarr's own pipeline through the checked store instead (:meth:`DataReader.supports`).
The choice was measured (``docs/codecs.md``): this path reads each file once where checking
before ``zarrs`` read each twice, and decodes many chunks at once where zarr's pipeline, one
call per file, decoded one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numcodecs import blosc
from zarr.abc.store import RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from stzarr.store.chunks import CRC_BYTES, EMPTY, ArrayCheck, ChunkCheckedStore

ARRAY = "data"
MIN_FILES_IN_FLIGHT = 4
READ_BLOCK_BYTES = 64 * 2**20
"""About how much a pass over a whole store reads at once (``verify --full``, ``info``)."""


def block_steps(file_time: int, step_bytes: int, target_bytes: int) -> int:
    """Steps in a block of whole files (``file_time`` steps each) of about ``target_bytes``,
    at least one file."""
    return file_time * max(1, target_bytes // max(1, file_time * step_bytes))


def files_in_flight(threads: int) -> int:
    """Files read but not yet decoded, at most, in one read with ``threads`` threads."""
    return max(MIN_FILES_IN_FLIGHT, threads + 1)


def read_threads(threads: int | None) -> int:
    """Threads of a read: ``threads``, or one per CPU plus one (a read waiting on storage)."""
    return int(threads) if threads else (os.cpu_count() or 1) + 1


@dataclass(frozen=True)
class Layout:
    """How the ``data`` array's files hold it, for the encodings this reader decodes.

    Attributes
    ----------
    n_time : int
        Steps in the array.
    chunk_time, file_time : int
        Steps per (inner) chunk and per file (a shard, or a chunk when unsharded).
    step_bytes : int
        Decoded bytes of one step (all nodes and features, float32).
    blosc : bool
        Chunks are Blosc-compressed (else raw little-endian bytes).
    """

    n_time: int
    chunk_time: int
    file_time: int
    step_bytes: int
    blosc: bool

    @property
    def sharded(self) -> bool:
        """Files are shards of several inner chunks."""
        return self.file_time != self.chunk_time

    @property
    def inner(self) -> int:
        """Chunks per file."""
        return self.file_time // self.chunk_time

    @property
    def chunk_bytes(self) -> int:
        """Decoded bytes of one (inner) chunk."""
        return self.chunk_time * self.step_bytes

    @property
    def file_bytes(self) -> int:
        """Decoded bytes of one file."""
        return self.file_time * self.step_bytes


def _codecs_blosc(codecs: list[Mapping[str, Any]]) -> bool | None:
    """True / False for ``bytes(little) -> [blosc] -> crc32c`` with / without Blosc; None for
    any other chain."""
    names = [c.get("name") for c in codecs]
    endian = codecs[0].get("configuration", {}).get("endian", "little") if codecs else None
    if not names or names[0] != "bytes" or endian != "little" or names[-1] != "crc32c":
        return None
    middle = names[1:-1]
    return True if middle == ["blosc"] else False if middle == [] else None


def layout_of(meta: Mapping[str, Any], check: ArrayCheck | None) -> Layout | None:
    """The layout of ``data`` from its v3 metadata (plain JSON form), or None when this reader
    does not decode it (other codecs or dtype, chunks not spanning nodes and features, or no
    integrity record to check against)."""
    if check is None or not (check.checksum and check.complete):
        return None
    shape = tuple(meta["shape"])
    grid = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
    if meta.get("data_type") != "float32" or len(shape) != 3 or grid[1:] != shape[1:]:
        return None
    codecs = meta.get("codecs", [])
    chunk = grid
    if len(codecs) == 1 and codecs[0].get("name") == "sharding_indexed":
        config = codecs[0]["configuration"]
        index = [c.get("name") for c in config.get("index_codecs", [])]
        if config.get("index_location", "end") != "end" or index != ["bytes", "crc32c"]:
            return None
        chunk, codecs = tuple(config["chunk_shape"]), config.get("codecs", [])
        if chunk[1:] != shape[1:] or grid[0] % chunk[0]:
            return None
    compressed = _codecs_blosc(list(codecs))
    if compressed is None:
        return None
    return Layout(shape[0], chunk[0], grid[0], shape[1] * shape[2] * 4, compressed)


class DataReader:
    """Reads ``data[start:stop]`` of one store into a float32 array (see the module docs).

    Parameters
    ----------
    zstore : ChunkCheckedStore
        The store's configured checked store (its checks name the damage; its inner store reads
        files at URLs).
    path : Path or None
        The store's local path, or None for a store at a URL.
    layout : Layout
        From :func:`layout_of`.
    file_check : callable, optional
        Called as ``file_check(key, bytes)`` with every file read whole (its key below the
        array, e.g. ``"c/3/0/0"``), before its chunks are checked: ``stzarr verify --full``
        binds the file to the manifest on the bytes this read already holds.
    """

    def __init__(
        self,
        zstore: ChunkCheckedStore,
        path: Path | None,
        layout: Layout,
        file_check: Callable[[str, np.ndarray], None] | None = None,
    ) -> None:
        self.zstore = zstore
        self.path = path
        self.layout = layout
        self.file_check = file_check
        self.check = zstore.checks[ARRAY]
        self._prototype = default_buffer_prototype()

    def _name(self, file: int) -> tuple[str, str]:
        """The key of a file and how messages name it."""
        key = f"c/{file}/0/0"
        return key, f"{'shard' if self.layout.sharded else 'chunk'} {key}"

    def _missing(self, file: int) -> Exception:
        return self.zstore.damaged(ARRAY, self._name(file)[1], "is missing")

    # -- reading bytes ------------------------------------------------------------------------

    def _read_local(
        self, file: int, ranges: list[tuple[int, int]] | None, spare: list[np.ndarray]
    ) -> tuple:
        """Bytes of a local file: whole (``ranges`` None; into a ``spare`` buffer if one is
        large enough) or the index and then ``ranges``."""
        assert self.path is not None
        try:
            handle = open(self.path / ARRAY / self._name(file)[0], "rb", buffering=0)
        except FileNotFoundError:
            raise self._missing(file) from None
        with handle:
            size = os.fstat(handle.fileno()).st_size
            if ranges is None:
                fits = [i for i, b in enumerate(spare) if len(b) >= size]
                buf = spare.pop(fits[0]) if fits else None
                return _readinto(handle, 0, size, buf), None
            index_bytes = self.check.index_bytes
            index = _readinto(handle, max(0, size - index_bytes), min(size, index_bytes))
            runs = self._runs(file, index, ranges)
            return index, [(lo, _readinto(handle, lo, hi - lo)) for lo, hi in runs]

    def _read_url(self, file: int, ranges: list[tuple[int, int]] | None, spare: list) -> tuple:
        """Bytes of a file of a URL store, through the checked store's inner (unchecked) store:
        one request for a whole file, else one for the index and one per run."""
        key = f"{ARRAY}/{self._name(file)[0]}"
        store = self.zstore._store  # the unchecked store: the bytes are checked here, once

        def get(byte_range: Any = None) -> np.ndarray:
            buf = sync(store.get(key, self._prototype, byte_range))
            if buf is None:
                raise self._missing(file)
            return buf.as_numpy_array()

        if ranges is None:
            return get(), None
        index = get(SuffixByteRequest(self.check.index_bytes))
        runs = self._runs(file, index, ranges)
        return index, [(lo, get(RangeByteRequest(lo, hi))) for lo, hi in runs]

    def _runs(self, file: int, index: np.ndarray, needed: list[tuple[int, int]]) -> list:
        """Check a shard's index and return the byte runs (start, stop) covering the inner
        chunks ``needed`` (file-relative chunk numbers as ``(first, stop)``), adjacent chunks
        merged."""
        entries = self._entries(file, index)
        runs: list[list[int]] = []
        for first, stop in needed:
            for inner in range(first, stop):
                lo, n = (int(v) for v in entries[inner])
                if runs and runs[-1][1] == lo:
                    runs[-1][1] = lo + n
                else:
                    runs.append([lo, lo + n])
        return [tuple(r) for r in runs]

    def _entries(self, file: int, index: np.ndarray) -> np.ndarray:
        return self.zstore.check_index(ARRAY, self._name(file)[1], self.check, index, (file, 0, 0))

    # -- planning ------------------------------------------------------------------------------

    def _needed(self, file: int, start: int, stop: int) -> tuple[int, int]:
        """Inner chunks of ``file`` (file-relative) that hold steps of ``[start, stop)``."""
        lay = self.layout
        first_step = file * lay.file_time
        lo = max(start, first_step) - first_step
        hi = min(stop, first_step + lay.file_time, lay.n_time) - first_step
        return lo // lay.chunk_time, -(-hi // lay.chunk_time)

    def _fetch(
        self, file: int, start: int, stop: int, spare: list[np.ndarray]
    ) -> list[tuple[int, np.ndarray]]:
        """Read file ``file`` (into a ``spare`` buffer when it is read whole and one fits),
        check it, and return the chunks to decode: ``(chunk index along time, its bytes)``."""
        lay = self.layout
        first, stop_inner = self._needed(file, start, stop)
        partial = lay.sharded and (first, stop_inner) != self._needed(file, 0, lay.n_time)
        read = self._read_local if self.path is not None else self._read_url
        data, runs = read(file, [(first, stop_inner)] if partial else None, spare)
        if runs is None and self.file_check is not None:
            self.file_check(self._name(file)[0], data)
        chunk0 = file * lay.inner
        if not lay.sharded:
            self.zstore.check_chunk(ARRAY, self._name(file)[1], data)
            return [(chunk0, data)]
        name = self._name(file)[1]
        if runs is None:
            entries = self._entries(file, data[-self.check.index_bytes :])
            runs = [(0, data)]
        else:
            entries = self._entries(file, data)
        units = []
        for inner in range(first, stop_inner):
            offset, nbytes = (int(v) for v in entries[inner])
            base, buf = next(((b, d) for b, d in runs if b <= offset < b + len(d)), (0, data[:0]))
            if entries[inner, 0] == EMPTY or offset + nbytes > base + len(buf):
                raise self.zstore.damaged(ARRAY, name, "is truncated")
            piece = buf[offset - base : offset - base + nbytes]
            self.zstore.check_inner(ARRAY, name, piece, offset)
            units.append((chunk0 + inner, piece))
        return units

    # -- decoding ------------------------------------------------------------------------------

    def _decode(self, chunk: int, encoded: np.ndarray, out: np.ndarray, start: int) -> None:
        """Decode chunk ``chunk`` into the rows of ``out`` (which starts at step ``start``) it
        covers; straight into ``out`` when it covers whole chunk rows, else through a
        temporary."""
        lay = self.layout
        c0 = chunk * lay.chunk_time
        lo, hi = max(c0, start), min(c0 + lay.chunk_time, start + len(out))
        whole = lo == c0 and hi == c0 + lay.chunk_time
        dest = out[lo - start : hi - start] if whole else np.empty(lay.chunk_bytes, np.uint8)
        target = dest.reshape(-1).view(np.uint8)
        body = encoded[:-CRC_BYTES]
        try:
            if lay.blosc:
                if _blosc_nbytes(body) != len(target):  # the frame's own decoded size
                    raise ValueError("a chunk of another size")
                blosc.decompress(body, target)
            elif len(body) == len(target):
                target[:] = body
            else:
                raise ValueError(f"{len(body)} bytes for a chunk of {len(target)}")
        except (RuntimeError, ValueError) as exc:
            file = chunk // lay.inner
            problem = f"cannot be decoded ({exc})"
            raise self.zstore.damaged(ARRAY, self._name(file)[1], problem) from None
        if not whole:
            rows = target.view(np.float32).reshape(lay.chunk_time, *out.shape[1:])
            out[lo - start : hi - start] = rows[lo - c0 : hi - c0]

    def read(self, start: int, stop: int, out: np.ndarray, threads: int) -> None:
        """Fill ``out`` with ``data[start:stop]``, on ``threads`` threads (the caller's among
        them).

        Raises
        ------
        StoreDamagedError
            Naming a damaged file met (missing, a failing CRC-32C, a bad index).
        """
        lay = self.layout
        files = range(start // lay.file_time, -(-stop // lay.file_time))
        work = _Work(iter(files), files_in_flight(threads))
        helpers = [
            threading.Thread(target=self._work, args=(work, start, stop, out), daemon=True)
            for _ in range(min(threads, len(files) * lay.inner) - 1)
        ]
        for helper in helpers:
            helper.start()
        self._work(work, start, stop, out)
        for helper in helpers:
            helper.join()
        if work.error is not None:
            raise work.error

    def _work(self, work: _Work, start: int, stop: int, out: np.ndarray) -> None:
        """One thread's loop: decode a chunk already read if there is one, else read the next
        file while fewer than ``work.limit`` files are read but not yet decoded."""
        while True:
            with work.ready:
                while True:
                    if work.error is not None:
                        return
                    if work.units:
                        job = work.units.pop()
                        break
                    if work.open < work.limit and (file := next(work.files, None)) is not None:
                        work.open += 1
                        job = file
                        break
                    if work.open == 0:
                        return
                    work.ready.wait()
            try:
                if isinstance(job, int):
                    with work.ready:
                        spare = work.spare
                        work.spare = []
                    units = self._fetch(job, start, stop, spare)
                    mine = units.pop()
                    with work.ready:
                        work.spare.extend(spare)
                        work.left[job] = len(units) + 1
                        base = mine[1].base
                        work.buffers[job] = base if isinstance(base, np.ndarray) else None
                        work.units.extend(units)
                        work.ready.notify(len(units))
                    job = mine
                chunk, encoded = job
                self._decode(chunk, encoded, out, start)
                file = chunk // self.layout.inner
                with work.ready:
                    work.left[file] -= 1
                    if not work.left[file]:
                        del work.left[file]
                        buffer = work.buffers.pop(file)
                        if buffer is not None and len(work.spare) < work.limit:
                            work.spare.append(buffer)
                        work.open -= 1
                        work.ready.notify_all()  # a file may be taken, or the read is over
            except BaseException as exc:  # handed to the caller; the other threads stop
                with work.ready:
                    work.error = work.error or exc
                    work.ready.notify_all()
                return


class _Work:
    """What the threads of one read share, under one lock."""

    def __init__(self, files: Iterator[int], limit: int) -> None:
        self.files = files
        self.limit = limit
        self.open = 0  # files taken and not yet fully decoded
        self.left: dict[int, int] = {}  # file -> its chunks not yet decoded
        self.units: list[tuple[int, np.ndarray]] = []  # (chunk, bytes) checked, to decode
        self.buffers: dict[int, np.ndarray | None] = {}  # file -> the buffer it was read into
        self.spare: list[np.ndarray] = []  # buffers of files decoded, to read the next into
        self.error: BaseException | None = None
        self.ready = threading.Condition()


def _readinto(handle: Any, offset: int, size: int, buf: np.ndarray | None = None) -> np.ndarray:
    """``size`` bytes of an unbuffered file from ``offset``, read into ``buf`` (default: a new
    array); fewer if the file ends first."""
    buf = np.empty(size, dtype=np.uint8) if buf is None else buf[:size]
    view = memoryview(buf)
    handle.seek(offset)
    got = 0
    while got < size:
        n = handle.readinto(view[got:])
        if not n:
            break
        got += n
    return buf[:got]


def _blosc_nbytes(frame: np.ndarray) -> int:
    """Decoded size a Blosc frame's header records (bytes 4-7, little-endian)."""
    return int.from_bytes(frame[4:8].tobytes(), "little") if len(frame) >= 16 else -1
