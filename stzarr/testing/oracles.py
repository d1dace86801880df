"""Oracles written without the code under test: plain NumPy from raw values."""

from __future__ import annotations

import numpy as np

from stzarr.errors import StatsError
from stzarr.store.stats import Stats


def numpy_stats(data: np.ndarray, missing_value: str, *, per_node: bool = False) -> Stats:
    """Train-split statistics computed eagerly with NumPy (float64) on an in-memory array.

    The oracle of :func:`stzarr.store.stats.compute_stats` (the lazy, chunked version): a
    reading is missing when it is NaN, or 0 under the ``"zero"`` convention.
    """
    x = np.asarray(data, dtype=np.float64)
    valid = ~np.isnan(x)
    if missing_value == "zero":
        valid &= x != 0
    axes = (0,) if per_node else (0, 1)
    count = valid.sum(axis=axes)
    if not count.all():
        raise StatsError("a feature has no valid reading")
    x = np.where(valid, x, np.nan)
    mean = np.nanmean(x, axis=axes)
    std = np.nanstd(x, axis=axes)
    std[std == 0] = 1.0
    return Stats(mean, std, count.astype(np.int64), "numpy")


def numpy_standardise(data: np.ndarray, stats: Stats, missing_value: str) -> np.ndarray:
    """Standardised float32 copy of raw ``data`` written from the definition: missing readings
    (NaN, and 0 under ``"zero"``) become ``(0 - mean) / std`` under ``"zero"`` and NaN under
    ``"nan"``; valid ones ``(x - float32(mean)) / float32(std)``.

    The oracle of :meth:`stzarr.data.scaler.Scaler.transform_`.
    """
    mean = np.asarray(stats.mean).astype(np.float32)
    std = np.asarray(stats.std).astype(np.float32)
    x = np.array(data, dtype=np.float32)
    if missing_value == "zero":
        x[np.isnan(x)] = np.float32(0)
    return (x - mean) / std
