"""Masked forecasting metrics on de-standardised values, and the historical-average baseline.

Targets that were missing (``mask`` False) are excluded from every metric, as in DCRNN's
``masked_mae``: the loss is ``sum(|pred - y| * mask) / sum(mask)``. Reported metrics are MAE,
RMSE and MAPE (in percent; targets with ``|y| < 1e-6`` are left out of MAPE only), overall and at
chosen horizon steps (3/6/12 = 15/30/60 minutes at a 5-minute sampling interval).

:class:`MaskedMetrics` accumulates float64 sums per horizon step over many batches (and, with
:meth:`MaskedMetrics.all_reduce`, over DDP ranks), so the result is the exact mean over every
valid target, not a mean of batch means.

The historical-average baseline predicts each target step with the train-split mean of its node
and feature at the same time-of-day and day-of-week slot (falling back to the node's train mean
when a slot has no valid reading); :func:`evaluate_historical_average` scores it on a split's
windows with the same masked metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from stzarr.data.calendar import DAY_S
from stzarr.plan.windows import WindowPlan
from stzarr.store.format import Store, valid_mask
from stzarr.training.config import DEFAULT_HORIZONS

MAPE_EPS = 1e-6
_SUMS = ("abs", "sq", "ape", "count", "ape_count")


def masked_mae(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over valid targets (differentiable; the training loss).

    Parameters
    ----------
    pred, target : torch.Tensor
        De-standardised forecast and target, same shape.
    mask : torch.Tensor
        bool, True where the target is valid. Entries where it is False may hold anything
        (including NaN).

    Returns
    -------
    torch.Tensor
        Scalar; 0 when no target is valid.
    """
    # fill first: a NaN target in the unselected branch of torch.where would poison the gradient
    err = (pred - target.masked_fill(~mask, 0.0)).abs() * mask
    return err.sum() / mask.sum().clamp(min=1)


class MaskedMetrics:
    """Accumulate masked MAE, RMSE and MAPE per horizon step.

    Parameters
    ----------
    horizon : int
        Steps per forecast (axis 1 of the ``(b, horizon, n, f)`` tensors).
    """

    def __init__(self, horizon: int) -> None:
        self.horizon = int(horizon)
        self.sums = torch.zeros(len(_SUMS), self.horizon, dtype=torch.float64)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        """Add a batch of de-standardised ``(b, horizon, n, f)`` forecasts and targets."""
        if pred.shape != target.shape or pred.shape != mask.shape or pred.dim() != 4:
            raise ValueError(
                f"pred {tuple(pred.shape)}, target {tuple(target.shape)} and mask "
                f"{tuple(mask.shape)} must share one (b, horizon, n, f) shape"
            )
        p, y = pred.double(), target.double()
        m = mask.bool()
        zero = torch.zeros((), dtype=torch.float64, device=p.device)
        err = torch.where(m, p - y, zero)
        m_ape = m & (y.abs() >= MAPE_EPS)
        ape = torch.where(m_ape, err.abs() / torch.where(m_ape, y.abs(), 1.0), zero)
        dims = (0, 2, 3)
        batch = torch.stack(
            [
                err.abs().sum(dims),
                (err * err).sum(dims),
                ape.sum(dims),
                m.sum(dims).double(),
                m_ape.sum(dims).double(),
            ]
        )
        if self.sums.device != batch.device:  # accumulate where the batches are: no host sync
            self.sums = self.sums.to(batch.device)
        self.sums += batch

    def add_step_sums(self, step: int, sums: Sequence[float]) -> None:
        """Add precomputed sums (abs, sq, ape, count, ape_count) for 0-based horizon ``step``."""
        added = torch.as_tensor(np.asarray(sums, dtype=np.float64))
        self.sums[:, step] += added.to(self.sums.device)

    def all_reduce(self) -> None:
        """Sum the accumulators over all DDP ranks (no-op without an initialised process group)."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        device = (
            torch.device("cuda", torch.cuda.current_device())
            if dist.get_backend() == "nccl"
            else torch.device("cpu")
        )
        sums = self.sums.to(device)
        dist.all_reduce(sums)
        self.sums = sums.cpu()

    @staticmethod
    def _summary(s: torch.Tensor) -> dict[str, float]:
        abs_, sq, ape, count, ape_count = (float(v) for v in s)
        if count == 0:
            nan = float("nan")
            return {"mae": nan, "rmse": nan, "mape": nan, "count": 0}
        return {
            "mae": abs_ / count,
            "rmse": (sq / count) ** 0.5,
            "mape": 100.0 * ape / ape_count if ape_count else float("nan"),
            "count": int(count),
        }

    def result(self, horizons: Sequence[int] = DEFAULT_HORIZONS) -> dict[str, Any]:
        """Overall metrics plus ``horizons`` (1-based steps; those beyond ``horizon`` skipped).

        Returns
        -------
        dict
            ``{"mae", "rmse", "mape" (percent), "count", "horizons": {"3": {...}, ...}}``.
        """
        sums = self.sums.cpu()  # the one host sync of the accumulated batches
        out: dict[str, Any] = self._summary(sums.sum(dim=1))
        out["horizons"] = {
            str(h): self._summary(sums[:, h - 1]) for h in horizons if 1 <= h <= self.horizon
        }
        return out


@dataclass(frozen=True)
class HistoricalAverage:
    """Per-slot train means: slot = day-of-week x time-of-day step.

    Attributes
    ----------
    table : numpy.ndarray
        float64 ``(slots, n, f)`` mean of valid train readings per slot (node mean where empty).
    interval_s : int
        Sampling interval the time-of-day slots are cut at.
    steps_per_day : int
        Time-of-day slots per day (1 for daily or coarser series).
    """

    table: np.ndarray
    interval_s: int
    steps_per_day: int

    def slots(self, time: np.ndarray) -> np.ndarray:
        """Slot index of each datetime64 in ``time``."""
        t = np.asarray(time).astype("datetime64[s]")
        day = t.astype("datetime64[D]")
        seconds = (t - day).astype(np.int64)
        tod = np.minimum(seconds // self.interval_s, self.steps_per_day - 1)
        dow = (day.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        return dow * self.steps_per_day + tod

    def predict(self, time: np.ndarray) -> np.ndarray:
        """``(t, n, f)`` forecast for the steps in ``time``."""
        return self.table[self.slots(time)]


def _interval_s(store: Store) -> int:
    interval = store.attrs.get("sampling_interval_s")
    if interval:
        return int(interval)
    diffs = np.diff(store.time.astype("datetime64[s]").astype(np.int64))
    values, counts = np.unique(diffs, return_counts=True)
    return int(values[np.argmax(counts)]) if values.size else DAY_S


BLOCK_BYTES = 4 * 2**20
"""float64 bytes of one block of the historical average's passes (whole chunks, at least one):
each of its ~8 temporaries is one block."""


def _blocks(store: Store, lo: int, hi: int) -> Any:
    chunk_bytes = store.chunk_time * store.shape[1] * store.shape[2] * 8
    step = store.chunk_time * max(1, BLOCK_BYTES // max(1, chunk_bytes))
    for a in range(lo, hi, step):
        b = min(hi, a + step)
        yield a, b, store.read(a, b).astype(np.float64)


def fit_historical_average(store: Store, bounds: tuple[int, int]) -> HistoricalAverage:
    """Historical average of time steps ``[lo, hi)`` (normally the train split), read in blocks.

    Parameters
    ----------
    store : Store
    bounds : tuple of int
        Half-open time range to average over.
    """
    interval = _interval_s(store)
    steps_per_day = max(1, DAY_S // interval)
    _, n, f = store.shape
    n_slots = 7 * steps_per_day
    total = np.zeros((n_slots, n, f))
    count = np.zeros((n_slots, n, f))
    ha = HistoricalAverage(np.zeros((0, n, f)), interval, steps_per_day)
    time = store.time
    for a, b, block in _blocks(store, *bounds):
        valid = valid_mask(block, store.missing_value)
        slots = ha.slots(time[a:b])
        np.add.at(total, slots, np.where(valid, block, 0.0))
        np.add.at(count, slots, valid)
    node_mean = total.sum(axis=0) / np.maximum(count.sum(axis=0), 1)
    empty = count == 0
    # in place: the table and its counts are the only slot-sized arrays held
    np.divide(total, np.maximum(count, 1, out=count), out=total)
    np.copyto(total, np.broadcast_to(node_mean, total.shape), where=empty)
    return HistoricalAverage(total, interval, steps_per_day)


def evaluate_historical_average(
    store: Store,
    plan: WindowPlan,
    split: str = "test",
    *,
    model: HistoricalAverage | None = None,
    features: Sequence[int] | None = None,
    horizons: Sequence[int] = DEFAULT_HORIZONS,
) -> dict[str, Any]:
    """Score the historical average on every window of ``split`` with the masked metrics.

    Parameters
    ----------
    store : Store
    plan : WindowPlan
        Windows (the same plan the model is evaluated on).
    split : str
        Which split's windows to score.
    model : HistoricalAverage, optional
        Fitted baseline (default: fitted on the plan's train split).
    features : sequence of int, optional
        Target features (default: all).
    horizons : sequence of int
        Horizon steps to report.

    Returns
    -------
    dict
        As :meth:`MaskedMetrics.result`.
    """
    if model is None:
        model = fit_historical_average(store, plan.bounds["train"])
    starts = plan.starts[split]
    spec = plan.spec
    metrics = MaskedMetrics(spec.horizon)
    if starts.size == 0:
        return metrics.result(horizons)
    lo, hi = int(starts.min()) + spec.input_steps, int(starts.max()) + spec.span
    feats = slice(None) if features is None else np.asarray(features, dtype=np.int64)
    # per target step: error sums over nodes and features
    step_sums = np.zeros((len(_SUMS), hi - lo))
    time = store.time
    for a, b, block in _blocks(store, lo, hi):
        y = block[..., feats]
        pred = model.predict(time[a:b])[..., feats]
        valid = valid_mask(y, store.missing_value)
        err = np.where(valid, pred - y, 0.0)
        valid_ape = valid & (np.abs(y) >= MAPE_EPS)
        ape = np.where(valid_ape, np.abs(err) / np.where(valid_ape, np.abs(y), 1.0), 0.0)
        step_sums[:, a - lo : b - lo] = np.stack(
            [
                np.abs(err).sum((1, 2)),
                (err * err).sum((1, 2)),
                ape.sum((1, 2)),
                valid.sum((1, 2)),
                valid_ape.sum((1, 2)),
            ]
        )
    for h in range(spec.horizon):
        metrics.add_step_sums(h, step_sums[:, starts + spec.input_steps + h - lo].sum(axis=1))
    return metrics.result(horizons)
