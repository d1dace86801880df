"""Wide tables: one column per sensor id, one row per time step (CSV or Parquet).

T-GCN's ``los_speed.csv`` is the model: a header of sensor ids, then rows of speeds, no time
column. A time column is optional; it is taken from ``--time-column`` or, failing that, the first
column when its label is a usual time name (``time``, ``timestamp``, ``datetime``, ``date``,
``index``, or the empty/``Unnamed: 0`` label pandas writes for an index). Without one the time
comes from ``--start`` and ``--freq``.

Both readers stream: a first pass reads only the time column (or counts rows), the values are
then read front to back in row blocks (``pandas.read_csv(chunksize=)``, Parquet record batches),
so memory is bounded by one block whatever the file's size. Parquet needs ``pyarrow``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from stzarr.converters.layout import SeriesLayout
from stzarr.converters.strict import csv_rows, first_bad_number
from stzarr.errors import SourceFormatError

TIME_NAMES = frozenset({"time", "timestamp", "datetime", "date", "index", ""})
BLOCK_ROWS = 8192  # rows per CSV chunk / Parquet batch
NA_VALUES = frozenset({"", "NaN", "nan", "NA", "null"})  # a CSV's missing readings


def pick_time_column(labels: list[str], time_column: str | None, where: str) -> int | None:
    """Position of the time column among ``labels`` (None when the table has none)."""
    if time_column is not None:
        if time_column not in labels:
            shown = ", ".join(labels[:5]) + (", ..." if len(labels) > 5 else "")
            raise SourceFormatError(f"{where}: no column {time_column!r} (columns: {shown})")
        return labels.index(time_column)
    first = labels[0].strip().lower() if labels else ""
    if first in TIME_NAMES or first.startswith("unnamed: "):
        return 0
    return None


def parse_times(values: pd.Series | np.ndarray, where: str) -> np.ndarray:
    """int64 ns timestamps from text or datetimes (time-zone aware ones converted to UTC)."""
    series = pd.Series(values)
    if series.dtype.kind in "iufb":
        raise SourceFormatError(
            f"{where}: holds numbers, not timestamps: not a time axis (give --start and --freq, "
            "or name a time column)"
        )
    try:
        with warnings.catch_warnings():  # a refusal is one line: pandas' guesses stay unsaid
            warnings.simplefilter("ignore")
            times = pd.to_datetime(series, utc=False)
    except (ValueError, TypeError) as exc:
        raise SourceFormatError(
            f"{where}: unparseable timestamp in the time column ({exc})"
        ) from None
    if times.isna().any():
        row = int(np.flatnonzero(times.isna().to_numpy())[0])
        raise SourceFormatError(f"{where}: empty timestamp in the time column at data row {row}")
    if getattr(times.dtype, "tz", None) is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    return times.to_numpy().astype("datetime64[ns]").astype(np.int64)


def _row_numbers(values: np.ndarray) -> bool:
    """Whether text ``values`` are all integers (an index written by pandas, not times)."""
    return values.size > 0 and all(str(v).strip().lstrip("-").isdigit() for v in values)


def check_labels(labels: list[str], where: str) -> None:
    """Sensor labels must be present and distinct."""
    if not labels:
        raise SourceFormatError(f"{where}: no sensor columns")
    blank = [i for i, s in enumerate(labels) if not s.strip()]
    if blank:
        raise SourceFormatError(f"{where}: sensor column {blank[0]} has an empty label")
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise SourceFormatError(f"{where}: duplicate sensor column {label!r}")
        seen.add(label)


class _SequentialRows:
    """Serves ``read(t0, t1)`` calls made front to back from an iterator of 2-D blocks."""

    def __init__(self, blocks: Iterator[np.ndarray], where: str) -> None:
        self._blocks, self._where = blocks, where
        self._pending: list[np.ndarray] = []
        self._held = 0
        self._position = 0

    def read(self, t0: int, t1: int) -> np.ndarray:
        if t0 != self._position:
            raise SourceFormatError(
                f"{self._where}: rows must be read in order ({t0} != {self._position})"
            )
        while self._held < t1 - t0:
            try:
                block = next(self._blocks)
            except StopIteration:
                raise SourceFormatError(
                    f"{self._where}: the file ended at row {self._position + self._held} "
                    f"(expected {t1}); it changed while being read?"
                ) from None
            self._pending.append(block)
            self._held += block.shape[0]
        joined = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        out, rest = joined[: t1 - t0], joined[t1 - t0 :]
        self._pending = [rest] if rest.shape[0] else []
        self._held = rest.shape[0]
        self._position = t1
        return out[:, :, None]


class WideCSVReader:
    """A wide CSV (header of sensor ids, optional time column) read in row blocks."""

    fmt = "wide-csv"
    key = None
    read_front = None

    def __init__(self, path: Path, time_column: str | None = None) -> None:
        self.path = path
        where = str(path)
        rows = csv_rows(path)  # every row checked: UTF-8, as many fields as the header, not cut
        _, header = next(rows, (0, []))
        if not header:
            raise SourceFormatError(f"{path}: empty CSV (no header row of sensor ids)")
        header = [h.strip() for h in header]
        t_col = pick_time_column(header, time_column, where)
        self._value_cols = [i for i in range(len(header)) if i != t_col]
        columns = [header[i] for i in self._value_cols]
        check_labels(columns, where)
        first = t_col if t_col is not None else self._value_cols[0]
        column = np.array([row[first] for _, row in rows], dtype=object)
        index_ns = None
        if t_col is not None and not (time_column is None and _row_numbers(column)):
            index_ns = parse_times(column, f"{where} (time column {header[t_col]!r})")
        # a column of row numbers (pandas' default index) is no time axis: --start/--freq give it
        self.layout = SeriesLayout(index_ns, int(column.size), columns, "string")
        self._rows = _SequentialRows(self._iter_values(), where)

    def _iter_values(self) -> Iterator[np.ndarray]:
        try:
            for chunk in pd.read_csv(
                self.path,
                usecols=self._value_cols,
                dtype=np.float64,
                chunksize=BLOCK_ROWS,
                na_values=sorted(NA_VALUES),
                keep_default_na=False,
            ):
                yield chunk.to_numpy()
        except (pd.errors.ParserError, ValueError):
            raise SourceFormatError(
                first_bad_number(self.path, self._value_cols, NA_VALUES)
            ) from None

    def read(self, t0: int, t1: int) -> np.ndarray:
        """Rows ``[t0, t1)`` as float64 ``(t, node, 1)`` in file column order (front to back)."""
        return self._rows.read(t0, t1)

    def close(self) -> None:
        """Nothing held open between blocks."""


class ParquetReader:
    """A wide Parquet table (numeric sensor columns, optional time column) in record batches."""

    fmt = "parquet"
    key = None
    read_front = None

    def __init__(self, path: Path, time_column: str | None = None) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise SourceFormatError("reading Parquet needs pyarrow (pip install pyarrow)") from None
        self.path = path
        try:
            self._file = pq.ParquetFile(path)
            self._open(time_column)
        except (pa.ArrowException, OSError, ValueError, ArithmeticError) as exc:
            raise SourceFormatError(f"{path}: not a readable Parquet file ({exc})") from None

    def _open(self, time_column: str | None) -> None:
        import pyarrow as pa

        path = self.path
        where = str(path)
        schema = self._file.schema_arrow
        labels = [str(n) for n in schema.names]
        index_cols = (schema.pandas_metadata or {}).get("index_columns", [])
        numeric_index = None
        if time_column is None:
            stamped = [
                n for n in labels if n in index_cols or pa.types.is_timestamp(schema.field(n).type)
            ]
            time_column = stamped[0] if stamped else None
            picked = pick_time_column(labels, time_column, where)
            kind = None if picked is None else schema.field(labels[picked]).type
            if kind is not None and (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
                # an integer index (or a numeric 'time' column) is no time axis: it is dropped,
                # and the time comes from --start/--freq
                numeric_index, time_column = labels[picked], None
        t_col = None if numeric_index else pick_time_column(labels, time_column, where)
        names = [n for i, n in enumerate(labels) if i != t_col and n != numeric_index]
        for name in names:
            kind = schema.field(name).type
            if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
                raise SourceFormatError(f"{where}: sensor column {name!r} is {kind}, not numeric")
        check_labels(names, where)
        self._names = names
        n_rows = int(self._file.metadata.num_rows)
        index_ns = None
        if t_col is not None:
            times = self._file.read(columns=[labels[t_col]]).column(0)
            index_ns = parse_times(times.to_pandas(), f"{where} (time column {labels[t_col]!r})")
        self.layout = SeriesLayout(index_ns, n_rows, names, "string")
        self._rows = _SequentialRows(self._iter_values(), where)

    def _iter_values(self) -> Iterator[np.ndarray]:
        try:
            for batch in self._file.iter_batches(batch_size=BLOCK_ROWS, columns=self._names):
                out = np.empty((batch.num_rows, len(self._names)), dtype=np.float64)
                for j, column in enumerate(batch.columns):
                    out[:, j] = column.to_numpy(zero_copy_only=False)
                yield out
        except (OSError, ValueError, ArithmeticError) as exc:
            raise SourceFormatError(f"{self.path}: not a readable Parquet file ({exc})") from None

    def read(self, t0: int, t1: int) -> np.ndarray:
        """Rows ``[t0, t1)`` as float64 ``(t, node, 1)`` (nulls as NaN), front to back."""
        return self._rows.read(t0, t1)

    def close(self) -> None:
        """Close the file."""
        self._file.close()
