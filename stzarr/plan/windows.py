"""Window arithmetic: which samples exist, per split, and which time steps they read.

Pure NumPy, no I/O, so that it can be property-tested. Vocabulary (after tsl): a sample with start
``s`` reads ``x = data[s : s + input_steps]`` and ``y = data[s + input_steps : s + span]`` where
``span = input_steps + horizon``. Consecutive starts of one split are ``stride`` steps apart,
counted from the split's first step.

Splits are half-open ranges of *time steps* (default 70/10/20 %). By default a window never
crosses a split boundary: a split ``[lo, hi)`` owns the starts ``lo, lo + stride, ...`` with
``s + span <= hi``, so no training sample reads a validation or test step (no leakage).
``cross_splits=True`` gives PGT's convention instead: a split owns the starts in ``[lo, hi)`` and
its windows may read past ``hi`` (every start of the series then belongs to exactly one split).
With a time coordinate, windows touching a gap (two consecutive steps further apart than the
sampling interval) can be excluded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stzarr.errors import SpecError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class WindowSpec:
    """Shape of one sample.

    Parameters
    ----------
    input_steps : int
        Steps the model sees (``T_in``; default 12, an hour at 5-minute sampling).
    horizon : int
        Steps to predict (``T_out``; default 12).
    stride : int
        Distance between consecutive starts of a split.
    """

    input_steps: int = field(default=12, metadata={"help": "steps a sample sees", "metavar": "N"})
    horizon: int = field(default=12, metadata={"help": "steps to predict", "metavar": "N"})
    stride: int = field(
        default=1, metadata={"help": "distance between consecutive starts", "metavar": "N"}
    )

    def __post_init__(self) -> None:
        for name in ("input_steps", "horizon", "stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise SpecError(f"{name} must be a positive integer, got {value!r}")

    @property
    def span(self) -> int:
        """Steps one sample reads: ``input_steps + horizon``."""
        return self.input_steps + self.horizon

    @property
    def halo(self) -> int:
        """Steps a contiguous range of starts reads beyond its last start: ``span - 1``."""
        return self.span - 1

    def to_dict(self) -> dict[str, int]:
        """Plain-data form for JSON."""
        return {
            "input_steps": int(self.input_steps),
            "horizon": int(self.horizon),
            "stride": int(self.stride),
        }


def split_bounds(n_time: int, train: float = 0.7, val: float = 0.1) -> dict[str, tuple[int, int]]:
    """Half-open time-step ranges of the train, validation and test splits.

    ``train`` and ``val`` are fractions of ``n_time``; the test split takes the rest. Boundaries
    are rounded to the nearest step.

    Returns
    -------
    dict
        ``{"train": (0, a), "val": (a, b), "test": (b, n_time)}``.

    Raises
    ------
    SpecError
        When a fraction is outside ``[0, 1]``, ``train`` is 0, or ``train + val > 1``.
    """
    if n_time < 1:
        raise SpecError(f"the series has no time steps (n_time={n_time})")
    if not (0 < train <= 1) or not (0 <= val <= 1) or train + val > 1 + 1e-9:
        raise SpecError(
            f"split fractions must satisfy 0 < train, 0 <= val, train + val <= 1 "
            f"(got train={train}, val={val})"
        )
    a = round(n_time * train)
    b = min(n_time, round(n_time * (train + val)))
    return {"train": (0, a), "val": (a, b), "test": (b, n_time)}


def split_bounds_at(
    time: np.ndarray, val_start: Any, test_start: Any
) -> dict[str, tuple[int, int]]:
    """Split bounds from timestamps: validation starts at ``val_start``, test at ``test_start``.

    Parameters
    ----------
    time : numpy.ndarray
        Sorted datetime64 coordinate.
    val_start, test_start : str or numpy.datetime64
        First timestamp of the validation and test splits (steps at or after it belong to it).
    """
    time = np.asarray(time).astype("datetime64[ns]")
    a = int(np.searchsorted(time, np.datetime64(val_start, "ns"), side="left"))
    b = int(np.searchsorted(time, np.datetime64(test_start, "ns"), side="left"))
    if b < a:
        raise SpecError(f"test start {test_start} is before validation start {val_start}")
    return {"train": (0, a), "val": (a, b), "test": (b, len(time))}


def gap_steps(time: np.ndarray, interval: np.timedelta64 | None = None) -> np.ndarray:
    """Boolean ``(t - 1,)``: True where steps ``i`` and ``i + 1`` are not one interval apart.

    ``interval`` defaults to the most common difference between consecutive steps.
    """
    diffs = np.diff(np.asarray(time).astype("datetime64[ns]").astype(np.int64))
    if diffs.size == 0:
        return np.zeros(0, dtype=bool)
    if interval is None:
        values, counts = np.unique(diffs, return_counts=True)
        step = values[np.argmax(counts)]
    else:
        step = np.timedelta64(interval, "ns").astype(np.int64)
    return diffs != step


@dataclass(frozen=True, eq=False)
class WindowPlan:
    """Valid starts per split: plain data, executed by the loaders.

    Attributes
    ----------
    spec : WindowSpec
    n_time : int
        Length of the series the plan was made for.
    bounds : dict
        Half-open time-step range of each split.
    starts : dict
        Sorted int64 starts of each split (global time indices).
    cross_splits : bool
        Whether windows may read past their split's end.
    """

    spec: WindowSpec
    n_time: int
    bounds: Mapping[str, tuple[int, int]]
    starts: Mapping[str, np.ndarray] = field(repr=False)
    cross_splits: bool = False

    def count(self, split: str) -> int:
        """Number of samples of ``split``."""
        return int(self.starts[split].shape[0])

    def read_range(self, starts: np.ndarray) -> tuple[int, int]:
        """Half-open time range ``[min(starts), max(starts) + span)`` that ``starts`` read."""
        starts = np.asarray(starts)
        if starts.size == 0:
            raise SpecError("an empty set of starts reads nothing")
        return int(starts.min()), int(starts.max()) + self.spec.span

    def split_read_range(self, split: str) -> tuple[int, int]:
        """Time range read by all samples of ``split``."""
        return self.read_range(self.starts[split])

    def to_dict(self, *, include_starts: bool = False) -> dict[str, Any]:
        """Plain-data form for JSON (counts and ranges; every start only when asked)."""
        out: dict[str, Any] = {
            "spec": self.spec.to_dict(),
            "n_time": int(self.n_time),
            "cross_splits": bool(self.cross_splits),
            "splits": {},
        }
        for name, (lo, hi) in self.bounds.items():
            starts = self.starts[name]
            entry: dict[str, Any] = {"bounds": [int(lo), int(hi)], "count": int(starts.size)}
            if starts.size:
                entry["read_range"] = list(self.read_range(starts))
            if include_starts:
                entry["starts"] = starts.tolist()
            out["splits"][name] = entry
        return out


def _split_starts(
    lo: int, hi: int, n_time: int, spec: WindowSpec, cross_splits: bool
) -> np.ndarray:
    last = n_time - spec.span if cross_splits else hi - spec.span  # inclusive
    if cross_splits:
        last = min(last, hi - 1)
    if last < lo:
        return np.zeros(0, dtype=np.int64)
    return np.arange(lo, last + 1, spec.stride, dtype=np.int64)


def make_plan(
    n_time: int,
    spec: WindowSpec,
    *,
    train: float = 0.7,
    val: float = 0.1,
    bounds: Mapping[str, tuple[int, int]] | None = None,
    time: np.ndarray | None = None,
    exclude_gaps: bool = False,
    interval: np.timedelta64 | None = None,
    cross_splits: bool = False,
) -> WindowPlan:
    """Plan the samples of every split.

    Parameters
    ----------
    n_time : int
        Steps in the series.
    spec : WindowSpec
    train, val : float
        Split fractions (ignored when ``bounds`` is given).
    bounds : mapping, optional
        Explicit split ranges, e.g. from :func:`split_bounds_at`.
    time : numpy.ndarray, optional
        datetime64 coordinate; needed for ``exclude_gaps``.
    exclude_gaps : bool
        Drop windows that read across a gap in ``time``.
    interval : numpy.timedelta64, optional
        Sampling interval for gap detection (default: the most common step).
    cross_splits : bool
        Let windows read past their split's end (PGT's convention).

    Raises
    ------
    SpecError
        When a window is longer than the series, or a non-empty split has no full window.
    """
    if spec.span > n_time:
        raise SpecError(
            f"a window of {spec.span} steps (input_steps {spec.input_steps} + horizon "
            f"{spec.horizon}) is longer than the series ({n_time} steps)"
        )
    if bounds is None:
        bounds = split_bounds(n_time, train, val)
    bounds = {name: (int(lo), int(hi)) for name, (lo, hi) in bounds.items()}
    for name, (lo, hi) in bounds.items():
        if not 0 <= lo <= hi <= n_time:
            raise SpecError(f"split {name!r} range [{lo}, {hi}) is outside [0, {n_time})")
    bad = None
    if exclude_gaps:
        if time is None:
            raise SpecError("exclude_gaps needs the time coordinate")
        if len(time) != n_time:
            raise SpecError(f"time has {len(time)} steps but the series has {n_time}")
        # gaps_before[k] = number of gaps between steps i and i+1 for i < k
        gaps_before = np.concatenate([[0], np.cumsum(gap_steps(time, interval))])
        bad = gaps_before
    starts: dict[str, np.ndarray] = {}
    for name, (lo, hi) in bounds.items():
        s = _split_starts(lo, hi, n_time, spec, cross_splits)
        if bad is not None and s.size:
            # a window reads steps s .. s+span-1, i.e. step pairs s .. s+span-2
            s = s[bad[s + spec.span - 1] - bad[s] == 0]
        if s.size == 0 and hi > lo:
            raise SpecError(
                f"split {name!r} ({hi - lo} steps, [{lo}, {hi})) holds no full window of "
                f"{spec.span} steps" + (" without a gap" if bad is not None else "")
            )
        starts[name] = s
    return WindowPlan(spec, int(n_time), bounds, starts, bool(cross_splits))


def window_index(starts: np.ndarray, offset: int, steps: int) -> np.ndarray:
    """``(b, steps)`` int64 time indices ``starts[:, None] - offset + arange(steps)``."""
    starts = np.asarray(starts, dtype=np.int64)
    return (starts - offset)[:, None] + np.arange(steps, dtype=np.int64)


def chunk_cuts(starts: np.ndarray, chunk_time: int, chunks: np.ndarray) -> np.ndarray:
    """Positions in the sorted ``starts`` where the time chunks ``chunks`` begin.

    The one rule for cutting a range of starts at chunk boundaries (partitions, stream blocks):
    position ``i`` is the number of starts before step ``chunk * chunk_time``, so the starts
    ``starts[i_j : i_{j+1}]`` lie in whole chunks. Returns the distinct positions, ascending
    (chunks holding no start give no cut of their own).
    """
    edges = np.asarray(chunks, dtype=np.int64) * int(chunk_time)
    return np.unique(np.searchsorted(starts, edges, side="left")).astype(np.int64)
