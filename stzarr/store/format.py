"""The on-disk store: the contract between every stage of stzarr.

A store is a Zarr v3 group that ``xarray.open_zarr`` opens as a Dataset with

* ``data`` (time, node, feature) float32, chunked along time, Blosc/zstd compressed (lz4 or
  uncompressed on request), optionally sharded (``shard_time`` steps per shard file);
* coordinates ``time`` (datetime64[ns]), ``node`` (sensor ids as strings), ``feature`` (names);
* the static graph as COO: ``edge_index`` (pair, edge) int64 and ``edge_weight`` (edge) float32,
  indices into the ``node`` order;
* group attributes: ``stzarr_format_version``, ``source`` (file, sha256, key, format),
  ``sampling_interval_s``, ``missing_value`` (``"zero"``: 0 and NaN are missing; ``"nan"``: only NaN
  is missing), ``created_by`` and free-form converter notes.

Local stores are written to a hidden temporary sibling and renamed into place on success. Stores
at other fsspec URLs (``s3://``, ``memory://``, ...), where a rename is not atomic, are written in
place. Either way the format version attribute is written last, so an interrupted write never
opens as a store.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec
from zarr.core.buffer.cpu import NDBuffer

import stzarr.store.manifest as manifest
from stzarr.errors import StoreExistsError, StoreFormatError, StzarrError, StzarrWarning
from stzarr.store.atomic import (
    AtomicOutput,
    Transaction,
    check_target,
    lock_store,
    remove_stale_partials,
)
from stzarr.store.chunks import (
    INTEGRITY_KEY,
    ChunkCheckedStore,
    array_metadata,
    integrity_record,
    open_zarr_store,
)
from stzarr.store.io_config import active_pipeline, writing
from stzarr.store.reader import DataReader, block_steps, layout_of, read_threads

if TYPE_CHECKING:
    import dask.array as da
    import xarray as xr

FORMAT_VERSION = 1
FORMAT_KEY = "stzarr_format_version"
DIMS = ("time", "node", "feature")
TIME_UNITS = "nanoseconds since 1970-01-01"  # the time coordinate: int64, CF-encoded
MISSING_CONVENTIONS = ("zero", "nan")
DEFAULT_CHUNK_BYTES = 4 * 2**20
COMPRESSORS: dict[str, BloscCodec | None] = {
    # the default, chosen by benchmarks/codecs.py (docs/codecs.md): on the PeMS-scale stand-in
    # ~1.7x faster to encode and to decode per core than "zstd", files ~5 % larger
    "zstd-bitshuffle": BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),
    "zstd": BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),  # smallest files
    "lz4": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),  # ~4x faster to decode
    "none": None,
}
COORD_COMPRESSOR = ZstdCodec(level=3)

log = logging.getLogger("stzarr.io")


def valid_mask(data: Any, missing_value: str) -> Any:
    """Boolean array, True where a reading is valid under the store's ``missing_value``
    convention (``"zero"``: 0 and NaN are missing; ``"nan"``: NaN is)."""
    if missing_value == "zero":
        return (data == data) & (data != 0)  # NaN != NaN
    if missing_value == "nan":
        return data == data
    raise StoreFormatError(f"unknown missing_value convention {missing_value!r}")


def codec_chain(compressor: BloscCodec | ZstdCodec | None) -> tuple:
    """Bytes-to-bytes codecs of a store array: ``compressor`` (None: none), then a CRC-32C of
    the encoded chunk, verified on every read (:mod:`stzarr.store.chunks`)."""
    return (Crc32cCodec(),) if compressor is None else (compressor, Crc32cCodec())


def is_stzarr_store(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a directory holding a store stzarr wrote (its format marker in the
    group's ``zarr.json``), the only kind of directory ``--overwrite`` may replace."""
    meta = Path(path) / "zarr.json"
    try:
        return FORMAT_KEY in json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        return False


DEFAULT_COMPRESSOR = "zstd-bitshuffle"
COMPRESSOR = COMPRESSORS[DEFAULT_COMPRESSOR]


def compressor_name(array: zarr.Array) -> str:
    """The ``COMPRESSORS`` key of an array's codec as its metadata records it (a Blosc setting
    not in the table is spelled out, e.g. ``"blosc lz4 clevel 9 noshuffle"``)."""

    def key(codec: Any) -> tuple:
        conf = codec.to_dict().get("configuration", {})
        return (codec.to_dict()["name"], conf.get("cname"), conf.get("clevel"), conf.get("shuffle"))

    found = [key(c) for c in array.compressors if c.to_dict()["name"] != "crc32c"]
    for name, codec in COMPRESSORS.items():
        if found == ([] if codec is None else [key(codec)]):
            return name
    return " + ".join(f"{n} {c} clevel {lv} {sh}" if c else str(n) for n, c, lv, sh in found)


def tool_version() -> str:
    """Version string recorded in ``created_by``."""
    from stzarr import __version__

    return f"stzarr {__version__}"


def default_chunk_time(n_node: int, n_feature: int, target_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Number of time steps per chunk so that one float32 chunk is about ``target_bytes``.

    Parameters
    ----------
    n_node, n_feature : int
        Spatial and feature extent of the store (chunks always span all nodes and features).
    target_bytes : int
        Desired uncompressed chunk size.
    """
    step_bytes = max(1, n_node * n_feature * 4)
    return max(1, target_bytes // step_bytes)


MAX_CHUNK_FILES = 256
TARGET_SHARDS = 256
MAX_SHARD_BYTES = 512 * 2**20


def advised_shard_time(n_time: int, chunk_time: int, step_bytes: int) -> int | None:
    """Steps per shard file by the rules of ``docs/parallel-filesystems.md``: None (unsharded)
    up to :data:`MAX_CHUNK_FILES` chunks, else about :data:`TARGET_SHARDS` shard files of at most
    :data:`MAX_SHARD_BYTES` each."""
    n_chunks = math.ceil(n_time / chunk_time)
    if n_chunks <= MAX_CHUNK_FILES:
        return None
    per_shard = math.ceil(n_chunks / TARGET_SHARDS)
    per_shard = max(1, min(per_shard, MAX_SHARD_BYTES // (chunk_time * step_bytes)))
    return per_shard * chunk_time if per_shard > 1 else None


def default_layout(n_time: int, n_node: int, n_feature: int) -> tuple[int, int | None]:
    """``(chunk_time, shard_time)`` of a new store when neither is given: ~4 MiB chunks, sharded
    when there would be more than :data:`MAX_CHUNK_FILES` of them (parallel filesystems pay per
    file; reads are as fast either way: ``docs/codecs.md``)."""
    chunk_time = min(default_chunk_time(n_node, n_feature), n_time)
    return chunk_time, advised_shard_time(n_time, chunk_time, n_node * n_feature * 4)


def consolidate(path: str | os.PathLike[str]) -> None:
    """Consolidate the group's metadata (one read of ``zarr.json`` opens the whole store).

    zarr warns on every call that consolidated metadata is an extension of the v3 spec; stzarr
    relies on it deliberately (xarray reads it), so that warning is silenced here.
    """
    with warnings.catch_warnings(), manifest.unlisted():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(path)


def is_local(path: str | os.PathLike[str]) -> bool:
    """True for plain filesystem paths and ``file://`` URLs."""
    text = os.fspath(path)
    return "://" not in text or text.startswith("file://")


def absolute_location(path: str | os.PathLike[str]) -> str:
    """``path`` as a location that means the same in any working directory: a plain path made
    absolute, a URL (``scheme://...``) kept as it is."""
    text = os.fspath(path)
    return text if "://" in text else os.path.abspath(text)


def local_path(path: str | os.PathLike[str]) -> Path:
    """The filesystem path of a plain path or ``file://`` URL."""
    text = os.fspath(path)
    return Path(text.removeprefix("file://"))


def url_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and the path within it of a URL.

    Raises
    ------
    StzarrError
        When the protocol is unknown or its fsspec implementation is not installed.
    """
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise StzarrError(f"cannot access {url}: {exc}") from None


@dataclass(frozen=True)
class Store:
    """An opened store: its Zarr group, the graph as NumPy COO arrays and the metadata.

    Opening reads metadata and coordinates with zarr alone; the xarray view (:attr:`dataset`,
    :attr:`data`) is built on first use.

    Attributes
    ----------
    path : str
        Where the store lives (path or fsspec URL).
    group : zarr.Group
        The store's group, opened read-only through ``zarr_store``.
    edge_index : numpy.ndarray
        int64 (2, E) COO indices into the node order.
    edge_weight : numpy.ndarray
        float32 (E,) weights.
    attrs : dict
        Group attributes (format version, provenance, conventions).
    zarr_store : ChunkCheckedStore
        The checked Zarr store every read of this store goes through.
    """

    path: str
    group: zarr.Group = field(repr=False, compare=False)
    edge_index: np.ndarray
    edge_weight: np.ndarray
    attrs: dict[str, Any]
    zarr_store: ChunkCheckedStore = field(repr=False, compare=False)

    @cached_property
    def dataset(self) -> xr.Dataset:
        """Lazy (dask-backed) xarray view of the whole group (``xr.open_zarr``)."""
        import xarray as xr

        try:
            return xr.open_zarr(self.zarr_store, consolidated=True, zarr_format=3)
        except StzarrError:
            raise
        except Exception as exc:
            raise StoreFormatError(f"{self.path}: xarray cannot open the store ({exc})") from None

    @cached_property
    def data(self) -> xr.DataArray:
        """The lazy ``data`` variable, dims ``(time, node, feature)`` with the store's
        coordinates: a dask array of one block per shard (or chunk), each block read by
        :meth:`read`."""
        import xarray as xr

        variable = self.dataset["data"]
        return xr.DataArray(
            self.dask_array(), coords=variable.coords, dims=DIMS, name="data", attrs=variable.attrs
        )

    def dask_array(self, block_time: int | None = None) -> da.Array:
        """``data`` as a dask array of ``block_time``-step blocks (default: a shard, or a chunk
        when unsharded), each read by :meth:`read` when computed."""
        import dask.array as da
        from dask.base import tokenize

        n_time, n_node, n_feature = self.shape
        step = int(block_time or self.shard_time or self.chunk_time)

        def block(block_info: dict | None = None) -> np.ndarray:
            assert block_info is not None
            (lo, hi), _, _ = block_info[None]["array-location"]
            return self.read(lo, hi)

        return da.map_blocks(
            block,
            chunks=(
                tuple(min(step, n_time - a) for a in range(0, n_time, step)),
                (n_node,),
                (n_feature,),
            ),
            dtype=np.float32,
            meta=np.empty((0, 0, 0), dtype=np.float32),
            name=f"stzarr-read-{tokenize(self.path, step, id(self))}",
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(time, node, feature)`` extent."""
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @cached_property
    def time(self) -> np.ndarray:
        """Time coordinate as datetime64[ns] (stored as int64 nanoseconds since 1970)."""
        return np.asarray(self.group["time"][:], dtype=np.int64).view("datetime64[ns]")

    @cached_property
    def node_ids(self) -> list[str]:
        """Sensor ids in node order."""
        return [str(v) for v in self.group["node"][:]]

    @cached_property
    def feature_names(self) -> list[str]:
        """Feature names in feature order."""
        return [str(v) for v in self.group["feature"][:]]

    @property
    def missing_value(self) -> str:
        """``"zero"`` (0 and NaN are missing) or ``"nan"`` (only NaN is missing)."""
        return str(self.attrs["missing_value"])

    @cached_property
    def array(self) -> zarr.Array:
        """The ``data`` array opened with zarr, for direct chunk-aligned reads."""
        return self.group["data"]  # type: ignore[return-value]

    @property
    def chunk_time(self) -> int:
        """Time steps per chunk of ``data``."""
        return int(self.array.chunks[0])

    @property
    def shard_time(self) -> int | None:
        """Time steps per shard of ``data``, or None when the store is not sharded."""
        shards = self.array.shards
        return None if shards is None else int(shards[0])

    def file_block(self, target_bytes: int) -> int:
        """Steps in a read block of whole files (shards, or chunks when unsharded) of about
        ``target_bytes`` (at least one file)."""
        step_bytes = self.shape[1] * self.shape[2] * self.array.dtype.itemsize
        return block_steps(self.shard_time or self.chunk_time, step_bytes, target_bytes)

    @cached_property
    def _reader(self) -> DataReader | None:
        """stzarr's own reader of ``data`` (:mod:`stzarr.store.reader`), or None when the store is
        one it does not decode (written before checksums, or with another codec)."""
        layout = layout_of(self.array.metadata.to_dict(), self.zarr_store.checks.get("data"))
        if layout is None:
            return None
        local = local_path(self.path) if is_local(self.path) else None
        return DataReader(self.zarr_store, local, layout)

    @property
    def read_pipeline(self) -> str:
        """What decodes :meth:`read`: ``"stzarr"`` (:mod:`stzarr.store.reader`: each file read once,
        checked, decoded on a thread pool), or ``"zarr"`` (zarr's own pipeline, one call
        through the checked store) when that pipeline is chosen (``--codec-pipeline zarr``) or
        the store is one stzarr's reader does not decode."""
        return "zarr" if active_pipeline().pipeline == "zarr" or self._reader is None else "stzarr"

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Read ``data[start:stop]`` as a float32 ``(t, n, f)`` array, into ``out`` if given.

        Every file is read from storage once, its bytes checked (presence, shard index, every
        CRC-32C: :mod:`stzarr.store.chunks`) and decoded straight into the output, many chunks at a
        time (:mod:`stzarr.store.reader`; ``--io-threads`` threads, default one per CPU plus one).
        Memory: the output plus :func:`~stzarr.store.reader.files_in_flight` encoded files.

        Raises
        ------
        StoreDamagedError
            When a file holding the range is missing or damaged (naming it).
        """
        start, stop = int(start), int(stop)
        shape = (stop - start, *self.shape[1:])
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}")
        if stop <= start:
            return out
        if self.read_pipeline == "stzarr":
            assert self._reader is not None
            self._reader.read(start, stop, out, read_threads(active_pipeline().threads))
        else:
            self.array.get_basic_selection(slice(start, stop), out=NDBuffer.from_numpy_array(out))
        return out


def open_store(path: str | os.PathLike[str]) -> Store:
    """Open a store written by stzarr.

    Parameters
    ----------
    path : str or PathLike
        Local path or fsspec URL of the store.

    Returns
    -------
    Store

    Raises
    ------
    StoreFormatError
        When nothing is there, the store is incomplete, of another format version, or not laid
        out as the contract says.
    StoreDamagedError
        When a chunk read while opening (coordinates, graph) is missing or corrupted.
    """
    text = os.fspath(path)
    if is_local(text) and local_path(text).is_dir():
        manifest.require_metadata(local_path(text), text)
    group, zstore = open_group_checked(text)
    attrs = dict(group.attrs)
    version = attrs.get(FORMAT_KEY)
    if version is None:
        raise StoreFormatError(f"{text} is not a complete stzarr store (no {FORMAT_KEY})")
    if version != FORMAT_VERSION:
        raise StoreFormatError(
            f"{text} has store format version {version}; this stzarr reads version "
            f"{FORMAT_VERSION} (re-convert the source)"
        )
    if not zstore.configure(attrs, array_metadata(group)):
        warnings.warn(
            f"{text} has no chunk checksums (written by an older stzarr): damage cannot be "
            "detected; `stzarr rechunk` or a new conversion adds them",
            StzarrWarning,
            stacklevel=2,
        )
    for name, dims in (("data", DIMS), *((dim, (dim,)) for dim in DIMS)):
        array = group.get(name)
        if not isinstance(array, zarr.Array) or tuple(array.metadata.dimension_names or ()) != dims:
            raise StoreFormatError(f"{text}: no {name!r} array with dims {dims}")
    if group["time"].attrs.get("units") != TIME_UNITS:
        raise StoreFormatError(f"{text}: time is not stored in {TIME_UNITS}")
    edge_index = np.asarray(group["edge_index"][:], dtype=np.int64)
    edge_weight = np.asarray(group["edge_weight"][:], dtype=np.float32)
    store = Store(text, group, edge_index, edge_weight, attrs, zstore)
    store.time, store.node_ids, store.feature_names  # noqa: B018  coordinates read (checked) now
    log.info("%s: reads decode through the %s read path", text, store.read_pipeline)
    return store


def open_group_checked(path: str) -> tuple[zarr.Group, ChunkCheckedStore]:
    """The group at ``path`` opened read-only through a (not yet configured) checked store.

    Raises
    ------
    StoreFormatError
        When nothing is there or it is not a Zarr v3 group.
    """
    if is_local(path) and not local_path(path).exists():
        raise StoreFormatError(f"no store at {path}")
    if not is_local(path):
        fs, root = url_fs(path)
        if not fs.exists(root):
            raise StoreFormatError(f"no store at {path}")
    active_pipeline()  # arrays keep the codec pipeline in force when they are opened
    zstore = open_zarr_store(path)
    try:
        group = zarr.open_group(zstore, mode="r", zarr_format=3)
    except Exception as exc:
        raise StoreFormatError(
            f"{path} is not a Zarr v3 store ({exc.__class__.__name__})"
        ) from None
    return group, zstore


def update_attrs(store: Store | str, updates: Mapping[str, Any]) -> bool:
    """Merge ``updates`` into the group attributes and re-consolidate the metadata.

    Used to cache derived results (e.g. statistics) in the store. A local store is locked
    meanwhile, its metadata checked against the manifest first and the manifest's entry of the
    root document renewed after; while another process writes the store nothing is written.

    Returns
    -------
    bool
        Whether the attributes were written (False: the store is locked by a writer).
    """
    path = store.path if isinstance(store, Store) else os.fspath(store)
    local = local_path(path) if is_local(path) else None
    lock = None
    if local is not None:
        lock = lock_store(local, wait=False)
        if lock is None:
            return False
    try:
        recorded = None if local is None else manifest.require_metadata(local, path)
        group = zarr.open_group(path, mode="r+", zarr_format=3)
        group.attrs.update(dict(updates))
        consolidate(path)
        if recorded is not None:
            manifest.renew(local, recorded, ["zarr.json"])  # the one document rewritten
    finally:
        if lock is not None:
            os.close(lock)
    if isinstance(store, Store):
        store.attrs.update(json.loads(json.dumps(dict(updates))))
    return True


class StoreWriter(Transaction):
    """Write a store block by block along time, atomically.

    Data goes to a hidden, locked partial sibling (:class:`stzarr.store.atomic.AtomicOutput`);
    :meth:`commit` (called by ``__exit__`` on success) records the chunk grid, writes the format
    version, consolidates metadata and renames the sibling into place. On any exception,
    including ``KeyboardInterrupt``, SIGTERM and a destination that appeared meanwhile, the
    sibling is removed. Stale partials of the same destination (left by a killed run) are
    removed first, with a warning naming each. An existing destination is replaced only with
    ``overwrite`` and only when it is a store stzarr wrote. A destination given as a non-local
    fsspec URL is written in place (``overwrite`` removes the old store first); the format
    version is still written last, and an aborted write is removed.

    Every array is written whole (all-NaN chunks too) with a CRC-32C per chunk
    (:func:`codec_chain`), so a missing or damaged chunk is detected on read
    (:mod:`stzarr.store.chunks`).

    Parameters
    ----------
    path : str or PathLike
        Destination: local path, ``file://`` URL or other fsspec URL.
    time : numpy.ndarray
        datetime64 coordinate, one entry per step.
    node_ids, feature_names : sequence of str
        Coordinates along ``node`` and ``feature``.
    edge_index : array-like
        int (2, E) COO indices into the node order.
    edge_weight : array-like
        float (E,) weights.
    attrs : mapping
        Group attributes; must include ``missing_value`` (``"zero"`` or ``"nan"``).
    chunk_time : int, optional
        Steps per chunk (default: about 4 MiB per chunk).
    shard_time : int, optional
        Steps per shard file (a multiple of ``chunk_time``); None writes one file per chunk.
        When neither is given: :func:`default_layout` (sharded above 256 chunks).
    overwrite : bool
        Replace an existing destination (a store stzarr wrote) on commit.
    compressor : str
        A key of ``COMPRESSORS``: ``"zstd-bitshuffle"`` (default), ``"zstd"`` (smallest files),
        ``"lz4"`` (larger files, fastest to decode) or ``"none"``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        time: np.ndarray,
        node_ids: Sequence[str],
        feature_names: Sequence[str],
        edge_index: Any,
        edge_weight: Any,
        attrs: Mapping[str, Any],
        chunk_time: int | None = None,
        shard_time: int | None = None,
        overwrite: bool = False,
        compressor: str = DEFAULT_COMPRESSOR,
    ) -> None:
        if compressor not in COMPRESSORS:
            raise StzarrError(
                f"unknown compressor {compressor!r} (choose from {', '.join(COMPRESSORS)})"
            )
        self._compressor = COMPRESSORS[compressor]
        self._fs: fsspec.AbstractFileSystem | None = None
        self._output: AtomicOutput | None = None
        if is_local(path):
            self.path: Path | str = check_store_target(local_path(path), overwrite)
        else:
            self.path = os.fspath(path)
            self._fs, self._root = url_fs(self.path)
            if self._fs.exists(self._root):
                if not overwrite:
                    raise StoreExistsError(f"{self.path} exists (pass --overwrite to replace it)")
                if not self._fs.exists(f"{self._root}/zarr.json") or FORMAT_KEY not in json.loads(
                    self._fs.cat(f"{self._root}/zarr.json")
                ).get("attributes", {}):
                    raise StzarrError(
                        f"{self.path} exists and is not a stzarr store; refusing to replace it"
                    )
        if attrs.get("missing_value") not in MISSING_CONVENTIONS:
            raise ValueError(f"attrs['missing_value'] must be one of {MISSING_CONVENTIONS}")
        time = np.asarray(time).astype("datetime64[ns]")
        n_time, n_node, n_feature = len(time), len(node_ids), len(feature_names)
        if n_time == 0 or n_node == 0 or n_feature == 0:
            raise StzarrError(f"cannot write an empty store (shape {(n_time, n_node, n_feature)})")
        if chunk_time is None and shard_time is None:
            chunk_time, shard_time = default_layout(n_time, n_node, n_feature)
        chunk_time = min(chunk_time or default_chunk_time(n_node, n_feature), n_time)
        if shard_time is not None:
            shard_time = min(shard_time, math.ceil(n_time / chunk_time) * chunk_time)
            if shard_time % chunk_time:
                raise StzarrError(
                    f"--shard-time {shard_time} must be a multiple of --chunk-time {chunk_time}"
                )
        self.shape = (n_time, n_node, n_feature)
        self.overwrite = overwrite
        self._attrs = dict(attrs)
        if self._fs is None:
            assert isinstance(self.path, Path)
            remove_stale_partials(self.path)
            self._output = AtomicOutput(
                self.path,
                overwrite=overwrite,
                ours=is_stzarr_store,
                what="a stzarr store",
                directory=True,
            )
            self._tmp = str(self._output.partial)
        else:
            if self._fs.exists(self._root):  # overwrite was asked for: no atomic swap here
                self._fs.rm(self._root, recursive=True)
            self._tmp = self.path
        self._committed = False
        try:
            with writing():  # every array keeps zarr's own pipeline: all chunks written
                self._create(
                    time, node_ids, feature_names, edge_index, edge_weight, chunk_time, shard_time
                )
        except OSError as exc:
            self.abort()
            raise StzarrError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        except BaseException:
            self.abort()
            raise

    def _create(
        self,
        time: np.ndarray,
        node_ids: Sequence[str],
        feature_names: Sequence[str],
        edge_index: Any,
        edge_weight: Any,
        chunk_time: int,
        shard_time: int | None,
    ) -> None:
        group = zarr.open_group(self._tmp, mode="w-", zarr_format=3)
        n_time, n_node, n_feature = self.shape
        whole = {"write_empty_chunks": True}  # every chunk on disk: a missing one is damage
        coord_codecs = codec_chain(COORD_COMPRESSOR)
        self._data = group.create_array(
            "data",
            shape=self.shape,
            chunks=(chunk_time, n_node, n_feature),
            shards=None if shard_time is None else (shard_time, n_node, n_feature),
            dtype="float32",
            fill_value=np.nan,
            compressors=codec_chain(self._compressor),
            dimension_names=DIMS,
            config=whole,
        )
        times = group.create_array(
            "time",
            shape=(n_time,),
            chunks=(n_time,),
            dtype="int64",
            compressors=coord_codecs,
            dimension_names=("time",),
            attributes={"units": TIME_UNITS, "calendar": "proleptic_gregorian"},
            config=whole,
        )
        times[:] = time.astype("int64")
        for name, values in (("node", node_ids), ("feature", feature_names)):
            arr = group.create_array(
                name,
                shape=(len(values),),
                dtype=str,
                compressors=coord_codecs,
                dimension_names=(name,),
                config=whole,
            )
            arr[:] = np.array([str(v) for v in values], dtype=object)
        edge_index = np.asarray(edge_index, dtype=np.int64).reshape(2, -1)
        edge_weight = np.asarray(edge_weight, dtype=np.float32).reshape(-1)
        if edge_index.shape[1] != edge_weight.shape[0]:
            raise ValueError("edge_index and edge_weight disagree on the number of edges")
        if edge_index.size and (edge_index.min() < 0 or edge_index.max() >= n_node):
            raise ValueError("edge_index refers to nodes outside the node coordinate")
        n_edge = edge_index.shape[1]
        ei = group.create_array(
            "edge_index",
            shape=(2, n_edge),
            chunks=(2, max(1, n_edge)),
            dtype="int64",
            compressors=coord_codecs,
            dimension_names=("pair", "edge"),
            config=whole,
        )
        ew = group.create_array(
            "edge_weight",
            shape=(n_edge,),
            chunks=(max(1, n_edge),),
            dtype="float32",
            compressors=coord_codecs,
            dimension_names=("edge",),
            config=whole,
        )
        if n_edge:
            ei[:] = edge_index
            ew[:] = edge_weight

    @property
    def array(self) -> zarr.Array:
        """The ``data`` array being written (for bulk writers such as ``dask.array.store``;
        write whole shards, or whole chunks when unsharded)."""
        return self._data

    @property
    def block_time(self) -> int:
        """Steps per write that touches whole shards (or chunks): the efficient block size."""
        return int((self._data.shards or self._data.chunks)[0])

    def update_attrs(self, updates: Mapping[str, Any]) -> None:
        """Add group attributes known only after the data is written (counts, checksums); they
        are stored by :meth:`commit`, before the store becomes visible."""
        self._attrs.update(updates)

    def write(self, start: int, block: np.ndarray) -> None:
        """Write ``block`` (t, node, feature) at time offset ``start``."""
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 3 or block.shape[1:] != self.shape[1:]:
            raise ValueError(f"block shape {block.shape} does not match store {self.shape}")
        self._data[start : start + block.shape[0]] = block

    def commit(self) -> Path | str:
        """Finish the store: chunk record, attributes, consolidated metadata, format version,
        rename into place (local). On failure (the destination appeared meanwhile, a chunk was
        never written...) the partial store is removed and the error raised."""
        try:
            self._finish()
        except BaseException:
            self.abort()
            raise
        if self._output is not None:
            self._output.commit()
        self._committed = True
        return self.path

    def _finish(self) -> None:
        group = zarr.open_group(self._tmp, mode="r+", zarr_format=3)
        integrity = seal(group, self._tmp)
        attrs = {"created_by": tool_version(), **self._attrs, INTEGRITY_KEY: integrity}
        group.attrs.update(json.loads(json.dumps(attrs)))
        consolidate(self._tmp)
        group = zarr.open_group(self._tmp, mode="r+", zarr_format=3)
        group.attrs[FORMAT_KEY] = FORMAT_VERSION  # last write: only a finished store carries it
        if self._fs is None:
            manifest.write(self._tmp)

    def abort(self) -> None:
        """Remove the partial store, or the partial store at a URL (idempotent)."""
        if self._committed:
            return
        if self._output is not None:
            self._output.abort()
        elif self._fs is not None and self._fs.exists(self._root):
            self._fs.rm(self._root, recursive=True)


def check_store_target(path: str | os.PathLike[str], overwrite: bool) -> Path:
    """Refuse early a local store destination that cannot or must not be written: it exists
    without ``overwrite``, or exists but is not a store stzarr wrote (never replaced)."""
    return check_target(path, overwrite=overwrite, ours=is_stzarr_store, what="a stzarr store")


def seal(group: zarr.Group, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check that every chunk (or shard) file of every array of ``group`` is on disk and return
    the integrity record (checksum kind, chunk files per array) to store in its attributes.

    Writers that grow a store (append) call it again before re-committing.

    Raises
    ------
    StzarrError
        When an array misses chunk files (a write did not cover it).
    """
    meta = array_metadata(group)
    record = integrity_record(meta)
    fs, root = url_fs(os.fspath(path)) if not is_local(path) else (None, None)
    for name, expected in record["chunk_files"].items():
        if fs is None:
            base = local_path(path) / name / "c"
            found = sum(len(files) for _, _, files in os.walk(base)) if base.is_dir() else 0
        else:
            found = len(fs.find(f"{root}/{name}/c"))
        if found != expected:
            raise StzarrError(
                f"{path}: array '{name}' has {found} of {expected} chunk files; "
                "the write did not cover it"
            )
    return record


def write_store(
    path: str | os.PathLike[str],
    data: np.ndarray,
    *,
    time: np.ndarray,
    node_ids: Sequence[str],
    feature_names: Sequence[str],
    edge_index: Any,
    edge_weight: Any,
    attrs: Mapping[str, Any],
    chunk_time: int | None = None,
    shard_time: int | None = None,
    overwrite: bool = False,
) -> Store:
    """Write an in-memory ``(time, node, feature)`` array as a store and open it.

    Convenience for small data and tests; converters stream with :class:`StoreWriter`.
    Parameters are those of :class:`StoreWriter` plus ``data``.
    """
    with StoreWriter(
        path,
        time=time,
        node_ids=node_ids,
        feature_names=feature_names,
        edge_index=edge_index,
        edge_weight=edge_weight,
        attrs=attrs,
        chunk_time=chunk_time,
        shard_time=shard_time,
        overwrite=overwrite,
    ) as writer:
        step = writer.block_time
        for start in range(0, data.shape[0], step):
            writer.write(start, data[start : start + step])
    return open_store(path)
