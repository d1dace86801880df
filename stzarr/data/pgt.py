"""Drop-in replacement for PyTorch Geometric Temporal 0.56's ``get_index_dataset``.

PGT's dataset loaders (``METRLADatasetLoader(index=True).get_index_dataset(...)`` and friends)
return ``(train_loader, val_loader, test_loader, edges, edge_weights, means, stds)`` whose loaders
yield ``x (b, lags, n, f)`` and ``y (b, lags, n, f)``. :func:`get_index_dataset` returns the same
tuple from any stzarr store, with batches built by :class:`stzarr.data.batcher.SeriesBatcher` (one
gather per batch instead of one ``__getitem__`` per sample plus collate).

Differences from PGT, on purpose:

* statistics come from the training split only (PGT uses the whole series, leaking the test
  period), and are per feature;
* by default windows never cross a split boundary; ``cross_splits=True`` reproduces PGT's split
  of the start indices exactly (``round(n * ratio)`` starts for train and test, the rest for
  validation, windows reading past their split);
* time-of-day is computed at batch time instead of being stored per node;
* the horizon can differ from ``lags``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from stzarr.data.calendar import is_subdaily
from stzarr.data.loaders import make_loaders
from stzarr.errors import SpecError
from stzarr.plan.windows import WindowSpec, split_bounds
from stzarr.store.format import Store, open_store
from stzarr.store.stats import Stats, compute_stats


def pgt_bounds(n_time: int, span: int, ratio: Sequence[float]) -> dict[str, tuple[int, int]]:
    """Split bounds reproducing PGT's split of the start indices (use with ``cross_splits``).

    PGT takes the ``n_time - span + 1`` starts, gives the first ``round(n * ratio[0])`` to
    train, the last ``round(n * ratio[2])`` to test and the rest to validation.
    """
    n_starts = n_time - span + 1
    if n_starts < 1:
        raise SpecError(f"a window of {span} steps is longer than the series ({n_time} steps)")
    n_train = round(n_starts * ratio[0])
    n_test = round(n_starts * ratio[2])
    a, b = n_train, n_starts - n_test
    if not 0 < a <= b:
        raise SpecError(f"ratio {tuple(ratio)} leaves no training or validation starts")
    return {"train": (0, a), "val": (a, b), "test": (b, n_time)}


def get_index_dataset(
    store: Store | str | os.PathLike[str],
    batch_size: int = 64,
    lags: int = 12,
    *,
    horizon: int | None = None,
    shuffle: bool = False,
    ratio: Sequence[float] = (0.7, 0.1, 0.2),
    device: torch.device | str | None = None,
    seed: int = 0,
    time_of_day: bool | None = None,
    target_features: Sequence[int | str] | None = None,
    standardise: bool = True,
    cross_splits: bool = False,
) -> tuple[
    DataLoader, DataLoader, DataLoader, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
]:
    """PGT-compatible index-batching loaders for a store.

    Parameters
    ----------
    store : Store or path
    batch_size : int
    lags : int
        Input steps (PGT's ``lags``).
    horizon : int, optional
        Steps to predict (PGT: equal to ``lags``, the default).
    shuffle : bool
        Shuffle the training batches (seeded with ``seed``); PGT also shuffled val/test, which
        changes nothing but the order, so they are kept in order here.
    ratio : sequence of float
        Train/validation/test fractions.
    device : torch.device or str, optional
        Where the series lives and batches are built (PGT's ``allGPU``); default CUDA if
        available, else CPU.
    time_of_day : bool, optional
        Append time-of-day to ``x``; default: when the store samples faster than daily.
    target_features : sequence, optional
        Features of ``y`` (default all stored features).
    standardise : bool
        Z-score with the train statistics; False keeps the stored values (PGT's chickenpox).
    cross_splits : bool
        Split the starts exactly as PGT does (windows may read into the next split).

    Returns
    -------
    tuple
        ``(train_loader, val_loader, test_loader, edge_index, edge_weight, means, stds)``;
        ``means``/``stds`` are float32 per stored feature.
    """
    if not isinstance(store, Store):
        store = open_store(store)
    n_time, _, n_feature = store.shape
    spec = WindowSpec(lags, lags if horizon is None else horizon)
    if abs(sum(ratio) - 1) > 1e-6:
        raise SpecError(f"ratio {tuple(ratio)} must sum to 1")
    if cross_splits:
        bounds = pgt_bounds(n_time, spec.span, ratio)
    else:
        bounds = split_bounds(n_time, ratio[0], ratio[1])
    if time_of_day is None:
        time_of_day = is_subdaily(store.attrs.get("sampling_interval_s"))
    if standardise:
        stats = compute_stats(store, bounds=bounds["train"])
    else:
        stats = Stats(
            np.zeros(n_feature), np.ones(n_feature), np.zeros(n_feature, dtype=np.int64), "identity"
        )
    loaders = make_loaders(
        store,
        spec,
        batch_size=batch_size,
        bounds=bounds,
        stats=stats,
        shuffle=shuffle,
        seed=seed,
        device=device,
        target_features=target_features,
        time_of_day=time_of_day,
        fill_missing=False,
        with_mask=False,  # PGT's loaders yield (x, y)
        cross_splits=cross_splits,
    )
    means = torch.from_numpy(stats.mean.astype(np.float32))
    stds = torch.from_numpy(stats.std.astype(np.float32))
    return (
        loaders.train,
        loaders.val,
        loaders.test,
        torch.from_numpy(store.edge_index),
        torch.from_numpy(store.edge_weight),
        means,
        stds,
    )
