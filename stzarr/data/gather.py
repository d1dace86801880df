"""The gather: fill a batch's buffers with the windows starting at given steps of a series.

A window is one contiguous block of the ``(t, n, f)`` series, so it is copied as a block straight
into its place in a preallocated batch buffer (:mod:`stzarr.data.buffers`), calendar channels
written next to it, and the missing-value mask taken while the block is still in cache.
:meth:`WindowGather.fill` is the one entry point for host and device batches; what it copies with
depends on where the series lives:

* on the CPU, wide windows (at least :data:`PER_WINDOW_MIN_BYTES`) are copied one block per window
  with NumPy (memcpy speed); narrow ones, where a Python call per window would cost more than the
  copy, with one ``np.take`` (or one fancy-index gather) per tensor for the whole batch;
* on a device the same layout is read through a windowed view of the series (``as_strided``:
  ``windows[s]`` is the block starting at ``s``) with one ``index_select(..., out=...)`` per
  tensor, written straight into the (possibly strided) slice of the batch buffer. The CPU can run
  this path too (``host=False``; the tests compare the two byte for byte).

Calendar features (time-of-day, day-of-week) are not stored per node: a ``(t, k)`` table computed
from the time coordinate is gathered with the same indices and broadcast over nodes, appended
after the data features (as PGT/DCRNN do).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from stzarr.data.buffers import Layout
from stzarr.plan.windows import WindowSpec

PER_WINDOW_MIN_BYTES = 64 * 1024
"""Input windows of at least this many bytes are copied one block per window on the CPU; smaller
ones with one gather per tensor for the whole batch (benchmarks/loader.py measures both)."""

Finish = Callable[..., None]
"""Called with ``(x data channels, y, *masks)`` of a filled window or batch (masking, fill)."""


def _source(series: torch.Tensor, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What to copy from: a view when the features are a contiguous range (one pass), else the
    whole series plus the feature indices to select afterwards."""
    if idx == list(range(idx[0], idx[0] + len(idx))):
        return series.narrow(2, idx[0], len(idx)), None
    return series, torch.tensor(idx, dtype=torch.long, device=series.device)


def _np_source(
    source: tuple[torch.Tensor, torch.Tensor | None],
) -> tuple[np.ndarray, np.ndarray | None]:
    view, subset = source
    return view.numpy(), None if subset is None else subset.numpy()


def _windows(source: torch.Tensor, steps: int) -> torch.Tensor:
    """``(t - steps + 1, steps, n, f)`` view: row ``s`` is the window starting at step ``s``."""
    t = source.shape[0]
    return source.as_strided(
        (max(t - steps + 1, 0), steps, *source.shape[1:]),
        (source.stride(0), *source.stride()),
    )


class WindowGather:
    """Copies the input and target windows of a standardised series into batch buffers.

    Parameters
    ----------
    series : torch.Tensor
        float32 ``(t, n, f)``; its device decides the default path of :meth:`fill`.
    calendar : torch.Tensor or None
        float32 ``(t, k)`` calendar channels aligned with ``series`` (appended to ``x``).
    spec : WindowSpec
    input_features, target_features : list of int
        Data features copied into ``x`` and ``y``.
    with_input_mask : bool
        The layout holds an input mask (the caller fills missing inputs).
    """

    def __init__(
        self,
        series: torch.Tensor,
        calendar: torch.Tensor | None,
        spec: WindowSpec,
        input_features: list[int],
        target_features: list[int],
        *,
        with_input_mask: bool,
    ) -> None:
        self.spec = spec
        self.n_node = int(series.shape[1])
        self.n_input = len(input_features)
        self.n_target = len(target_features)
        self.n_calendar = 0 if calendar is None else int(calendar.shape[1])
        self.with_input_mask = with_input_mask
        self.on_cpu = series.device.type == "cpu"
        self._x_source = _source(series, input_features)
        self._y_source = _source(series, target_features)
        # windowed views (torch path): windows[s] is the block of steps s .. s + steps - 1
        self._x_windows = _windows(self._x_source[0], spec.input_steps)
        self._y_windows = _windows(self._y_source[0], spec.horizon)
        self._cal_windows = None
        if calendar is not None:
            t, k = calendar.shape
            self._cal_windows = calendar.contiguous().as_strided(
                (max(t - spec.input_steps + 1, 0), spec.input_steps, self.n_node, k),
                (k, k, 0, 1),
            )
        self._np_calendar = None
        if self.on_cpu:  # NumPy views of the same memory (host path)
            self._np_x = _np_source(self._x_source)
            self._np_y = _np_source(self._y_source)
            self._np_calendar = None if calendar is None else calendar.numpy()
        window_bytes = spec.input_steps * self.n_node * self.n_input * 4
        self._per_window = window_bytes >= PER_WINDOW_MIN_BYTES
        # narrow windows, data channels not contiguous in x: gather into a pooled scratch first
        self._x_scratch = (
            self.on_cpu
            and not self._per_window
            and calendar is not None
            and self._np_x[1] is None
            and self._np_x[0].flags.c_contiguous
        )
        self._layouts: dict[tuple[int, bool], Layout] = {}
        self._np_ar_x = np.arange(spec.input_steps, dtype=np.int64)
        self._np_ar_y = np.arange(spec.input_steps, spec.span, dtype=np.int64)

    def layout(self, b: int, with_mask: bool) -> Layout:
        """Shapes and dtypes of a batch's buffers: x, y, then the target mask (when asked for
        or needed to fill), the input mask (to fill) and the input data scratch."""
        key = (b, with_mask)
        if key not in self._layouts:
            self._layouts[key] = self._make_layout(b, with_mask)
        return self._layouts[key]

    def _make_layout(self, b: int, with_mask: bool) -> Layout:
        t_in, t_out, n = self.spec.input_steps, self.spec.horizon, self.n_node
        y_shape = (b, t_out, n, self.n_target)
        x_shape = (b, t_in, n, self.n_input + self.n_calendar)
        layout = [(x_shape, torch.float32), (y_shape, torch.float32)]
        if with_mask or self.with_input_mask:
            layout.append((y_shape, torch.bool))
        x_data = (b, t_in, n, self.n_input)
        if self.with_input_mask:
            layout.append((x_data, torch.bool))
        if self._x_scratch:
            layout.append((x_data, torch.float32))
        return tuple(layout)

    def _split(self, out: Sequence[Any]) -> tuple[Any, Any, Sequence[Any], Any]:
        """``(x, y, masks, scratch)`` from the buffers of :meth:`layout` (scratch or None)."""
        if self._x_scratch:
            return out[0], out[1], out[2:-1], out[-1]
        return out[0], out[1], out[2:], None

    def fill(
        self,
        local: np.ndarray | torch.Tensor,
        tensors: Sequence[torch.Tensor],
        arrays: Sequence[np.ndarray],
        finish: Finish,
    ) -> None:
        """Build the batch of the windows starting at ``local`` (steps of the series) into the
        buffers of :meth:`layout`: NumPy starts fill the host views ``arrays``, tensor starts
        fill ``tensors`` with torch ops. ``finish(x_data, y, *masks)`` runs on every filled part
        (one window on the per-window path, while its block is still in cache)."""
        if isinstance(local, np.ndarray):
            self._fill_host(local, arrays, finish)
        else:
            self._fill_torch(local, tensors, finish)

    def _fill_host(self, local: np.ndarray, out: Sequence[np.ndarray], finish: Finish) -> None:
        x, y, masks, scratch = self._split(out)
        f, t_in, span = self.n_input, self.spec.input_steps, self.spec.span
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
                finish(xd[i], y[i], *(m[i] for m in masks))
            return
        rows = (local[:, None] + self._np_ar_x).reshape(-1)
        if cal is not None:
            _put_calendar(x, cal[rows], f)
        _gather_rows(xd, self._np_x, rows, scratch)
        _gather_rows(y, self._np_y, (local[:, None] + self._np_ar_y).reshape(-1))
        finish(xd, y, *masks)

    def _fill_torch(self, local: torch.Tensor, out: Sequence[torch.Tensor], finish: Finish) -> None:
        x, y, masks, _ = self._split(out)
        f = self.n_input
        xd = x[..., :f]
        _select_windows(xd, self._x_windows, local, self._x_source[1])
        if self._cal_windows is not None:
            torch.index_select(self._cal_windows, 0, local, out=x[..., f:])
        _select_windows(y, self._y_windows, local + self.spec.input_steps, self._y_source[1])
        finish(xd, y, *masks)


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
