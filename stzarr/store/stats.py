"""Train-split statistics: mean and standard deviation per feature (or per node and feature).

Computed lazily with dask over the store's files, so a store larger than memory is summarised
with bounded memory: one fused task per block of whole files, about :data:`BLOCK_BYTES` (read
and checked by :meth:`stzarr.store.format.Store.read`, which decodes its files concurrently),
returns the count, the sum of ``x - shift`` and the sum of its square over the valid readings,
accumulated in float64 one ~1 MiB slab at a time, and dask adds these up (``shift`` is a rough
mean from the first file, which keeps the one-pass variance numerically stable). Memory is then
a few blocks per dask thread; ``dask.config.set(scheduler="synchronous")`` trades speed for one
block in flight.
Missing readings (0 and NaN when the store's ``missing_value`` is ``"zero"``, NaN when it is
``"nan"``) are excluded. The standard deviation is the population one (``ddof=0``, as NumPy and
DCRNN's ``StandardScaler``); a feature that is constant over the split gets ``std = 1`` so that
standardising never divides by zero.

Caching is an explicit step: :func:`cache_stats` writes statistics into the store's attributes
under ``stzarr_stats``, keyed by the split's time range and the grouping, and
:func:`cached_stats` reads them back, so the pass over the data runs once per split.
:func:`compute_stats` only computes.

Standardisation with these statistics is :mod:`stzarr.data.scaler`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dask
import numpy as np

from stzarr.errors import StatsError
from stzarr.monitor import release_free_heap
from stzarr.store.format import Store, update_attrs, valid_mask

CACHE_ATTR = "stzarr_stats"


@dataclass(frozen=True, eq=False)
class Stats:
    """Mean, standard deviation and count of valid readings.

    Attributes
    ----------
    mean, std : numpy.ndarray
        float64, shape ``(f,)`` or ``(n, f)`` (per node).
    count : numpy.ndarray
        int64 number of valid readings, same shape.
    key : str
        Cache key: the time range and grouping the statistics were computed over.
    """

    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray
    key: str

    @property
    def per_node(self) -> bool:
        """True when the statistics are per node and feature."""
        return self.mean.ndim == 2

    def select(self, features: np.ndarray | list[int]) -> Stats:
        """Statistics of a subset of features (last axis)."""
        idx = np.asarray(features, dtype=np.int64)
        return Stats(self.mean[..., idx], self.std[..., idx], self.count[..., idx], self.key)

    def float32(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)`` as float32, the values standardisation uses."""
        return self.mean.astype(np.float32), self.std.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for JSON (float64 values round-trip exactly)."""
        return {
            "key": self.key,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "count": self.count.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Stats:
        """Inverse of :meth:`to_dict`."""
        return cls(
            np.asarray(d["mean"], dtype=np.float64),
            np.asarray(d["std"], dtype=np.float64),
            np.asarray(d["count"], dtype=np.int64),
            str(d["key"]),
        )


def stats_key(bounds: tuple[int, int], per_node: bool) -> str:
    """Cache key of the statistics over time steps ``[lo, hi)``."""
    return f"time[{int(bounds[0])}:{int(bounds[1])}]/{'node-feature' if per_node else 'feature'}"


def _checked_range(store: Store, bounds: tuple[int, int]) -> tuple[int, int]:
    lo, hi = int(bounds[0]), int(bounds[1])
    n_time = store.shape[0]
    if not 0 <= lo < hi <= n_time:
        raise StatsError(f"statistics range [{lo}, {hi}) is empty or outside [0, {n_time})")
    return lo, hi


def cached_stats(store: Store, *, bounds: tuple[int, int], per_node: bool = False) -> Stats | None:
    """The statistics of ``[lo, hi)`` cached in ``store`` by :func:`cache_stats`, or None."""
    key = stats_key(_checked_range(store, bounds), per_node)
    cached = store.attrs.get(CACHE_ATTR, {}).get(key)
    return None if cached is None else Stats.from_dict(cached)


def require_stats(store: Store, *, bounds: tuple[int, int], per_node: bool = False) -> Stats:
    """The statistics of ``[lo, hi)`` cached in ``store``; call it where the run is launched.

    Raises
    ------
    StatsError
        When the store holds no statistics of that range: names the range, its timestamps and
        the command that computes them.
    """
    stats = cached_stats(store, bounds=bounds, per_node=per_node)
    if stats is not None:
        return stats
    lo, hi = _checked_range(store, bounds)
    first, last = (np.datetime_as_string(store.time[i], unit="s") for i in (lo, hi - 1))
    kind = "per-node statistics" if per_node else "statistics"
    raise StatsError(
        f"{store.path} holds no cached {kind} of steps [{lo}, {hi}) ({first} .. {last}); "
        f"compute them with `stzarr stats {store.path}{' --per-node' if per_node else ''}` "
        "and the same split flags (--train/--val or --val-start/--test-start)"
    )


def cache_stats(store: Store, stats: Stats) -> bool:
    """Write ``stats`` into the store's attributes (``stzarr_stats``, keyed by ``stats.key``).

    Returns False when the store is read-only (nothing is written), True otherwise.
    """
    entries = dict(store.attrs.get(CACHE_ATTR, {}))
    entries[stats.key] = stats.to_dict()
    try:
        return update_attrs(store, {CACHE_ATTR: entries})
    except (OSError, PermissionError, ValueError):
        return False


def compute_stats(store: Store, *, bounds: tuple[int, int], per_node: bool = False) -> Stats:
    """Mean and std of the valid readings in time steps ``[lo, hi)`` of ``store``.

    Reads the data (lazily, chunk by chunk); neither reads nor writes the cache (see
    :func:`cached_stats` and :func:`cache_stats`).

    Parameters
    ----------
    store : Store
    bounds : tuple of int
        Half-open time range, normally the train split (``split_bounds(...)["train"]``).
    per_node : bool
        Statistics per ``(node, feature)`` instead of per feature.

    Raises
    ------
    StatsError
        When the range is empty or a feature (or node-feature) has no valid reading in it.
    """
    lo, hi = _checked_range(store, bounds)
    key = stats_key((lo, hi), per_node)

    files = store.shard_time or store.chunk_time
    arr = store.dask_array(store.file_block(BLOCK_BYTES))[lo:hi]
    # shift: a rough mean from the first file, so that the additive shifted sums below are
    # numerically stable (float64 sums of x - shift and (x - shift)^2)
    first = store.read(lo, min(hi, lo + files))
    shift = _shift(first, store.missing_value, per_node)
    n_rows, n_feature = shift.shape
    moments = arr.map_blocks(
        _block_moments,
        shift,
        store.missing_value,
        dtype=np.float64,
        chunks=((1,) * arr.numblocks[0], (3,), (n_rows,), (n_feature,)),
        new_axis=[1],
    )
    count, s1, s2 = dask.compute(moments.sum(axis=0))[0]
    release_free_heap()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = shift + s1 / count
        var = np.maximum(s2 / count - (s1 / count) ** 2, 0.0)
    std = np.sqrt(var)
    if not per_node:
        mean, std, count = mean[0], std[0], count[0]
    return _finish(mean, std, count, key, store)


BLOCK_BYTES = 64 * 2**20  # a block of whole files per task: each read decodes several at once


SLAB_ELEMENTS = 1 << 17  # float64 temporaries of a chunk are made one ~1 MiB slab at a time


def _shift(block: np.ndarray, missing_value: str, per_node: bool) -> np.ndarray:
    """Mean of the valid readings of ``block`` (0 where none): ``(n, f)`` per node-feature,
    else ``(1, f)``."""
    shape = block.shape[1:] if per_node else (1, block.shape[2])
    count, total, _ = _block_moments(block, np.zeros(shape), missing_value)[0]
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def _block_moments(block: np.ndarray, shift: np.ndarray, missing_value: str) -> np.ndarray:
    """``(1, 3, *shift.shape)``: count, sum of ``x - shift`` and of its square over the valid
    readings of one ``(t, n, f)`` chunk, in float64, built slab by slab (bounded temporaries).

    ``shift`` is ``(n, f)`` (per node-feature) or ``(1, f)`` (nodes pooled)."""
    f = block.shape[2]
    rows = block if shift.shape[0] == block.shape[1] else block.reshape(-1, 1, f)
    step = max(1, SLAB_ELEMENTS // (rows.shape[1] * f))
    acc = np.zeros((3, *shift.shape), dtype=np.float64)
    for i in range(0, rows.shape[0], step):
        x = rows[i : i + step].astype(np.float64)
        valid = valid_mask(x, missing_value)
        np.subtract(x, shift, out=x)
        x[~valid] = 0.0
        acc[0] += valid.sum(axis=0)
        acc[1] += x.sum(axis=0)
        np.multiply(x, x, out=x)
        acc[2] += x.sum(axis=0)
    return acc[None]


def _finish(mean: np.ndarray, std: np.ndarray, count: np.ndarray, key: str, store: Store) -> Stats:
    count = np.asarray(count, dtype=np.int64)
    empty = np.argwhere(count == 0)
    if empty.size:
        names = store.feature_names
        where = empty[0]
        if count.ndim == 2:
            what = f"node {store.node_ids[where[0]]!r}, feature {names[where[1]]!r}"
            hint = " (use per-feature statistics)"
        else:
            what = f"feature {names[where[0]]!r}"
            hint = ""
        raise StatsError(
            f"{what} has no valid reading in {key.split('/')[0]} ({len(empty)} "
            f"{'entries' if len(empty) > 1 else 'entry'} all missing){hint}"
        )
    std = np.asarray(std, dtype=np.float64).copy()
    std[std == 0] = 1.0
    return Stats(np.asarray(mean, dtype=np.float64), std, count, key)
