"""Loaders: batch-level datasets over a :class:`~stzarr.data.batcher.SeriesBatcher`, driven by a
stock ``DataLoader``.

:class:`IndexBatchDataset` maps a list of sample positions to a whole batch; a stock
``torch.utils.data.DataLoader`` drives it through a ``BatchSampler`` used as its sampler
(``batch_size=None``), shuffled by a seeded ``torch.Generator`` (:func:`batch_loader`).
:func:`make_loaders` builds train/val/test loaders from a store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from stzarr.data.batcher import SeriesBatcher
from stzarr.data.contract import BatchContract, Features
from stzarr.errors import SpecError
from stzarr.plan.windows import WindowPlan, WindowSpec, make_plan
from stzarr.store.format import Store, open_store
from stzarr.store.stats import Stats, compute_stats


class IndexBatchDataset(Dataset):
    """A map-style dataset whose items are whole batches: ``dataset[positions]``.

    ``positions`` index into ``starts`` (e.g. a list from a ``BatchSampler``); the batch is built
    by :class:`SeriesBatcher` in one gather.

    Parameters
    ----------
    batcher : SeriesBatcher
    starts : numpy.ndarray
        Global starts of the samples (e.g. ``plan.starts["train"]``).
    with_mask : bool
        Items are ``(x, y, missing)``, the batch contract (default), or ``(x, y)``.
    """

    def __init__(self, batcher: SeriesBatcher, starts: np.ndarray, *, with_mask: bool = True):
        self.batcher = batcher
        self.starts = np.asarray(starts, dtype=np.int64)
        self.with_mask = with_mask
        if self.starts.size:  # fail now, not at the first batch, if starts read outside
            batcher._local_starts(np.array([self.starts.min(), self.starts.max()]))

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def __getitem__(self, positions: Any) -> tuple[torch.Tensor, ...]:
        starts = self.starts[np.asarray(positions, dtype=np.int64)]
        if self.with_mask:
            return self.batcher.batch_masked(starts)
        return self.batcher.batch(starts)


def _as_is(batch: Any) -> Any:
    """Collate function of batch-level datasets: the item already is the batch."""
    return batch


def batch_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    **kwargs: Any,
) -> DataLoader:
    """A stock ``DataLoader`` over a batch-level dataset (``dataset[list_of_positions]``).

    A ``BatchSampler`` is the loader's sampler and ``batch_size=None`` disables per-item
    collation; with ``shuffle`` the order is drawn from a ``torch.Generator`` seeded with
    ``seed`` (a new permutation each epoch, the same sequence for the same seed).
    """
    if batch_size < 1:
        raise SpecError(f"batch_size must be positive, got {batch_size}")
    n = len(dataset)  # type: ignore[arg-type]
    if shuffle:
        generator = torch.Generator().manual_seed(int(seed))
        base = RandomSampler(range(n), generator=generator)
    else:
        base = SequentialSampler(range(n))
    sampler = BatchSampler(base, batch_size=batch_size, drop_last=drop_last)
    return DataLoader(dataset, sampler=sampler, batch_size=None, collate_fn=_as_is, **kwargs)


@dataclass(frozen=True)
class Loaders:
    """Train/validation/test loaders sharing one :class:`SeriesBatcher`."""

    train: DataLoader
    val: DataLoader
    test: DataLoader
    batcher: SeriesBatcher
    plan: WindowPlan
    stats: Stats


def make_loaders(
    store: Store | str,
    spec: WindowSpec,
    *,
    batch_size: int = 64,
    train: float = 0.7,
    val: float = 0.1,
    bounds: dict[str, tuple[int, int]] | None = None,
    stats: Stats | None = None,
    per_node: bool = False,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    device: torch.device | str | None = None,
    input_features: Features = None,
    target_features: Features = None,
    time_of_day: bool | None = None,
    day_of_week: bool = False,
    fill_missing: bool | None = None,
    with_mask: bool = True,
    cross_splits: bool = False,
    exclude_gaps: bool = False,
) -> Loaders:
    """Plan, compute (or reuse) train statistics, load once, and build the three loaders.

    Only the training loader is shuffled. Batches are ``(x, y, missing)`` (``(x, y)`` with
    ``with_mask=False``); features, calendar channels and the fill of missing values are those of
    :class:`~stzarr.data.contract.BatchContract`, with its defaults (those of ``stzarr train``):
    ``time_of_day`` for data sampled more often than daily, ``fill_missing`` for stores whose
    missing readings are NaN. Other parameters are those of :func:`make_plan`,
    :func:`stzarr.store.stats.compute_stats` and :func:`batch_loader`.
    """
    if not isinstance(store, Store):
        store = open_store(store)
    plan = make_plan(
        store.shape[0],
        spec,
        train=train,
        val=val,
        bounds=bounds,
        time=store.time,
        exclude_gaps=exclude_gaps,
        cross_splits=cross_splits,
    )
    if stats is None:
        stats = compute_stats(store, bounds=plan.bounds["train"], per_node=per_node)
    contract = BatchContract(
        input_features=input_features,
        target_features=target_features,
        time_of_day=time_of_day,
        day_of_week=day_of_week,
        fill_missing=fill_missing,
    ).for_store(store)
    batcher = SeriesBatcher.from_store(
        store, stats, spec, device=device, **contract.batcher_options()
    )
    loaders = {
        name: batch_loader(
            IndexBatchDataset(batcher, plan.starts[name], with_mask=with_mask),
            batch_size,
            shuffle=shuffle and name == "train",
            seed=seed,
            drop_last=drop_last and name == "train",
        )
        for name in ("train", "val", "test")
    }
    return Loaders(loaders["train"], loaders["val"], loaders["test"], batcher, plan, stats)
