"""Calendar features computed from the time coordinate, at batch time.

The standard pipeline stores time-of-day as a dense extra channel copied to every node (doubling
the series). Here the features are a tiny ``(t, k)`` table derived from the time coordinate; the
loader gathers the rows of a batch and broadcasts them over nodes when it builds ``x``.

Conventions follow DCRNN's ``generate_training_data.py``: time-of-day is the fraction of the day
elapsed (0 <= v < 1); day-of-week is one-hot over Monday..Sunday (7 channels). Values are not
standardised.
"""

from __future__ import annotations

import numpy as np

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_S = 86_400


def is_subdaily(interval_s: float | None) -> bool:
    """Whether steps ``interval_s`` seconds apart are finer than a day, so that time-of-day
    carries information (the default for adding it as an input feature)."""
    return interval_s is not None and 0 < float(interval_s) < DAY_S


def time_feature_names(*, time_of_day: bool = True, day_of_week: bool = False) -> list[str]:
    """Names of the channels :func:`time_features` returns, in order."""
    names = ["time_of_day"] if time_of_day else []
    if day_of_week:
        names += [f"day_of_week_{d}" for d in DAY_NAMES]
    return names


def time_features(
    time: np.ndarray, *, time_of_day: bool = True, day_of_week: bool = False
) -> np.ndarray:
    """Calendar features of each time step.

    Parameters
    ----------
    time : numpy.ndarray
        datetime64 coordinate, shape ``(t,)``.
    time_of_day : bool
        Fraction of the day elapsed (1 channel).
    day_of_week : bool
        One-hot day of the week, Monday first (7 channels).

    Returns
    -------
    numpy.ndarray
        float32 ``(t, k)`` with ``k = len(time_feature_names(...))``.
    """
    t = np.asarray(time).astype("datetime64[ns]")
    columns = []
    if time_of_day:
        tod = (t - t.astype("datetime64[D]")) / np.timedelta64(1, "D")
        columns.append(tod.astype(np.float32)[:, None])
    if day_of_week:
        # 1970-01-01 was a Thursday (index 3 with Monday = 0)
        dow = (t.astype("datetime64[D]").astype(np.int64) + 3) % 7
        columns.append(np.eye(7, dtype=np.float32)[dow])
    if not columns:
        return np.zeros((t.shape[0], 0), dtype=np.float32)
    return np.concatenate(columns, axis=1)
