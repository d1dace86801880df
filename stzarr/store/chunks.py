"""Chunk integrity: the one place where every chunk stzarr reads is checked.

Every array of a store stzarr writes ends its codec chain with a CRC-32C of the encoded chunk
(Zarr v3's ``crc32c`` codec), every chunk is written (an all-NaN chunk too) and the group records
the expected number of chunk (or shard) files per array at commit (:data:`INTEGRITY_KEY`).

Every read goes through :class:`ChunkCheckedStore`, a Zarr store wrapper that
:func:`stzarr.store.format.open_store` hands to zarr and to xarray alike, so statistics, loaders,
streaming, rechunk, info and verify all get the same checks:

* a chunk key of such a store that is not there is an error, never the fill value (NaN);
* the bytes of every chunk, every inner chunk of a shard and every shard index are checked
  against their CRC-32C before they are decoded;

and either failure raises :class:`~stzarr.errors.StoreDamagedError`, one line naming the store,
the array and the chunk. Stores written before checksums existed are read unchecked, with a
warning.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numpy as np
import zarr
from zarr.abc.store import ByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import FsspecStore, LocalStore, WrapperStore

from stzarr.errors import StoreDamagedError, StoreFormatError

INTEGRITY_KEY = "stzarr_integrity"
CHECKSUM = "crc32c"
CRC_BYTES = 4
INDEX_ENTRY_BYTES = 16  # a shard index entry: offset and length, two uint64
EMPTY = np.uint64(2**64 - 1)  # a shard index entry for a chunk that was never written


@dataclass(frozen=True)
class ArrayCheck:
    """How the chunks of one array are checked.

    Attributes
    ----------
    checksum : bool
        The codec chain ends in ``crc32c`` (bytes are verified before decoding).
    complete : bool
        Every chunk was written (a missing one is damage, not the fill value).
    shape : tuple of int
        The array's shape.
    shard_shape, inner_shape : tuple of int, or None
        Shape of a shard and of its inner chunks (None: unsharded).
    """

    checksum: bool
    complete: bool
    shape: tuple[int, ...]
    shard_shape: tuple[int, ...] | None = None
    inner_shape: tuple[int, ...] | None = None

    @property
    def inner_chunks(self) -> int | None:
        """Inner chunks per shard (None: unsharded)."""
        if self.shard_shape is None or self.inner_shape is None:
            return None
        return math.prod(s // i for s, i in zip(self.shard_shape, self.inner_shape, strict=True))

    @property
    def index_bytes(self) -> int:
        """Bytes of a shard's index (an offset and a length per inner chunk, then a CRC-32C)."""
        return (self.inner_chunks or 0) * INDEX_ENTRY_BYTES + CRC_BYTES

    def written(self, shard: tuple[int, ...]) -> np.ndarray:
        """Which inner chunks of ``shard`` (grid coordinates) hold data: those that overlap the
        array (a shard at the end of an axis may reach past it). Boolean, C order."""
        assert self.shard_shape is not None and self.inner_shape is not None
        axes = []
        for coord, size, outer, inner in zip(
            shard, self.shape, self.shard_shape, self.inner_shape, strict=True
        ):
            extent = min(outer, size - coord * outer)
            axes.append(np.arange(outer // inner) * inner < extent)
        mask = axes[0]
        for axis in axes[1:]:
            mask = np.logical_and.outer(mask, axis)
        return mask.reshape(-1)


def _crc_ok(data: np.ndarray) -> bool:
    """``data`` (uint8) ends with the little-endian CRC-32C of the bytes before it."""
    if len(data) < CRC_BYTES:
        return False
    stored = int.from_bytes(data[-CRC_BYTES:].tobytes(), "little")
    return google_crc32c.value(data[:-CRC_BYTES]) == stored


def array_check(meta: Mapping[str, Any], complete: bool) -> ArrayCheck:
    """The checks of an array from its v3 metadata (plain JSON form)."""
    codecs = meta.get("codecs", [])
    shape = tuple(meta["shape"])
    if len(codecs) == 1 and codecs[0].get("name") == "sharding_indexed":
        config = codecs[0]["configuration"]
        names = [c.get("name") for c in config.get("codecs", [])]
        return ArrayCheck(
            checksum=bool(names) and names[-1] == CHECKSUM,
            complete=complete,
            shape=shape,
            shard_shape=tuple(meta["chunk_grid"]["configuration"]["chunk_shape"]),
            inner_shape=tuple(config["chunk_shape"]),
        )
    names = [c.get("name") for c in codecs]
    return ArrayCheck(bool(names) and names[-1] == CHECKSUM, complete, shape)


def expected_chunk_files(meta: Mapping[str, Any]) -> int:
    """Chunk (or shard) files of an array whose every chunk is written."""
    shape = meta["shape"]
    grid = meta["chunk_grid"]["configuration"]["chunk_shape"]
    return math.prod(math.ceil(s / g) for s, g in zip(shape, grid, strict=True))


def integrity_record(array_meta: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The group attribute recorded at commit: checksum kind and chunk files per array."""
    return {
        "checksum": CHECKSUM,
        "chunk_files": {name: expected_chunk_files(m) for name, m in sorted(array_meta.items())},
    }


class ChunkCheckedStore(WrapperStore):
    """A read-only Zarr store wrapper that refuses missing and corrupted chunks.

    Parameters
    ----------
    store : zarr.abc.store.Store
        The underlying store (local or fsspec).
    display : str
        The store's path or URL, for messages.
    """

    def __init__(self, store: Any, display: str = "") -> None:
        super().__init__(store)
        self.display = display
        self.checks: dict[str, ArrayCheck] = {}

    def _with_store(self, store: Any) -> ChunkCheckedStore:  # zarr's WrapperStore protocol
        out = type(self)(store, self.display)
        out.checks = self.checks
        return out

    def configure(self, attrs: Mapping[str, Any], array_meta: Mapping[str, Mapping]) -> bool:
        """Set the checks of every array from the group metadata; False when the store has no
        checksums (written before stzarr recorded them)."""
        integrity = attrs.get(INTEGRITY_KEY)
        recorded = integrity.get("chunk_files", {}) if isinstance(integrity, dict) else {}
        self.checks = {
            name: array_check(meta, complete=name in recorded) for name, meta in array_meta.items()
        }
        return bool(recorded) and all(c.checksum for c in self.checks.values())

    def damaged(self, name: str, chunk: str, problem: str) -> StoreDamagedError:
        """The error for ``chunk`` (e.g. ``"shard c/1/0/0"``) of array ``name``: one line."""
        return StoreDamagedError(
            f"{self.display}: array '{name}' {chunk} {problem}; the store is damaged "
            "(restore it or convert the source again)"
        )

    async def get(
        self,
        key: str,
        prototype: BufferPrototype,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        """Read ``key``; chunk keys are checked (presence and CRC-32C) before returning."""
        buf = await self._store.get(key, prototype, byte_range)
        name, sep, rest = key.partition("/c/")
        check = self.checks.get(name) if sep else None
        if check is None:
            return buf
        sharded = check.inner_chunks is not None
        chunk = f"{'shard' if sharded else 'chunk'} c/{rest}"
        if buf is None:
            if check.complete:
                raise self.damaged(name, chunk, "is missing")
            return None
        if check.checksum:
            self._verify(name, chunk, check, buf, byte_range, rest)
        return buf

    def _verify(
        self,
        name: str,
        chunk: str,
        check: ArrayCheck,
        buf: Buffer,
        byte_range: ByteRequest | None,
        coords: str,
    ) -> None:
        data = buf.as_numpy_array()
        if check.inner_chunks is None:
            if byte_range is None:
                self.check_chunk(name, chunk, data)
            return
        if isinstance(byte_range, RangeByteRequest):
            if not _crc_ok(data):
                where = f"{chunk} (inner chunk at bytes {byte_range.start}-{byte_range.end})"
                raise self.damaged(name, where, "fails its checksum (corrupted)")
            return
        if isinstance(byte_range, SuffixByteRequest) or byte_range is None:
            shard = tuple(int(c) for c in coords.split("/"))
            entries = self.check_index(name, chunk, check, data[-check.index_bytes :], shard)
            if byte_range is None:
                for offset, length in entries:
                    if offset != EMPTY:
                        self.check_inner(
                            name, chunk, data[int(offset) : int(offset + length)], offset
                        )

    def check_index(
        self, name: str, chunk: str, check: ArrayCheck, index: np.ndarray, shard: tuple[int, ...]
    ) -> np.ndarray:
        """Verify the index bytes of ``shard`` (of array ``name``; ``chunk`` names it in
        messages): its CRC-32C, and that no inner chunk holding data is absent. Returns the
        ``(offset, nbytes)`` uint64 entries, one row per inner chunk in C order.

        Raises
        ------
        StoreDamagedError
            When the index is short (a truncated shard), fails its checksum or lacks a chunk.
        """
        if len(index) != check.index_bytes or not _crc_ok(index):
            raise self.damaged(
                name, chunk, "has a shard index that fails its checksum (truncated?)"
            )
        entries = index[:-CRC_BYTES].view("<u8").reshape(-1, 2)
        if check.complete and (entries[check.written(shard), 0] == EMPTY).any():
            raise self.damaged(name, chunk, "lacks an inner chunk")
        return entries

    def check_inner(self, name: str, chunk: str, data: np.ndarray, offset: int) -> None:
        """Verify the CRC-32C of the inner chunk at byte ``offset`` of shard ``chunk``.

        Raises
        ------
        StoreDamagedError
            When it fails.
        """
        if not _crc_ok(data):
            where = f"{chunk} (inner chunk at byte {int(offset)})"
            raise self.damaged(name, where, "fails its checksum (corrupted)")

    def check_chunk(self, name: str, chunk: str, data: np.ndarray) -> None:
        """Verify the CRC-32C of the whole (unsharded) chunk file ``chunk``.

        Raises
        ------
        StoreDamagedError
            When it fails.
        """
        if not _crc_ok(data):
            raise self.damaged(name, chunk, "fails its checksum (truncated or corrupted)")


def open_zarr_store(path: str | os.PathLike[str]) -> ChunkCheckedStore:
    """The read-only, checked Zarr store of a local path or fsspec URL (not yet configured)."""
    text = os.fspath(path)
    try:
        if "://" not in text or text.startswith("file://"):
            inner: Any = LocalStore(text.removeprefix("file://"), read_only=True)
        else:
            inner = FsspecStore.from_url(text, read_only=True)
    except Exception as exc:
        raise StoreFormatError(f"cannot open {text} ({exc.__class__.__name__}: {exc})") from None
    return ChunkCheckedStore(inner, text)


def array_metadata(group: zarr.Group) -> dict[str, dict[str, Any]]:
    """The v3 metadata (plain JSON form) of every array in ``group``."""
    return {
        name: array.metadata.to_dict()
        for name, array in group.arrays()  # type: ignore[union-attr]
    }
