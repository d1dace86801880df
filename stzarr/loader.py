"""Index-batching: one standardised copy of the series, whole batches gathered in one op.

Design
------
:class:`SeriesBatcher` holds a single standardised float32 copy of a time range of the series,
``(t, n, f)``, on a device (CPU, or CUDA for GPU-index-batching: one host-to-device copy, then
standardisation and every gather happen on the device). A batch is built from global start
indices ``s``: ``x = series[s - offset + arange(input_steps)]`` and
``y = series[s - offset + input_steps + arange(horizon)]``, each one vectorised gather over
the time axis (no per-sample ``__getitem__`` and no collate): NumPy fancy indexing on views of
the tensor on the CPU (fewer dispatch layers per batch), ``index_select`` on a device; the
bytes are the same. ``offset`` is the global time
index of ``series[0]``: the partitioned mode builds a batcher over its rank's range plus the halo,
the streaming loader one per block (:meth:`SeriesBatcher.from_array`).

Calendar features (time-of-day, day-of-week) are not stored per node: a ``(t, k)`` table computed
from the time coordinate is gathered with the same indices and broadcast over nodes when ``x`` is
built, then appended after the data features (as PGT/DCRNN do). Input and target features can be
selected (e.g. speed only as target).

Missing readings and masks
--------------------------
No second full-size array is kept for the missing-value mask. Under the store convention
``"zero"`` (0 and NaN missing) NaN readings are set to 0 before standardising, so every missing
reading becomes the same float32 value ``(0 - mean) / std`` (the *sentinel*, per feature or per
node-feature); under ``"nan"`` missing readings stay NaN. The mask of missing targets is therefore
recomputed from ``y`` by exact comparison (:meth:`SeriesBatcher.missing`). Caveat: a valid raw
reading so close to 0 that it standardises to the same float32 (|x| below half a float32 ulp of
the mean, e.g. < 2e-6 mph for speeds averaging 60) counts as missing. ``fill_missing=True`` replaces
missing inputs and targets by 0 (the train mean) at batch time, after the mask was taken
(:meth:`SeriesBatcher.batch_masked`). :meth:`SeriesBatcher.inverse` de-standardises predictions
with the target features' statistics.

Loaders
-------
:class:`IndexBatchDataset` maps a list of sample positions to a whole batch; a stock
``torch.utils.data.DataLoader`` drives it through a ``BatchSampler`` used as its sampler
(``batch_size=None``), shuffled by a seeded ``torch.Generator`` (:func:`batch_loader`).
:func:`make_loaders` builds train/val/test loaders from a store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from stzarr.errors import SpecError
from stzarr.features import time_feature_names, time_features
from stzarr.io_config import active_pipeline
from stzarr.stats import Stats, compute_stats, missing_sentinel, standardise_
from stzarr.store import Store, open_store
from stzarr.transfer import host_to_device
from stzarr.windows import WindowPlan, WindowSpec, make_plan

Features = Sequence[int | str] | None


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def read_range(store: Store, lo: int, hi: int) -> np.ndarray:
    """Read ``data[lo:hi]`` chunk by chunk into one preallocated float32 array.

    Decodes one chunk at a time straight into the output, so reading peaks at the output plus
    one chunk (a plain ``array[lo:hi]`` decodes many chunks concurrently). Under the ``zarrs``
    codec pipeline, which decodes a shard's chunks in parallel straight into the output, one
    shard at a time (peak: the output plus one encoded shard).
    """
    from zarr.core.buffer.cpu import NDBuffer

    array = store.array
    out = np.empty((hi - lo, *array.shape[1:]), dtype=np.float32)
    parallel = active_pipeline().pipeline == "zarrs"
    step = (store.shard_time if parallel else None) or store.chunk_time
    first = lo - lo % step
    for a in range(first, hi, step):
        a0, b0 = max(a, lo), min(a + step, hi)
        array.get_basic_selection(
            slice(a0, b0), out=NDBuffer.from_numpy_array(out[a0 - lo : b0 - lo])
        )
    return out


def resolve_features(features: Features, names: Sequence[str]) -> list[int]:
    """Feature indices from names or indices (``None``: all features)."""
    if features is None:
        return list(range(len(names)))
    out = []
    for f in features:
        if isinstance(f, str):
            if f not in names:
                raise SpecError(f"unknown feature {f!r} (the store has {list(names)})")
            out.append(list(names).index(f))
        else:
            if not 0 <= int(f) < len(names):
                raise SpecError(f"feature index {f} outside [0, {len(names)})")
            out.append(int(f))
    if not out:
        raise SpecError("select at least one feature")
    return out


class SeriesBatcher:
    """One standardised copy of a time range of the series (t n f) on a device; gathers batches.

    Parameters
    ----------
    series : torch.Tensor
        Standardised float32 ``(t, n, f)``; its device is where batches are built.
    spec : WindowSpec
    offset : int
        Global time index of ``series[0]``.
    calendar : torch.Tensor, optional
        float32 ``(t, k)`` calendar features aligned with ``series`` (appended to ``x``).
    stats : Stats, optional
        Statistics ``series`` was standardised with (for :meth:`inverse` and the sentinel);
        without them ``series`` is taken as raw values (missing: 0 or NaN by convention).
    missing_value : str
        Store convention, ``"zero"`` or ``"nan"`` (see the module docstring).
    input_features, target_features : sequence of int, optional
        Indices of the data features in ``x`` and ``y`` (default: all).
    fill_missing : bool
        Replace missing readings by 0 in batches.
    feature_names : sequence of str, optional
        Names of the data features (for :attr:`input_names`).
    calendar_names : sequence of str, optional
        Names of the calendar channels.
    """

    def __init__(
        self,
        series: torch.Tensor,
        spec: WindowSpec,
        *,
        offset: int = 0,
        calendar: torch.Tensor | None = None,
        stats: Stats | None = None,
        missing_value: str = "nan",
        input_features: Sequence[int] | None = None,
        target_features: Sequence[int] | None = None,
        fill_missing: bool = False,
        feature_names: Sequence[str] | None = None,
        calendar_names: Sequence[str] | None = None,
    ) -> None:
        if series.ndim != 3:
            raise SpecError(f"series must be (t, n, f), got shape {tuple(series.shape)}")
        if calendar is not None and calendar.shape[0] != series.shape[0]:
            raise SpecError("calendar features and series disagree on the number of steps")
        n_feature = series.shape[2]
        names = (
            list(feature_names)
            if feature_names is not None
            else [f"f{i}" for i in range(n_feature)]
        )
        self.series = series
        self.spec = spec
        self.offset = int(offset)
        self.calendar = calendar if calendar is not None and calendar.shape[1] else None
        self.stats = stats
        self.missing_value = missing_value
        self.fill_missing = fill_missing
        self.input_features = resolve_features(input_features, names)
        self.target_features = resolve_features(target_features, names)
        self.feature_names = names
        self.calendar_names = list(calendar_names or [])
        device = series.device
        self._x_source = self._source(series, self.input_features)
        self._y_source = self._source(series, self.target_features)
        self._ar_x = torch.arange(spec.input_steps, device=device)
        self._ar_y = torch.arange(spec.input_steps, spec.span, device=device)
        self._np_ar_x = np.arange(spec.input_steps, dtype=np.int64)
        self._np_ar_y = np.arange(spec.input_steps, spec.span, dtype=np.int64)
        if stats is not None:
            sentinel = missing_sentinel(stats, missing_value)
            mean32, std32 = stats.float32()
        else:
            sentinel = np.full(n_feature, 0.0 if missing_value == "zero" else np.nan, np.float32)
            mean32 = np.zeros(n_feature, np.float32)
            std32 = np.ones(n_feature, np.float32)
        self._sent_x = torch.from_numpy(sentinel[..., self.input_features]).to(device)
        self._sent_y = torch.from_numpy(sentinel[..., self.target_features]).to(device)
        self._mean_y = torch.from_numpy(mean32[..., self.target_features]).to(device)
        self._std_y = torch.from_numpy(std32[..., self.target_features]).to(device)

    @staticmethod
    def _source(series: torch.Tensor, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What to gather from: a view when the features are a contiguous range (one pass),
        else the whole series plus the feature indices to select afterwards."""
        if idx == list(range(idx[0], idx[0] + len(idx))):
            return series.narrow(2, idx[0], len(idx)), None
        return series, torch.tensor(idx, dtype=torch.long, device=series.device)

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_array(
        cls,
        block: np.ndarray,
        time: np.ndarray | None,
        stats: Stats,
        spec: WindowSpec,
        *,
        offset: int = 0,
        missing_value: str = "zero",
        device: torch.device | str | None = None,
        feature_names: Sequence[str] | None = None,
        input_features: Features = None,
        target_features: Features = None,
        time_of_day: bool = False,
        day_of_week: bool = False,
        fill_missing: bool = False,
        copy: bool = True,
    ) -> SeriesBatcher:
        """Standardise a raw ``(t, n, f)`` float32 block (global steps ``offset ...``) and wrap it.

        Parameters
        ----------
        block : numpy.ndarray
            Raw readings as stored.
        time : numpy.ndarray, optional
            datetime64 coordinate of the block's steps (needed for calendar features).
        copy : bool
            When False and the target device is the CPU, ``block`` is standardised in place
            (no second copy); the caller must not use it afterwards.
        Other parameters as :class:`SeriesBatcher` and :func:`stzarr.features.time_features`.
        """
        device = torch.device(device) if device is not None else default_device()
        block = np.asarray(block)
        if block.dtype != np.float32:
            block = block.astype(np.float32)
        elif copy and device.type == "cpu":
            block = block.copy()
        series = host_to_device(block, device)  # CUDA: pinned staging, non-blocking copies
        standardise_(series, stats, missing_value)
        names = (
            list(feature_names)
            if feature_names is not None
            else [f"f{i}" for i in range(block.shape[2])]
        )
        calendar = None
        cal_names = time_feature_names(time_of_day=time_of_day, day_of_week=day_of_week)
        if cal_names:
            if time is None or len(time) != block.shape[0]:
                raise SpecError("calendar features need the time coordinate of every step")
            table = time_features(time, time_of_day=time_of_day, day_of_week=day_of_week)
            calendar = torch.from_numpy(table).to(device)
        return cls(
            series,
            spec,
            offset=offset,
            calendar=calendar,
            stats=stats,
            missing_value=missing_value,
            input_features=resolve_features(input_features, names),
            target_features=resolve_features(target_features, names),
            fill_missing=fill_missing,
            feature_names=names,
            calendar_names=cal_names,
        )

    @classmethod
    def from_store(
        cls,
        store: Store,
        stats: Stats,
        spec: WindowSpec,
        *,
        time_range: tuple[int, int] | None = None,
        device: torch.device | str | None = None,
        input_features: Features = None,
        target_features: Features = None,
        time_of_day: bool = False,
        day_of_week: bool = False,
        fill_missing: bool = False,
    ) -> SeriesBatcher:
        """Read ``time_range`` (default: the whole series) of ``store`` once and standardise it.

        The block read from the store is standardised in place on the CPU, or copied once to
        the device and standardised there: host memory peaks at one copy of the range.
        """
        lo, hi = time_range if time_range is not None else (0, store.shape[0])
        lo, hi = int(lo), int(hi)
        if not 0 <= lo < hi <= store.shape[0]:
            raise SpecError(f"time range [{lo}, {hi}) is empty or outside [0, {store.shape[0]})")
        block = read_range(store, lo, hi)
        return cls.from_array(
            block,
            store.time[lo:hi],
            stats,
            spec,
            offset=lo,
            missing_value=store.missing_value,
            device=device,
            feature_names=store.feature_names,
            input_features=input_features,
            target_features=target_features,
            time_of_day=time_of_day,
            day_of_week=day_of_week,
            fill_missing=fill_missing,
            copy=False,
        )

    # -- properties -----------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Where the series lives and batches are built."""
        return self.series.device

    @property
    def time_range(self) -> tuple[int, int]:
        """Global half-open time range held."""
        return self.offset, self.offset + int(self.series.shape[0])

    @property
    def input_names(self) -> list[str]:
        """Names of the channels of ``x`` (data features, then calendar features)."""
        return [self.feature_names[i] for i in self.input_features] + self.calendar_names

    @property
    def target_names(self) -> list[str]:
        """Names of the channels of ``y``."""
        return [self.feature_names[i] for i in self.target_features]

    @property
    def n_input_features(self) -> int:
        """``F_in``: channels of ``x``."""
        return len(self.input_names)

    @property
    def n_target_features(self) -> int:
        """``F_out``: channels of ``y``."""
        return len(self.target_features)

    @property
    def nbytes(self) -> int:
        """Bytes held by the series and calendar table."""
        cal = 0 if self.calendar is None else self.calendar.numel() * 4
        return self.series.numel() * self.series.element_size() + cal

    # -- batches --------------------------------------------------------------------------------

    def _checked(self, local: np.ndarray) -> np.ndarray:
        if local.size and (local.min() < 0 or local.max() + self.spec.span > self.series.shape[0]):
            lo, hi = self.time_range
            raise SpecError(
                f"starts {int(local.min()) + self.offset}..{int(local.max()) + self.offset} "
                f"read outside the held time range [{lo}, {hi})"
            )
        return local

    def _local_starts(self, starts: Any) -> torch.Tensor:
        """Starts relative to ``series[0]``, on the device (NumPy/list starts bounds-checked)."""
        if isinstance(starts, torch.Tensor):
            return starts.to(device=self.device, dtype=torch.long) - self.offset
        local = np.asarray(starts, dtype=np.int64).reshape(-1) - self.offset
        return torch.from_numpy(self._checked(local)).to(self.device)

    @staticmethod
    def _gather(
        local: torch.Tensor, ar: torch.Tensor, source: tuple[torch.Tensor, torch.Tensor | None]
    ) -> torch.Tensor:
        series, subset = source
        idx = (local[:, None] + ar).reshape(-1)
        out = series.index_select(0, idx)
        out = out.view(local.shape[0], ar.shape[0], *series.shape[1:])
        if subset is not None:
            out = out.index_select(3, subset)
        return out

    def _gather_device(self, starts: Any) -> tuple[torch.Tensor, torch.Tensor]:
        local = self._local_starts(starts)
        x = self._gather(local, self._ar_x, self._x_source)
        y = self._gather(local, self._ar_y, self._y_source)
        if self.calendar is not None:
            # write both parts into one buffer: much faster than torch.cat on the last dim
            b, t, n, f = x.shape
            k = self.calendar.shape[1]
            idx = (local[:, None] + self._ar_x).reshape(-1)
            out = torch.empty((b, t, n, f + k), dtype=x.dtype, device=x.device)
            out[..., :f] = x
            out[..., f:] = self.calendar.index_select(0, idx).view(b, t, 1, k)
            x = out
        return x, y

    @staticmethod
    def _take(
        local: np.ndarray, ar: np.ndarray, source: tuple[torch.Tensor, torch.Tensor | None]
    ) -> np.ndarray:
        series, subset = source
        # fancy indexing, not np.take: np.take would first copy a non-contiguous (narrowed) view
        out = series.numpy()[(local[:, None] + ar).reshape(-1)]
        if subset is not None:
            out = out[:, :, subset.numpy()]
        return out

    def _gather_host(self, starts: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The CPU gathers, done with NumPy on views of the series (same bytes as
        :meth:`_gather_device`, fewer dispatch layers per batch)."""
        if isinstance(starts, torch.Tensor):
            starts = starts.cpu().numpy()
        local = self._checked(np.asarray(starts, dtype=np.int64).reshape(-1) - self.offset)
        b, (t_in, t_out) = local.size, (self.spec.input_steps, self.spec.horizon)
        x = self._take(local, self._np_ar_x, self._x_source)
        y = self._take(local, self._np_ar_y, self._y_source)
        if self.calendar is not None:
            n, f = x.shape[1:]
            k = self.calendar.shape[1]
            out = np.empty((b * t_in, n, f + k), dtype=x.dtype)
            out[:, :, :f] = x
            cal = self.calendar.numpy()
            out[:, :, f:] = cal[(local[:, None] + self._np_ar_x).reshape(-1)][:, None, :]
            x = out
        x = torch.from_numpy(x.reshape(b, t_in, *x.shape[1:]))
        y = torch.from_numpy(y.reshape(b, t_out, *y.shape[1:]))
        return x, y

    def _is_missing(self, values: torch.Tensor, sentinel: torch.Tensor) -> torch.Tensor:
        if self.missing_value == "zero":
            return values == sentinel
        return torch.isnan(values)

    def _batch(
        self, starts: Any, with_mask: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        gather = self._gather_host if self.device.type == "cpu" else self._gather_device
        x, y = gather(starts)
        mask = self._is_missing(y, self._sent_y) if with_mask or self.fill_missing else None
        if self.fill_missing:  # x and y are fresh buffers: fill the data channels in place
            data = x[..., : len(self.input_features)]
            data.masked_fill_(self._is_missing(data, self._sent_x), 0.0)
            y.masked_fill_(mask, 0.0)
        return x, y, mask

    def batch(self, starts: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Build one batch from global start indices.

        Parameters
        ----------
        starts : array-like or torch.Tensor
            ``(b,)`` global starts (NumPy/list starts are bounds-checked; device tensors are
            trusted, to avoid a device synchronisation).

        Returns
        -------
        x : torch.Tensor
            ``(b, input_steps, n, F_in)``.
        y : torch.Tensor
            ``(b, horizon, n, F_out)``.
        """
        x, y, _ = self._batch(starts, with_mask=False)
        return x, y

    def batch_masked(self, starts: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Like :meth:`batch`, plus the boolean ``(b, horizon, n, F_out)`` mask of targets that
        were missing in the raw data (taken before ``fill_missing`` is applied)."""
        return self._batch(starts, with_mask=True)  # type: ignore[return-value]

    def missing(self, y: torch.Tensor) -> torch.Tensor:
        """Boolean mask of missing readings in an unfilled target batch ``y``."""
        return self._is_missing(y, self._sent_y)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """De-standardise target-shaped values (``... n F_out`` or ``... F_out``) to raw units."""
        mean, std = self._mean_y.to(y.device), self._std_y.to(y.device)
        if mean.ndim == 2 and y.shape[-2:] != mean.shape:
            raise SpecError("per-node statistics need y shaped (..., n, F_out)")
        return y * std + mean


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
        Items are ``(x, y, mask)`` instead of ``(x, y)``.
    """

    def __init__(self, batcher: SeriesBatcher, starts: np.ndarray, *, with_mask: bool = False):
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
    time_of_day: bool = False,
    day_of_week: bool = False,
    fill_missing: bool = False,
    with_mask: bool = False,
    cross_splits: bool = False,
    exclude_gaps: bool = False,
) -> Loaders:
    """Plan, compute (or reuse) train statistics, load once, and build the three loaders.

    Only the training loader is shuffled. Parameters are those of :func:`make_plan`,
    :func:`stzarr.stats.compute_stats`, :meth:`SeriesBatcher.from_store` and
    :func:`batch_loader`.
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
    batcher = SeriesBatcher.from_store(
        store,
        stats,
        spec,
        device=device,
        input_features=input_features,
        target_features=target_features,
        time_of_day=time_of_day,
        day_of_week=day_of_week,
        fill_missing=fill_missing,
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
