"""pandas HDF5 traffic files (METR-LA, PeMS-BAY, PeMS): one DataFrame of speeds per file.

Layout: a ``DatetimeIndex`` (5-minute steps) x one float column per sensor id, 0.0 where a
reading is missing. Both pandas formats are read in time blocks with bounded memory: "fixed"
(``KEY/axis0`` labels, ``KEY/axis1`` timestamps, ``KEY/blockI_values``) through h5py row slices,
"table" (a PyTables table) through ``HDFStore.select(start=, stop=)``. The conversion itself (graph,
several files, store writing) is :mod:`stzarr.converters.series`.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from stzarr.converters.layout import SeriesLayout
from stzarr.errors import SourceFormatError

# what h5py raises on a damaged file, depending on where the damage lies
HDF5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError)
PIECE_BYTES = 8 * 2**20  # source bytes per h5py read inside a block
_TIME_UNITS = {
    "datetime64": "ns",
    "datetime64[ns]": "ns",
    "datetime64[us]": "us",
    "datetime64[ms]": "ms",
    "datetime64[s]": "s",
}


def _text(value: object) -> str:
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def find_frames(path: str | os.PathLike[str]) -> dict[str, str]:
    """pandas objects stored in an HDF5 file: ``{key: pandas_type}`` (e.g. ``{"df": "frame"}``).

    Raises
    ------
    SourceFormatError
        Missing, non-HDF5, truncated or otherwise unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceFormatError(f"{path} does not exist")
    if not h5py.is_hdf5(path):
        raise SourceFormatError(f"{path} is not an HDF5 file")
    found: dict[str, str] = {}
    try:
        with h5py.File(path, "r") as h5:

            def visit(name: str, obj: object) -> None:
                if isinstance(obj, h5py.Group) and "pandas_type" in obj.attrs:
                    found[name] = _text(obj.attrs["pandas_type"])

            h5.visititems(visit)
    except HDF5_ERRORS as exc:
        raise SourceFormatError(
            f"{path}: cannot read HDF5 file (truncated or corrupt: {exc})"
        ) from None
    return found


def select_key(path: Path, key: str | None) -> tuple[str, str]:
    """The DataFrame key to convert (given, or the only one) and its pandas format."""
    frames = find_frames(path)
    kinds = {"frame": "fixed", "frame_table": "table"}
    dataframes = {k: kinds[t] for k, t in frames.items() if t in kinds}
    if key is not None:
        key = key.strip("/")
        if key not in frames:
            listed = ", ".join(sorted(dataframes)) or "none"
            raise SourceFormatError(f"{path}: no key {key!r} (DataFrames in the file: {listed})")
        if key not in dataframes:
            raise SourceFormatError(
                f"{path}: key {key!r} holds a pandas {frames[key]}, not a DataFrame"
            )
        return key, dataframes[key]
    if not dataframes:
        raise SourceFormatError(f"{path}: no pandas DataFrame in the file")
    if len(dataframes) > 1:
        raise SourceFormatError(
            f"{path}: several DataFrames ({', '.join(sorted(dataframes))}); pass --key to choose"
        )
    ((key, fmt),) = dataframes.items()
    return key, fmt


def _is_empty(ds: h5py.Dataset) -> bool:
    """pandas stores an empty array as a 1-element placeholder with its real ``shape`` pickled."""
    return "shape" in ds.attrs and "value_type" in ds.attrs


class FixedFrameReader:
    """Reads a pandas "fixed" frame with h5py, row block by row block (any number of blocks)."""

    fmt = "pandas-fixed"

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key
        self.read_front: int | None = None
        self._direct: tuple[int, int, np.dtype] | None = None
        self._fd: int | None = None
        self._buffer = bytearray()
        self._h5 = h5py.File(path, "r")
        try:
            self.layout = self._layout()
        except BaseException:
            self.close()
            raise

    def _layout(self) -> SeriesLayout:
        group = self._h5[self.key]
        where = f"{self.path}:{self.key}"
        if int(group.attrs.get("ndim", 2)) != 2 or "axis1" not in group or "axis0" not in group:
            raise SourceFormatError(f"{where}: not a 2-D pandas frame")
        axis1 = group["axis1"]
        index_class = _text(axis1.attrs.get("index_class", b""))
        kind = _text(axis1.attrs.get("kind", b""))
        if index_class != "datetime" or kind not in _TIME_UNITS:
            raise SourceFormatError(
                f"{where}: the index is not a DatetimeIndex (stored kind {kind or index_class!r})"
            )
        index = np.zeros(0, np.int64) if _is_empty(axis1) else np.asarray(axis1[:], np.int64)
        index_ns = index.astype(f"datetime64[{_TIME_UNITS[kind]}]").astype("datetime64[ns]")
        columns, label_kind = self._labels(group["axis0"], where)
        position = {c: i for i, c in enumerate(columns)}
        if len(position) != len(columns):
            raise SourceFormatError(f"{where}: duplicate column labels")
        self._blocks: list[tuple[h5py.Dataset, np.ndarray, bool]] = []
        if len(index) == 0 or not columns:
            return SeriesLayout(index, len(index), columns, label_kind)
        for b in range(int(group.attrs.get("nblocks", 0))):
            values = group[f"block{b}_values"]
            if values.dtype.kind not in "fiub" or values.ndim != 2:
                raise SourceFormatError(
                    f"{where}: column block {b} is not numeric ({values.dtype}); only numeric "
                    "sensor columns can be converted"
                )
            items, _ = self._labels(group[f"block{b}_items"], where)
            transposed = bool(values.attrs.get("transposed", 1))
            rows, width = values.shape if transposed else values.shape[::-1]
            if (rows, width) != (len(index), len(items)):
                raise SourceFormatError(
                    f"{where}: column block {b} holds {rows} rows x {width} columns; the index "
                    f"has {len(index)} rows and the block names {len(items)} columns"
                )
            unknown = [c for c in items if c not in position]
            if unknown:
                raise SourceFormatError(f"{where}: block {b} has unknown columns {unknown[:3]}")
            self._blocks.append((values, np.array([position[c] for c in items]), transposed))
        covered = sum(len(cols) for _, cols, _ in self._blocks)
        if covered != len(columns):
            raise SourceFormatError(f"{where}: column blocks cover {covered} of {len(columns)}")
        values, _, transposed = self._blocks[0]
        plist = values.id.get_create_plist()
        if (
            len(self._blocks) == 1
            and transposed
            and plist.get_layout() == h5py.h5d.CONTIGUOUS
            and plist.get_nfilters() == 0
            and values.id.get_offset() is not None
        ):
            # One contiguous, unfiltered, row-major block (what pandas writes): read its bytes
            # with os.preadv, which releases the GIL (h5py holds it for the whole read), and
            # tell the checksum thread how far the reads have got.
            offset = values.id.get_offset()
            self._direct = (offset, values.shape[1] * values.dtype.itemsize, values.dtype)
            self._fd = os.open(self.path, os.O_RDONLY)
            self.read_front = offset
        self._identity = len(self._blocks) == 1 and np.array_equal(
            self._blocks[0][1], np.arange(len(columns))
        )
        return SeriesLayout(index_ns.astype(np.int64), len(index), columns, label_kind)

    @staticmethod
    def _labels(ds: h5py.Dataset, where: str) -> tuple[list[str], str]:
        kind = _text(ds.attrs.get("kind", b""))
        if _is_empty(ds):
            return [], "string"
        if kind == "string":
            return [_text(v) for v in ds[:]], "string"
        if kind == "integer":
            return [str(int(v)) for v in ds[:]], "integer"
        raise SourceFormatError(f"{where}: unsupported column label kind {kind!r}")

    def read(self, t0: int, t1: int) -> np.ndarray:
        """Rows ``[t0, t1)`` as float32 ``(t, node, 1)`` in column order.

        Read in pieces of about :data:`PIECE_BYTES` and cast into the float32 block, so the
        source-precision buffer stays small whatever the block size.
        """
        n_node = len(self.layout.columns)
        out = np.empty((t1 - t0, n_node, 1), dtype=np.float32)
        itemsize = max(values.dtype.itemsize for values, _, _ in self._blocks)
        piece = max(1, PIECE_BYTES // (itemsize * n_node))
        for p0 in range(t0, t1, piece):
            p1 = min(p0 + piece, t1)
            rows = slice(p0 - t0, p1 - t0)
            with np.errstate(over="ignore"):  # beyond float32: stored (and counted) as inf
                if self._direct is not None:
                    raw = self._pread(p0, p1)
                    if self._identity:
                        out[rows, :, 0] = raw
                    else:
                        out[rows, self._blocks[0][1], 0] = raw
                    continue
                for values, cols, transposed in self._blocks:
                    raw = values[p0:p1] if transposed else values[:, p0:p1].T
                    if self._identity:
                        out[rows, :, 0] = raw
                    else:
                        out[rows, cols, 0] = raw
        return out

    def _pread(self, p0: int, p1: int) -> np.ndarray:
        offset, row_bytes, dtype = self._direct  # type: ignore[misc]
        size = (p1 - p0) * row_bytes
        if len(self._buffer) < size:
            self._buffer = bytearray(size)
        view = memoryview(self._buffer)[:size]
        got = os.preadv(self._fd, [view], offset + p0 * row_bytes)
        if got != size:
            raise SourceFormatError(
                f"{self.path}: rows {p0}:{p1} lie beyond the end of the file (truncated?)"
            )
        self.read_front = offset + p1 * row_bytes
        return np.frombuffer(view, dtype=dtype).reshape(p1 - p0, -1)

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._h5.close()


class TableFrameReader:
    """Reads a pandas "table" frame through ``HDFStore.select`` with ``start``/``stop``."""

    fmt = "pandas-table"
    read_front = None

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key
        self._store = pd.HDFStore(path, mode="r")
        try:
            self.layout = self._layout()
        except BaseException:
            self._store.close()
            raise

    def _layout(self) -> SeriesLayout:
        where = f"{self.path}:{self.key}"
        storer = self._store.get_storer(self.key)
        labels = list(storer.non_index_axes[0][1]) if storer.non_index_axes else []
        index = self._store.select_column(self.key, "index")
        if not pd.api.types.is_datetime64_any_dtype(index.dtype):
            raise SourceFormatError(f"{where}: the index is not a DatetimeIndex ({index.dtype})")
        if getattr(index.dtype, "tz", None) is not None:
            index = index.dt.tz_convert("UTC").dt.tz_localize(None)
        index_ns = index.to_numpy().astype("datetime64[ns]").astype(np.int64)
        kinds = {type(v) for v in labels}
        label_kind = (
            "integer" if kinds and all(np.issubdtype(k, np.integer) for k in kinds) else "string"
        )
        columns = [_text(v) for v in labels]
        if len(set(columns)) != len(columns):
            raise SourceFormatError(f"{where}: duplicate column labels")
        self._labels = labels
        return SeriesLayout(index_ns, len(index_ns), columns, label_kind)

    def read(self, t0: int, t1: int) -> np.ndarray:
        """Rows ``[t0, t1)`` as ``(t, node, 1)`` in column order."""
        frame = self._store.select(self.key, start=t0, stop=t1)
        try:
            values = frame[self._labels].to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise SourceFormatError(
                f"{self.path}:{self.key}: non-numeric sensor columns ({exc})"
            ) from None
        return values[:, :, None]

    def close(self) -> None:
        """Close the file."""
        self._store.close()


def open_hdf5_series(path: Path, key: str | None) -> FixedFrameReader | TableFrameReader:
    """A block reader over the pandas DataFrame ``key`` (default: the only one) of ``path``."""
    key, fmt = select_key(path, key)
    reader_cls = FixedFrameReader if fmt == "fixed" else TableFrameReader
    try:
        return reader_cls(path, key)
    except HDF5_ERRORS as exc:
        missing = _unavailable_filters(path, key)
        if missing:
            raise SourceFormatError(
                f"{path}: {key!r} is compressed with {', '.join(missing)}, a filter this HDF5 "
                "library cannot decode (pandas complib='blosc' writes it); re-save it with "
                "complib='zlib', or install hdf5plugin"
            ) from None
        raise SourceFormatError(f"{path}: cannot read {key!r} ({exc})") from None


FILTER_NAMES = {32001: "Blosc", 32004: "LZ4", 32008: "bitshuffle", 32015: "Zstandard"}


def _unavailable_filters(path: Path, key: str) -> list[str]:
    """Names of the compression filters used under ``key`` that h5py cannot decode here."""
    found: set[str] = set()

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            plist = obj.id.get_create_plist()
            for i in range(plist.get_nfilters()):
                code = plist.get_filter(i)[0]
                if not h5py.h5z.filter_avail(code):
                    found.add(FILTER_NAMES.get(code, f"filter {code}"))

    try:
        with h5py.File(path, "r") as h5:
            group = h5[key]
            if isinstance(group, h5py.Group):
                group.visititems(visit)
    except (OSError, KeyError):
        return []
    return sorted(found)
