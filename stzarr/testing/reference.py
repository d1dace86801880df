"""The standard, materialised preprocessing (Algorithm 1 of the background): an independent
oracle for tests and the memory benchmark.

Everything is rebuilt here with plain NumPy from the raw values of the store, sharing nothing
with the pipeline under test but the opened store's arrays (no window plan, statistics,
standardisation or calendar code of stzarr):

1. split the steps by fractions and list every split's window starts;
2. compute the train split's mean and standard deviation of the valid readings (float64);
3. add the calendar features as dense channels copied to every node;
4. slide a window over time, materialising ``x`` and ``y`` for every start;
5. z-score the data channels of ``x`` and ``y`` in float32: ``(v - float32(mean)) /
   float32(std)``, missing readings (0 or NaN under ``"zero"``) as 0 first.

Index-batching must reproduce these batches byte for byte. Memory grows to about
``(input_steps * F_in + horizon * F_out) / F`` times the series: the point of this module is to
show what index-batching avoids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

DAY_NS = 86_400 * 10**9


@dataclass(frozen=True, eq=False)
class Materialised:
    """Every window of one split, materialised.

    Attributes
    ----------
    starts : numpy.ndarray
        int64 ``(b,)`` start of each window.
    x : torch.Tensor
        ``(b, input_steps, n, F_in)``.
    y : torch.Tensor
        ``(b, horizon, n, F_out)``.
    missing : torch.Tensor or None
        Boolean, same shape as ``y``: targets missing in the raw data (when asked for).
    """

    starts: np.ndarray
    x: torch.Tensor
    y: torch.Tensor
    missing: torch.Tensor | None

    @property
    def nbytes(self) -> int:
        """Bytes held by ``x``, ``y`` and ``missing``."""
        held = (self.x, self.y) if self.missing is None else (self.x, self.y, self.missing)
        return sum(t.numel() * t.element_size() for t in held)


@dataclass(frozen=True, eq=False)
class Reference:
    """The materialised splits and the train statistics they were standardised with.

    ``reference["train"]`` is the train split's :class:`Materialised`.
    """

    splits: dict[str, Materialised]
    mean: np.ndarray
    std: np.ndarray

    def __getitem__(self, split: str) -> Materialised:
        return self.splits[split]

    def inverse(self, y: torch.Tensor, target_features: Sequence[int]) -> torch.Tensor:
        """De-standardise target windows: ``y * float32(std) + float32(mean)``."""
        idx = list(target_features)
        mean = torch.from_numpy(self.mean[..., idx].astype(np.float32)).to(y.device)
        std = torch.from_numpy(self.std[..., idx].astype(np.float32)).to(y.device)
        return y * std + mean


def _valid(values: np.ndarray, missing_value: str) -> np.ndarray:
    finite = ~np.isnan(values)
    return finite & (values != 0) if missing_value == "zero" else finite


def _starts(n_time: int, span: int, stride: int, train: float, val: float, cross: bool) -> dict:
    a = round(n_time * train)
    b = min(n_time, round(n_time * (train + val)))
    out = {}
    for name, (lo, hi) in {"train": (0, a), "val": (a, b), "test": (b, n_time)}.items():
        end = min(hi, n_time - span + 1) if cross else hi - span + 1
        out[name] = np.array(list(range(lo, max(lo, end), stride)), dtype=np.int64)
    return out


def _train_moments(
    data: np.ndarray, missing_value: str, per_node: bool, block: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std of the valid readings: two float64 passes, ``block`` steps at a
    time (bounded temporaries)."""
    axes = (0,) if per_node else (0, 1)
    total = count = 0.0
    for i in range(0, data.shape[0], block):
        part = data[i : i + block].astype(np.float64)
        valid = _valid(part, missing_value)
        total = total + np.where(valid, part, 0.0).sum(axis=axes)
        count = count + valid.sum(axis=axes)
    mean = total / count
    sq = 0.0
    for i in range(0, data.shape[0], block):
        part = data[i : i + block].astype(np.float64)
        sq = sq + (np.where(_valid(part, missing_value), part - mean, 0.0) ** 2).sum(axis=axes)
    std = np.sqrt(sq / count)
    std[std == 0] = 1.0
    return mean, std


def _calendar(time: np.ndarray | None, time_of_day: bool, day_of_week: bool) -> np.ndarray:
    if time is None:
        return np.zeros((0, 0), np.float32)
    ns = np.asarray(time).astype("datetime64[ns]").astype(np.int64)
    columns = []
    if time_of_day:  # fraction of the day elapsed
        columns.append(((ns % DAY_NS) / DAY_NS).astype(np.float32)[:, None])
    if day_of_week:  # one-hot, Monday first
        day = pd.DatetimeIndex(np.asarray(time)).day_of_week.to_numpy()
        onehot = np.zeros((ns.size, 7), np.float32)
        onehot[np.arange(ns.size), day] = 1.0
        columns.append(onehot)
    return np.concatenate(columns, axis=1) if columns else np.zeros((ns.size, 0), np.float32)


def materialise_windows(
    data: np.ndarray,
    time: np.ndarray | None,
    missing_value: str,
    *,
    input_steps: int,
    horizon: int,
    stride: int = 1,
    train: float = 0.7,
    val: float = 0.1,
    cross_splits: bool = False,
    per_node: bool = False,
    input_features: Sequence[int] | None = None,
    target_features: Sequence[int] | None = None,
    time_of_day: bool = False,
    day_of_week: bool = False,
    splits: Sequence[str] = ("train", "val", "test"),
    with_missing: bool = True,
) -> Reference:
    """Run Algorithm 1 on a raw ``(t, n, f)`` float32 series.

    Parameters
    ----------
    data : numpy.ndarray
        Raw series as stored (not modified).
    time : numpy.ndarray, optional
        datetime64 coordinate (needed for calendar features).
    missing_value : str
        Store convention (``"zero"`` or ``"nan"``).
    input_steps, horizon, stride : int
        Window shape and distance between starts.
    train, val : float
        Split fractions of the steps (test takes the rest).
    cross_splits : bool
        Let windows read past their split's end.
    per_node : bool
        Statistics per node and feature instead of per feature.
    input_features, target_features : sequence of int, optional
        Data features in ``x`` and ``y`` (default: all).
    time_of_day, day_of_week : bool
        Calendar channels appended to ``x``.
    splits : sequence of str
        Splits to materialise.
    with_missing : bool
        Also materialise the boolean mask of missing targets.
    """
    n_time, n_node, n_feature = data.shape
    in_f = list(range(n_feature)) if input_features is None else list(input_features)
    out_f = list(range(n_feature)) if target_features is None else list(target_features)
    span = input_steps + horizon
    starts = _starts(n_time, span, stride, train, val, cross_splits)
    # 2. train statistics of the valid readings, float64, population std (1 where constant)
    mean, std = _train_moments(data[: round(n_time * train)], missing_value, per_node)
    mean32, std32 = mean.astype(np.float32), std.astype(np.float32)
    # 3. calendar features as dense channels on every node
    if (time_of_day or day_of_week) and time is None:
        raise ValueError("calendar features need the time coordinate")
    calendar = _calendar(time, time_of_day, day_of_week)
    k = calendar.shape[1]
    dense = np.empty((n_time, n_node, len(in_f) + k), np.float32)
    dense[..., : len(in_f)] = data[..., in_f]
    if k:
        dense[..., len(in_f) :] = calendar[:, None, :]
    targets = np.ascontiguousarray(data[..., out_f])
    out = {}
    for name in splits:
        # 4. every window of the split, copied out of the series
        own = starts[name]
        x = np.empty((own.size, input_steps, n_node, dense.shape[2]), np.float32)
        y = np.empty((own.size, horizon, n_node, len(out_f)), np.float32)
        for i, s in enumerate(own):
            x[i] = dense[s : s + input_steps]
            y[i] = targets[s + input_steps : s + span]
        missing = torch.from_numpy(~_valid(y, missing_value)) if with_missing else None
        # 5. z-score the data channels in float32
        for values, idx in ((x[..., : len(in_f)], in_f), (y, out_f)):
            if missing_value == "zero":
                values[np.isnan(values)] = 0.0
            values -= mean32[..., idx]
            values /= std32[..., idx]
        out[name] = Materialised(own, torch.from_numpy(x), torch.from_numpy(y), missing)
    return Reference(out, mean, std)


class MaterialisedDataset(Dataset):
    """Batch-level dataset over materialised windows: ``dataset[positions]`` is a batch.

    Drive it with :func:`stzarr.data.loaders.batch_loader` to get the same batch order as
    index-batching under the same seed.
    """

    def __init__(self, windows: Materialised, *, with_mask: bool = False) -> None:
        self.windows = windows
        self.with_mask = with_mask

    def __len__(self) -> int:
        return int(self.windows.x.shape[0])

    def __getitem__(self, positions: Sequence[int]) -> tuple[torch.Tensor, ...]:
        idx = torch.as_tensor(np.asarray(positions, dtype=np.int64)).to(self.windows.x.device)
        x, y = self.windows.x.index_select(0, idx), self.windows.y.index_select(0, idx)
        if self.with_mask:
            if self.windows.missing is None:
                raise ValueError("these windows were materialised without the missing mask")
            return x, y, self.windows.missing.index_select(0, idx)
        return x, y

    def to(self, device: torch.device | str) -> MaterialisedDataset:
        """A copy with the windows on ``device``."""
        w = self.windows
        missing = None if w.missing is None else w.missing.to(device)
        moved = Materialised(w.starts, w.x.to(device), w.y.to(device), missing)
        return MaterialisedDataset(moved, with_mask=self.with_mask)
