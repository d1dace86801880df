"""Index-batching: one standardised copy of the series, batches built by block copies.

Design
------
:class:`SeriesBatcher` holds a single standardised float32 copy of a time range of the series,
``(t, n, f)``, on a device (CPU, or CUDA for GPU-index-batching: one host-to-device copy, then
standardisation and every gather happen on the device). A batch is built from global start
indices ``s``: ``x[i] = series[s_i - offset : s_i - offset + input_steps]`` and ``y[i]`` the
``horizon`` steps after it (no per-sample ``__getitem__`` and no collate). ``offset`` is the global
time index of ``series[0]``: the partitioned mode builds a batcher over its rank's range plus the
halo, the streaming loader one per block (:meth:`SeriesBatcher.from_array`).

Batch building follows the memory layout: a window is one contiguous block of the ``(t, n, f)``
series, so it is copied as a block straight into its place in a preallocated batch buffer
(:class:`BatchBuffers`), calendar channels written next to it, and the missing-value mask taken
while the block is still in cache. On the CPU, wide windows (at least
:data:`PER_WINDOW_MIN_BYTES`) are copied one block per window with NumPy (memcpy speed); narrow
ones, where a Python call per window would cost more than the copy, with one ``np.take`` (or one
fancy-index gather) per tensor for the whole batch. On a device the same layout is read through a
windowed view of the series (``as_strided``: ``windows[s]`` is the block starting at ``s``) with
one ``index_select(..., out=...)`` per tensor, written straight into the (possibly strided) slice
of the batch buffer; the CPU can run that path too (tests compare the two byte for byte).

Batch buffers and ownership
---------------------------
The tensors of a batch are views of a pooled buffer (:data:`BATCH_BUFFERS`, a few per device).
A buffer is handed out again only when no tensor anywhere in the process still refers to its
memory (the storage's reference count: a batch, any view of it, a NumPy array over it, or autograd
saving it for backward all keep it busy), and never once it was moved to shared memory (a
``DataLoader`` worker sending it to the main process). Holding a batch is therefore always safe;
when every pooled buffer is held (``list(loader)``), the batch gets a fresh buffer of its own.

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
recomputed from ``y`` by exact comparison (:meth:`SeriesBatcher.missing`), written into a
pooled boolean buffer: no float temporary. Caveat: a valid raw
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

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from stzarr.data.calendar import time_feature_names, time_features
from stzarr.data.device import host_to_device
from stzarr.data.scaler import missing_sentinel, standardise_
from stzarr.errors import SpecError
from stzarr.plan.windows import WindowPlan, WindowSpec, make_plan
from stzarr.store.format import Store, open_store
from stzarr.store.stats import Stats, compute_stats

Features = Sequence[int | str] | None


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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


PER_WINDOW_MIN_BYTES = 64 * 1024
"""Input windows of at least this many bytes are copied one block per window on the CPU; smaller
ones with one gather per tensor for the whole batch (benchmarks/loader.py measures both)."""

_ALIGN = 64

Layout = tuple[tuple[tuple[int, ...], torch.dtype], ...]


def _use_count(t: torch.Tensor) -> int:
    """Strong references to ``t``'s storage (every tensor or view on it, NumPy arrays included)."""
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


class _Slot:
    """One pooled buffer and the views last carved from it."""

    def __init__(self, flat: torch.Tensor) -> None:
        self.flat = flat
        self.layout: Layout | None = None
        self.views: tuple[torch.Tensor, ...] = ()
        self.arrays: tuple[np.ndarray, ...] = ()
        self.idle = 0  # storage reference count when only the pool holds it

    def carve(self, layout: Layout) -> None:
        """(Re)cut the tensors of ``layout`` from the buffer, 64-byte aligned."""
        self.views = self.arrays = ()
        views, at = [], 0
        for shape, dtype in layout:
            n = int(np.prod(shape)) * dtype.itemsize
            views.append(self.flat[at : at + n].view(dtype).view(shape))
            at += -(-n // _ALIGN) * _ALIGN
        self.views = tuple(views)
        if self.flat.device.type == "cpu":
            self.arrays = tuple(v.numpy() for v in views)
        self.layout = layout
        self.idle = _use_count(self.flat)


def _layout_bytes(layout: Layout) -> int:
    return sum(
        -(-int(np.prod(shape)) * dtype.itemsize // _ALIGN) * _ALIGN for shape, dtype in layout
    )


def _allocate(size: int, device: torch.device) -> torch.Tensor:
    """``size`` bytes on ``device``. On the CPU through NumPy, whose allocator asks the kernel for
    transparent huge pages (``madvise``) where torch's does not: filling a 100 MB batch buffer
    measured markedly faster with them (fewer TLB misses)."""
    if device.type == "cpu":
        return torch.from_numpy(np.empty(size, dtype=np.uint8))
    return torch.empty(size, dtype=torch.uint8, device=device)


class BatchBuffers:
    """A small pool of reusable batch buffers per device.

    :meth:`take` returns fresh tensor views of a pooled buffer that nothing else refers to (its
    storage's reference count is the pool's own), so a batch is never overwritten while anything
    still holds it or a view of it; buffers moved to shared memory (sent by a ``DataLoader``
    worker) leave the pool. When every pooled buffer is busy the caller gets a one-off buffer.

    Parameters
    ----------
    depth : int
        Buffers kept per device: 2 serves a loop that holds the previous batch while the next
        one is built, with the memory of two batches (as many as fresh allocations would hold).
    """

    def __init__(self, depth: int = 2) -> None:
        if depth < 1:
            raise SpecError(f"depth must be positive, got {depth}")
        self.depth = depth
        self._slots: dict[torch.device, list[_Slot]] = {}
        self._sizes: dict[Layout, int] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, int]:
        return {"depth": self.depth}

    def __setstate__(self, state: dict[str, int]) -> None:
        self.__init__(state["depth"])  # type: ignore[misc]

    def take(
        self, device: torch.device, layout: Layout
    ) -> tuple[tuple[torch.Tensor, ...], tuple[np.ndarray, ...]]:
        """Tensors of the shapes and dtypes in ``layout`` on ``device`` (contents undefined),
        and NumPy views of the same memory on the CPU (empty elsewhere), for filling them."""
        with self._lock:
            slots = self._slots.setdefault(device, [])
            if device.type == "cpu":  # shared with another process: never write it again
                slots[:] = [s for s in slots if not s.flat.is_shared()]
            slot = next((s for s in slots if _use_count(s.flat) == s.idle), None)
            size = self._sizes.get(layout)
            if size is None:
                size = self._sizes[layout] = _layout_bytes(layout)
            if slot is None:
                slot = _Slot(_allocate(size, device))
                if len(slots) < self.depth:
                    slots.append(slot)
            elif slot.flat.numel() < size:
                slot.views = slot.arrays = ()
                slot.flat = _allocate(size, device)
                slot.layout = None
            if slot.layout != layout:
                slot.carve(layout)
            return tuple(v.detach() for v in slot.views), slot.arrays


BATCH_BUFFERS = BatchBuffers()
"""The process-wide pool every :class:`SeriesBatcher` builds its batches in."""


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
        # windowed views (torch path): windows[s] is the block of steps s .. s + steps - 1
        self._x_windows = self._windows(self._x_source[0], spec.input_steps)
        self._y_windows = self._windows(self._y_source[0], spec.horizon)
        self._cal_windows = None
        if self.calendar is not None:
            t, k = self.calendar.shape
            self._cal_windows = self.calendar.contiguous().as_strided(
                (max(t - spec.input_steps + 1, 0), spec.input_steps, series.shape[1], k),
                (k, k, 0, 1),
            )
        if device.type == "cpu":  # NumPy views of the same memory (host path)
            self._np_x = self._np_source(self._x_source)
            self._np_y = self._np_source(self._y_source)
            self._np_calendar = None if self.calendar is None else self.calendar.numpy()
        window_bytes = spec.input_steps * series.shape[1] * len(self.input_features) * 4
        self._per_window = window_bytes >= PER_WINDOW_MIN_BYTES
        self._on_cpu = device.type == "cpu"
        # narrow windows, data channels not contiguous in x: gather into a pooled scratch first
        self._x_scratch = (
            self._on_cpu
            and not self._per_window
            and self.calendar is not None
            and self._np_x[1] is None
            and self._np_x[0].flags.c_contiguous
        )
        self._layouts: dict[tuple[int, bool], Layout] = {}
        self._np_ar_x = np.arange(spec.input_steps, dtype=np.int64)
        self._np_ar_y = np.arange(spec.input_steps, spec.span, dtype=np.int64)
        if stats is not None:
            sentinel = missing_sentinel(stats, missing_value)
            mean32, std32 = stats.float32()
        else:
            sentinel = np.full(n_feature, 0.0 if missing_value == "zero" else np.nan, np.float32)
            mean32 = np.zeros(n_feature, np.float32)
            std32 = np.ones(n_feature, np.float32)
        self._np_sent_x = np.ascontiguousarray(sentinel[..., self.input_features])
        self._np_sent_y = np.ascontiguousarray(sentinel[..., self.target_features])
        self._sent_x = torch.from_numpy(self._np_sent_x).to(device)
        self._sent_y = torch.from_numpy(self._np_sent_y).to(device)
        self._mean_y = torch.from_numpy(mean32[..., self.target_features]).to(device)
        self._std_y = torch.from_numpy(std32[..., self.target_features]).to(device)

    @staticmethod
    def _source(series: torch.Tensor, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What to copy from: a view when the features are a contiguous range (one pass),
        else the whole series plus the feature indices to select afterwards."""
        if idx == list(range(idx[0], idx[0] + len(idx))):
            return series.narrow(2, idx[0], len(idx)), None
        return series, torch.tensor(idx, dtype=torch.long, device=series.device)

    @staticmethod
    def _np_source(
        source: tuple[torch.Tensor, torch.Tensor | None],
    ) -> tuple[np.ndarray, np.ndarray | None]:
        view, subset = source
        return view.numpy(), None if subset is None else subset.numpy()

    @staticmethod
    def _windows(source: torch.Tensor, steps: int) -> torch.Tensor:
        """``(t - steps + 1, steps, n, f)`` view: row ``s`` is the window starting at step ``s``."""
        t = source.shape[0]
        return source.as_strided(
            (max(t - steps + 1, 0), steps, *source.shape[1:]),
            (source.stride(0), *source.stride()),
        )

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
        Other parameters as :class:`SeriesBatcher` and :func:`stzarr.data.calendar.time_features`.
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
        block = store.read(lo, hi)
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

    def _layout(self, b: int, with_mask: bool) -> Layout:
        """Shapes and dtypes of a batch's buffers: x, y, then the target mask (when asked for
        or needed to fill), the input mask (to fill) and the input data scratch (see
        :meth:`_split`)."""
        key = (b, with_mask)
        if key not in self._layouts:
            self._layouts[key] = self._make_layout(b, with_mask)
        return self._layouts[key]

    def _make_layout(self, b: int, with_mask: bool) -> Layout:
        t_in, t_out = self.spec.input_steps, self.spec.horizon
        n = int(self.series.shape[1])
        y_shape = (b, t_out, n, len(self.target_features))
        layout = [((b, t_in, n, self.n_input_features), torch.float32), (y_shape, torch.float32)]
        if with_mask or self.fill_missing:
            layout.append((y_shape, torch.bool))
        x_data = (b, t_in, n, len(self.input_features))
        if self.fill_missing:
            layout.append((x_data, torch.bool))
        if self._x_scratch:
            layout.append((x_data, torch.float32))
        return tuple(layout)

    def _split(self, out: Sequence[Any]) -> tuple[Any, Any, Sequence[Any], Any]:
        """``(x, y, masks, scratch)`` from the buffers of :meth:`_layout` (scratch or None)."""
        if self._x_scratch:
            return out[0], out[1], out[2:-1], out[-1]
        return out[0], out[1], out[2:], None

    def _fill_host(self, local: np.ndarray, out: Sequence[np.ndarray]) -> None:
        """Build the batch with NumPy into ``out`` (x, y, [mask, [input mask]]): one block copy
        per window for wide windows, one gather per tensor for the batch for narrow ones."""
        x, y, masks, scratch = self._split(out)
        f, t_in, span = len(self.input_features), self.spec.input_steps, self.spec.span
        xd, cal = x[..., :f], self._np_calendar
        if self._per_window:
            (xv, x_sub), (yv, y_sub) = self._np_x, self._np_y
            one_cal = cal is None or cal.shape[1] == 1
            if x_sub is None and y_sub is None and not masks and one_cal:  # lean common case
                steps = x.reshape(local.size, t_in, -1)  # whole steps, for _put_calendar's fill
                for s, x_i, xd_i, y_i in zip(local.tolist(), steps, xd, y, strict=True):
                    if cal is not None:
                        np.copyto(x_i, cal[s : s + t_in])  # as _put_calendar, inlined
                    np.copyto(xd_i, xv[s : s + t_in])
                    np.copyto(y_i, yv[s + t_in : s + span])
                return
            for i, s in enumerate(local.tolist()):
                if cal is not None:
                    _put_calendar(x[i], cal[s : s + t_in], f)
                _copy_block(xd[i], self._np_x, s, s + t_in)
                _copy_block(y[i], self._np_y, s + t_in, s + span)
                self._finish(xd[i], y[i], *(m[i] for m in masks))
            return
        rows = (local[:, None] + self._np_ar_x).reshape(-1)
        if cal is not None:
            _put_calendar(x, cal[rows], f)
        _gather_rows(xd, self._np_x, rows, scratch)
        _gather_rows(y, self._np_y, (local[:, None] + self._np_ar_y).reshape(-1))
        self._finish(xd, y, *masks)

    def _fill_torch(self, local: torch.Tensor, out: Sequence[torch.Tensor]) -> None:
        """Build the batch with torch ops on the series' device into ``out``: one
        ``index_select`` over the windowed views per tensor, written in place."""
        x, y, masks, _ = self._split(out)
        f = len(self.input_features)
        xd = x[..., :f]
        _select_windows(xd, self._x_windows, local, self._x_source[1])
        if self._cal_windows is not None:
            torch.index_select(self._cal_windows, 0, local, out=x[..., f:])
        _select_windows(y, self._y_windows, local + self.spec.input_steps, self._y_source[1])
        self._finish(xd, y, *masks)

    def _finish(self, xd: Any, y: Any, mask: Any = None, x_mask: Any = None) -> None:
        """Missing-target mask into ``mask``; with ``fill_missing`` zero the missing readings
        of ``y`` and of the input data channels ``xd`` (NumPy arrays or tensors, any slice of
        a batch: one window on the per-window path, so the block is still in cache)."""
        if mask is None:
            return
        sent_y, sent_x = (
            (self._np_sent_y, self._np_sent_x)
            if isinstance(y, np.ndarray)
            else (self._sent_y, self._sent_x)
        )
        _missing_into(y, sent_y, self.missing_value, mask)
        if self.fill_missing:
            _missing_into(xd, sent_x, self.missing_value, x_mask)
            _zero_where(y, mask)
            _zero_where(xd, x_mask)

    def _batch(
        self, starts: Any, with_mask: bool, *, host: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Build a batch in pooled buffers; ``host`` picks the NumPy path (default: on the CPU)
        or the torch path (default on a device; the tests also run it on the CPU)."""
        host = self._on_cpu if host is None else host
        if host:
            if isinstance(starts, torch.Tensor):
                starts = starts.cpu().numpy()
            local = self._checked(np.asarray(starts, dtype=np.int64).reshape(-1) - self.offset)
            b = local.size
        else:
            local_t = self._local_starts(starts)
            b = int(local_t.shape[0])
        tensors, arrays = BATCH_BUFFERS.take(self.series.device, self._layout(b, with_mask))
        if host:
            self._fill_host(local, arrays)
        else:
            self._fill_torch(local_t, tensors)
        x, y = tensors[:2]
        return x, y, tensors[2] if with_mask else None

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

        Notes
        -----
        ``x`` and ``y`` are views of a pooled buffer (:class:`BatchBuffers`): the buffer is
        reused only after nothing refers to it any more, so holding a batch is safe; a caller
        that wants to keep memory from returning to the pool simply keeps the tensors.
        """
        x, y, _ = self._batch(starts, with_mask=False)
        return x, y

    def batch_masked(self, starts: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Like :meth:`batch`, plus the boolean ``(b, horizon, n, F_out)`` mask of targets that
        were missing in the raw data (taken before ``fill_missing`` is applied)."""
        return self._batch(starts, with_mask=True)  # type: ignore[return-value]

    def missing(self, y: torch.Tensor) -> torch.Tensor:
        """Boolean mask of missing readings in an unfilled target batch ``y``."""
        out = torch.empty(y.shape, dtype=torch.bool, device=y.device)
        _missing_into(y, self._sent_y.to(y.device), self.missing_value, out)
        return out

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """De-standardise target-shaped values (``... n F_out`` or ``... F_out``) to raw units."""
        mean, std = self._mean_y.to(y.device), self._std_y.to(y.device)
        if mean.ndim == 2 and y.shape[-2:] != mean.shape:
            raise SpecError("per-node statistics need y shaped (..., n, F_out)")
        return y * std + mean


def _copy_block(dst: np.ndarray, source: tuple[np.ndarray, np.ndarray | None], a: int, b: int):
    """``dst[...] = series[a:b]`` (features selected): one block copy."""
    view, subset = source
    np.copyto(dst, view[a:b] if subset is None else view[a:b][..., subset])


def _put_calendar(x: np.ndarray, values: np.ndarray, f: int) -> None:
    """Write the calendar channels ``values`` (one row per step of ``x``, ``(steps, k)``) after
    the ``f`` data channels of ``x`` (``... n f+k``), broadcast over nodes. Called before the data
    are copied in: with one calendar channel it fills whole steps, contiguous writes measured
    faster than the strided ones, and the data channels are then written over it."""
    steps = values.shape[0]
    if values.shape[1] == 1:
        np.copyto(x.reshape(steps, -1), values)
    else:
        np.copyto(x.reshape(steps, x.shape[-2], -1)[..., f:], values[:, None, :])


def _gather_rows(
    dst: np.ndarray,
    source: tuple[np.ndarray, np.ndarray | None],
    rows: np.ndarray,
    scratch: np.ndarray | None = None,
) -> None:
    """``dst`` (b t n f) ``= series[rows]`` (features selected) in one gather: ``np.take``
    (bounds already checked) straight into ``dst`` when both are contiguous, else into
    ``scratch`` (same shape, contiguous) and one copy, else one fancy index and one copy."""
    view, subset = source
    if subset is None and view.flags.c_contiguous:
        into = dst if dst.flags.c_contiguous else scratch
        if into is not None:
            np.take(view, rows, axis=0, out=into.reshape(-1, *into.shape[2:]), mode="clip")
            if into is not dst:
                np.copyto(dst, into)
            return
    got = view[rows] if subset is None else view[rows][..., subset]
    np.copyto(dst, got.reshape(dst.shape))


def _select_windows(
    dst: torch.Tensor, windows: torch.Tensor, local: torch.Tensor, subset: torch.Tensor | None
) -> None:
    """``dst[i] = windows[local[i]]`` (features selected) with one ``index_select``."""
    if subset is None:
        torch.index_select(windows, 0, local, out=dst)
    else:
        dst.copy_(windows.index_select(0, local).index_select(3, subset))


def _missing_into(values: Any, sentinel: Any, missing_value: str, out: Any) -> None:
    """``out = values is missing`` without a temporary: equal to the sentinel under ``"zero"``,
    NaN (not equal to itself) under ``"nan"``; NumPy arrays or tensors."""
    if isinstance(values, np.ndarray):
        if missing_value == "zero":
            np.equal(values, sentinel, out=out)
        else:
            np.not_equal(values, values, out=out)
    elif missing_value == "zero":
        torch.eq(values, sentinel, out=out)
    else:
        torch.ne(values, values, out=out)


def _zero_where(values: Any, mask: Any) -> None:
    if isinstance(values, np.ndarray):
        np.copyto(values, 0.0, where=mask)
    else:
        values.masked_fill_(mask, 0.0)


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
    :func:`stzarr.store.stats.compute_stats`, :meth:`SeriesBatcher.from_store` and
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
