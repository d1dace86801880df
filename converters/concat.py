"""Several source files as one series along time, with one column order.

The files are taken in the order given. Each must be regular within itself (or ``allow_gaps``),
all must share one sampling interval, and each must start exactly one interval after the
previous one ends: an overlap or a file out of order is an error, a gap needs ``allow_gaps``.
Their sensor sets must be equal; every block is permuted to one node order (the graph's, or the
first file's). Blocks are read from one file at a time, so memory is one block whatever the
number and size of the files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from stzarr.converters.detect import detect_family
from stzarr.converters.layout import SeriesLayout
from stzarr.converters.pandas_hdf5 import open_hdf5_series
from stzarr.converters.timeaxis import TimeAxis, check_time_index, duration_text, iso_time
from stzarr.converters.wide import ParquetReader, WideCSVReader
from stzarr.errors import SourceFormatError


class SeriesReader(Protocol):
    """What every block reader offers (pandas HDF5, wide CSV, Parquet)."""

    path: Path
    key: str | None
    fmt: str
    layout: SeriesLayout
    read_front: int | None

    def read(self, t0: int, t1: int) -> np.ndarray: ...

    def close(self) -> None: ...


def open_series(
    path: str | os.PathLike[str], *, key: str | None = None, time_column: str | None = None
) -> SeriesReader:
    """A block reader for one time-series source file, by its detected family.

    Raises
    ------
    SourceFormatError
        Unreadable file, a family that is not a wide time series (PGT JSON), or an option that
        does not apply to it.
    """
    path = Path(path)
    family = detect_family(path)
    if family == "pgt-json":
        raise SourceFormatError(
            f"{path}: PGT JSON sources hold their own graph and convert one file at a time"
        )
    if family == "pandas-hdf5":
        if time_column is not None:
            raise SourceFormatError("--time-column does not apply to HDF5 sources")
        return open_hdf5_series(path, key)
    if key is not None:
        raise SourceFormatError(f"--key does not apply to {family} sources")
    reader_cls = WideCSVReader if family == "wide-csv" else ParquetReader
    return reader_cls(path, time_column)


def open_all(
    paths: Sequence[str | os.PathLike[str]], *, key: str | None, time_column: str | None
) -> list[SeriesReader]:
    """Open every source (all closed again if one fails); a file listed twice is an error."""
    resolved = [Path(p).resolve() for p in paths]
    for i, p in enumerate(resolved):
        if p in resolved[:i]:
            raise SourceFormatError(f"{paths[i]} is listed twice")
    readers: list[SeriesReader] = []
    try:
        for path in paths:
            readers.append(open_series(path, key=key, time_column=time_column))
    except BaseException:
        for reader in readers:
            reader.close()
        raise
    return readers


def compare_ids(have: Sequence[str], want: Sequence[str], have_name: str, want_name: str) -> None:
    """Raise one line naming how two sensor-id sets differ (nothing when they are equal)."""
    have_set, want_set = set(have), set(want)
    if have_set == want_set:
        return
    missing = [s for s in want if s not in have_set]
    extra = [s for s in have if s not in want_set]
    parts = []
    if missing:
        parts.append(f"{len(missing)} of {want_name}'s sensors missing (e.g. {missing[:3]})")
    if extra:
        parts.append(f"{len(extra)} not in {want_name} (e.g. {extra[:3]})")
    raise SourceFormatError(
        f"sensor ids differ between {have_name} and {want_name}: " + "; ".join(parts)
    )


def parse_freq(freq: str) -> int:
    """A pandas frequency / duration string (``5min``, ``1h``, ``15T``) in nanoseconds."""
    try:
        ns = pd.Timedelta(pd.tseries.frequencies.to_offset(freq)).value
    except (ValueError, TypeError):
        raise SourceFormatError(f"--freq {freq!r} is not a duration such as 5min or 1h") from None
    if ns <= 0:
        raise SourceFormatError(f"--freq must be positive, not {freq!r}")
    return int(ns)


def parse_start(start: str) -> int:
    """A timestamp string in nanoseconds since the epoch."""
    try:
        return int(pd.Timestamp(start).value)
    except (ValueError, TypeError):
        raise SourceFormatError(f"--start {start!r} is not a timestamp") from None


@dataclass(frozen=True)
class Previous:
    """The end of what comes before the first file: an existing store's last step."""

    name: str
    last_ns: int
    interval_ns: int | None


@dataclass(frozen=True)
class _Piece:
    reader: SeriesReader
    start: int
    stop: int
    perm: np.ndarray | None


class ConcatSeries:
    """Sources concatenated along time in the given order, columns permuted to ``node_ids``.

    Parameters
    ----------
    readers : sequence of SeriesReader
        Open readers, in time order.
    node_ids : sequence of str
        The output node order; every file's sensor set must equal it.
    start, freq : str, optional
        Time of files without a time column: the first such file starts at ``start`` (or right
        after the previous file or ``previous``), steps are ``freq`` apart.
    allow_gaps : bool
        Accept irregular spacing within and gaps between files.
    previous : Previous, optional
        What the series continues (``stzarr append``): the first file must follow it.
    """

    def __init__(
        self,
        readers: Sequence[SeriesReader],
        *,
        node_ids: Sequence[str],
        start: str | None = None,
        freq: str | None = None,
        allow_gaps: bool = False,
        previous: Previous | None = None,
    ) -> None:
        self.node_ids = [str(s) for s in node_ids]
        freq_ns = parse_freq(freq) if freq is not None else None
        start_ns = parse_start(start) if start is not None else None
        interval = freq_ns or (previous.interval_ns if previous else None)
        before = previous
        pieces: list[_Piece] = []
        indexes: list[np.ndarray] = []
        synthesised = False
        for reader in readers:
            name, layout = reader.path.name, reader.layout
            if layout.n_steps == 0 or not layout.columns:
                raise SourceFormatError(
                    f"{reader.path}: empty frame ({layout.n_steps} rows x "
                    f"{len(layout.columns)} columns)"
                )
            compare_ids(layout.columns, self.node_ids, name, _order_name(readers, previous))
            index = layout.index_ns
            if index is None:
                if interval is None:
                    raise SourceFormatError(f"{name} has no time column: pass --start and --freq")
                if start_ns is not None and not synthesised:
                    first = start_ns
                elif before is not None:
                    first = before.last_ns + interval
                else:
                    raise SourceFormatError(f"{name} has no time column: pass --start and --freq")
                index = first + np.arange(layout.n_steps, dtype=np.int64) * interval
                synthesised = True
            axis = check_time_index(index, source=name, allow_gaps=allow_gaps)
            own = None if axis.interval_s is None else round(axis.interval_s * 1e9)
            if interval is None:
                interval = own
            elif own is not None and own != interval:
                raise SourceFormatError(
                    f"{name} is sampled every {duration_text(own)}; the series before it every "
                    f"{duration_text(interval)}"
                )
            if before is not None:
                _check_join(before, name, int(index[0]), interval, allow_gaps)
            begin = pieces[-1].stop if pieces else 0
            perm = None
            if layout.columns != self.node_ids:
                position = {c: i for i, c in enumerate(layout.columns)}
                perm = np.array([position[c] for c in self.node_ids], dtype=np.int64)
            pieces.append(_Piece(reader, begin, begin + layout.n_steps, perm))
            indexes.append(index)
            before = Previous(name, int(index[-1]), interval)
        if (start_ns is not None or freq_ns is not None) and not synthesised:
            raise SourceFormatError(
                "--start/--freq apply only to sources without a time column; every source here "
                "has one"
            )
        self._pieces = pieces
        self.index_ns = np.concatenate(indexes)
        self.interval_ns = interval
        self.time_synthesised = synthesised
        self.axis: TimeAxis = check_time_index(self.index_ns, source="the series", allow_gaps=True)
        if interval is not None and self.axis.interval_s != interval / 1e9:
            # a file of single rows, or mostly gaps: report the declared interval
            self.axis = TimeAxis(**{**self.axis.to_dict(), "interval_s": interval / 1e9})

    @property
    def n_steps(self) -> int:
        """Steps in all files together."""
        return int(self.index_ns.size)

    def read(self, t0: int, t1: int) -> np.ndarray:
        """Steps ``[t0, t1)`` of the concatenation as ``(t, node, 1)``, in ``node_ids`` order."""
        parts = []
        for piece in self._pieces:
            a, b = max(t0, piece.start), min(t1, piece.stop)
            if a >= b:
                continue
            try:
                block = piece.reader.read(a - piece.start, b - piece.start)
            except (OSError, KeyError, RuntimeError) as exc:  # h5py / PyTables read errors
                raise SourceFormatError(
                    f"{piece.reader.path}: reading rows {a - piece.start}:{b - piece.start} "
                    f"failed (truncated or corrupt file: {exc})"
                ) from None
            parts.append(block if piece.perm is None else block[:, piece.perm])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def provenance(self, digests: Sequence[str | None]) -> list[dict]:
        """One record per file: name, checksum, key, format, size, step range and times."""
        out = []
        for piece, digest in zip(self._pieces, digests, strict=True):
            reader = piece.reader
            out.append(
                {
                    "file": reader.path.name,
                    "sha256": digest,
                    "key": reader.key,
                    "format": reader.fmt,
                    "size_bytes": reader.path.stat().st_size,
                    "steps": [piece.start, piece.stop],
                    "start": iso_time(self.index_ns[piece.start]),
                    "end": iso_time(self.index_ns[piece.stop - 1]),
                }
            )
        return out


def _order_name(readers: Sequence[SeriesReader], previous: Previous | None) -> str:
    return previous.name if previous is not None else readers[0].path.name


def _check_join(before: Previous, name: str, first_ns: int, interval: int | None, gaps: bool):
    """``name`` (first step ``first_ns``) must start one interval after ``before`` ends."""
    first, last = iso_time(first_ns), iso_time(before.last_ns)
    if first_ns <= before.last_ns:
        raise SourceFormatError(
            f"{name} starts at {first}, not after {before.name} (which ends at {last}): "
            "overlapping or out of order; list the files in time order"
        )
    step = first_ns - before.last_ns
    if interval is not None and step != interval and not gaps:
        raise SourceFormatError(
            f"gap of {duration_text(step)} between {before.name} (ends {last}) and {name} "
            f"(starts {first}) where {duration_text(interval)} was expected; pass --allow-gaps "
            "to convert anyway"
        )
