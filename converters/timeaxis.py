"""Checks on a source's time index: strictly increasing, no duplicates, regular spacing."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from stzarr.errors import SourceFormatError


@dataclass(frozen=True)
class TimeAxis:
    """What the checks found about a time index (plain data).

    Attributes
    ----------
    n_steps : int
        Number of timestamps.
    start, end : str
        First and last timestamp (ISO 8601).
    interval_s : float or None
        The sampling interval (the most common step; None for a single timestamp).
    irregular_steps : int
        Steps whose spacing differs from ``interval_s`` (0 for a regular index).
    first_irregular : str or None
        Timestamp after the first irregular step.
    """

    n_steps: int
    start: str
    end: str
    interval_s: float | None
    irregular_steps: int
    first_irregular: str | None

    @property
    def regular(self) -> bool:
        """True when every step equals the sampling interval."""
        return self.irregular_steps == 0

    def to_dict(self) -> dict:
        """Plain-data view for JSON."""
        return asdict(self)


def duration_text(ns: int) -> str:
    """Compact duration: ``5min``, ``20min``, ``1h``, ``7d``, ``1.5s``."""
    seconds = ns / 1e9
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def iso_time(ns: np.int64 | int) -> str:
    """A nanosecond timestamp as ISO 8601 to the second."""
    return str(np.datetime64(int(ns), "ns").astype("datetime64[s]"))


def check_time_index(index_ns: np.ndarray, *, source: str, allow_gaps: bool) -> TimeAxis:
    """Validate a time index given as int64 nanoseconds since the epoch.

    Parameters
    ----------
    index_ns : numpy.ndarray
        int64 timestamps in source order.
    source : str
        Name used in error messages.
    allow_gaps : bool
        Accept irregular spacing (reported in the result) instead of raising.

    Raises
    ------
    SourceFormatError
        Duplicate or decreasing timestamps; irregular spacing unless ``allow_gaps``.
    """
    index_ns = np.asarray(index_ns, dtype=np.int64)
    diffs = np.diff(index_ns)
    duplicate = np.flatnonzero(diffs == 0)
    if duplicate.size:
        i = int(duplicate[0])
        raise SourceFormatError(
            f"{source}: duplicate timestamps ({duplicate.size} in all; first "
            f"{iso_time(index_ns[i])} at rows {i} and {i + 1})"
        )
    backwards = np.flatnonzero(diffs < 0)
    if backwards.size:
        i = int(backwards[0])
        raise SourceFormatError(
            f"{source}: timestamps are not increasing ({backwards.size} steps go back; first "
            f"row {i + 1} {iso_time(index_ns[i + 1])} after row {i} {iso_time(index_ns[i])})"
        )
    interval_ns: int | None = None
    irregular = np.empty(0, dtype=np.int64)
    if diffs.size:
        values, counts = np.unique(diffs, return_counts=True)
        interval_ns = int(values[np.argmax(counts)])
        irregular = np.flatnonzero(diffs != interval_ns)
    first = None if not irregular.size else iso_time(index_ns[irregular[0] + 1])
    if irregular.size and not allow_gaps:
        i = int(irregular[0])
        step, usual = duration_text(int(diffs[i])), duration_text(interval_ns)
        raise SourceFormatError(
            f"{source}: irregular time spacing: {irregular.size} of {diffs.size} steps differ "
            f"from the {usual} interval (first at {first}: a {step} step); pass --allow-gaps to "
            "convert anyway"
        )
    return TimeAxis(
        n_steps=int(index_ns.size),
        start=iso_time(index_ns[0]),
        end=iso_time(index_ns[-1]),
        interval_s=None if interval_ns is None else interval_ns / 1e9,
        irregular_steps=int(irregular.size),
        first_irregular=first,
    )
