"""Index-batching: one standardised copy of a time range of the series, batches gathered from it.

:class:`SeriesBatcher` holds a single standardised float32 copy of a time range of the series,
``(t, n, f)``, on a device (CPU, or CUDA for GPU-index-batching: one host-to-device copy, then
standardisation and every gather happen on the device). A batch is built from global start
indices ``s``: ``x[i] = series[s_i - offset : s_i - offset + input_steps]`` and ``y[i]`` the
``horizon`` steps after it (no per-sample ``__getitem__`` and no collate). ``offset`` is the global
time index of ``series[0]``: the partitioned mode builds a batcher over its rank's range plus the
halo, the streaming loader one per block (:meth:`SeriesBatcher.from_array`).

It puts together parts with one job each: the :class:`~stzarr.data.scaler.Scaler` (standardise,
de-standardise, the value of a missing reading), the pooled buffers a batch lives in
(:mod:`stzarr.data.buffers`: holding a batch is always safe), and the gather that copies windows
into them (:mod:`stzarr.data.gather`). The mask of missing targets is recomputed from ``y`` by
exact comparison with the scaler's sentinel while the window is in cache; ``fill_missing=True``
replaces missing inputs and targets by 0 (the train mean) after the mask was taken.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from stzarr.data.buffers import BATCH_BUFFERS
from stzarr.data.calendar import time_feature_names, time_features
from stzarr.data.contract import Features, resolve_features
from stzarr.data.device import host_to_device
from stzarr.data.gather import WindowGather
from stzarr.data.scaler import Scaler, mask_missing, zero_where
from stzarr.errors import SpecError
from stzarr.plan.windows import WindowSpec
from stzarr.store.format import Store
from stzarr.store.stats import Stats


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
        Store convention, ``"zero"`` or ``"nan"`` (see :mod:`stzarr.data.scaler`).
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
        self.scaler = (
            Scaler.fit(stats, missing_value)
            if stats is not None
            else Scaler.identity(n_feature, missing_value)
        )
        self.target_scaler = self.scaler.select(self.target_features)
        self.gather = WindowGather(
            series,
            self.calendar,
            spec,
            self.input_features,
            self.target_features,
            with_input_mask=fill_missing,
        )
        sentinel = self.scaler.sentinel
        self._np_sent_x = np.ascontiguousarray(sentinel[..., self.input_features])
        self._np_sent_y = np.ascontiguousarray(sentinel[..., self.target_features])
        self._sent_x = torch.from_numpy(self._np_sent_x).to(series.device)
        self._sent_y = torch.from_numpy(self._np_sent_y).to(series.device)

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
        Scaler.fit(stats, missing_value).transform_(series)
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
        mask_missing(y, sent_y, self.missing_value, mask)
        if self.fill_missing:
            mask_missing(xd, sent_x, self.missing_value, x_mask)
            zero_where(y, mask)
            zero_where(xd, x_mask)

    def _batch(
        self, starts: Any, with_mask: bool, *, host: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Build a batch in pooled buffers; ``host`` picks NumPy copies (default: on the CPU)
        or torch ops (default on a device; the tests also run them on the CPU)."""
        host = self.gather.on_cpu if host is None else host
        local: np.ndarray | torch.Tensor
        if host:
            if isinstance(starts, torch.Tensor):
                starts = starts.cpu().numpy()
            local = self._checked(np.asarray(starts, dtype=np.int64).reshape(-1) - self.offset)
            b = local.size
        else:
            local = self._local_starts(starts)
            b = int(local.shape[0])
        tensors, arrays = BATCH_BUFFERS.take(self.series.device, self.gather.layout(b, with_mask))
        self.gather.fill(local, tensors, arrays, self._finish)
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
        ``x`` and ``y`` are views of a pooled buffer (:class:`~stzarr.data.buffers.BatchBuffers`):
        the buffer is reused only after nothing refers to it any more, so holding a batch is
        safe; a caller that wants to keep memory from returning to the pool simply keeps the
        tensors.
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
        mask_missing(y, self._sent_y.to(y.device), self.missing_value, out)
        return out

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """De-standardise target-shaped values (``... n F_out`` or ``... F_out``) to raw units."""
        return self.target_scaler.inverse(y)
