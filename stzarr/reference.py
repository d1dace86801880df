"""The standard, materialised preprocessing (Algorithm 1 of the background), for tests and
benchmarks only.

1. add the calendar features as dense channels copied to every node;
2. slide a window over time, materialising ``x`` and ``y`` for every start;
3. split by the plan (the same starts as index-batching);
4. z-score the data channels of ``x`` and ``y`` with the train statistics.

Step 4 uses the same float32 arithmetic as :func:`stzarr.stats.standardise_`, so the result is
what index-batching must reproduce byte for byte. Memory grows to about
``(input_steps * F_in + horizon * F_out) / F`` times the series: the point of this module is to
show what index-batching avoids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from stzarr.features import time_features
from stzarr.stats import Stats, standardise_, valid_mask
from stzarr.windows import WindowPlan, window_index


@dataclass(frozen=True, eq=False)
class Materialised:
    """Every window of one split, materialised.

    Attributes
    ----------
    x : torch.Tensor
        ``(b, input_steps, n, F_in)``.
    y : torch.Tensor
        ``(b, horizon, n, F_out)``.
    missing : torch.Tensor or None
        Boolean, same shape as ``y``: targets missing in the raw data (when asked for).
    """

    x: torch.Tensor
    y: torch.Tensor
    missing: torch.Tensor | None

    @property
    def nbytes(self) -> int:
        """Bytes held by ``x``, ``y`` and ``missing``."""
        held = (self.x, self.y) if self.missing is None else (self.x, self.y, self.missing)
        return sum(t.numel() * t.element_size() for t in held)


def materialise_windows(
    data: np.ndarray,
    time: np.ndarray | None,
    plan: WindowPlan,
    stats: Stats,
    missing_value: str,
    *,
    input_features: Sequence[int] | None = None,
    target_features: Sequence[int] | None = None,
    time_of_day: bool = False,
    day_of_week: bool = False,
    splits: Sequence[str] = ("train", "val", "test"),
    with_missing: bool = True,
) -> dict[str, Materialised]:
    """Run Algorithm 1 on a raw ``(t, n, f)`` float32 series.

    Parameters
    ----------
    data : numpy.ndarray
        Raw series as stored (not modified).
    time : numpy.ndarray, optional
        datetime64 coordinate (needed for calendar features).
    plan : WindowPlan
        Which starts each split holds.
    stats : Stats
        Train statistics of all data features.
    missing_value : str
        Store convention (``"zero"`` or ``"nan"``).
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
    # 1. calendar features as dense channels on every node
    calendar = (
        time_features(time, time_of_day=time_of_day, day_of_week=day_of_week)
        if (time_of_day or day_of_week)
        else np.zeros((n_time, 0), np.float32)
    )
    k = calendar.shape[1]
    dense = np.concatenate(
        [data[..., in_f], np.broadcast_to(calendar[:, None, :], (n_time, n_node, k))], axis=2
    )
    targets = np.ascontiguousarray(data[..., out_f])
    result = {}
    spec = plan.spec
    for name in splits:
        starts = plan.starts[name]
        # 2./3. slide the window over the split's starts, materialising every sample
        x = dense[window_index(starts, 0, spec.input_steps)]
        y = targets[window_index(starts + spec.input_steps, 0, spec.horizon)]
        missing = torch.from_numpy(~valid_mask(y, missing_value)) if with_missing else None
        # 4. z-score with the train statistics (data channels only)
        standardise_(x[..., : len(in_f)], stats.select(in_f), missing_value)
        standardise_(y, stats.select(out_f), missing_value)
        result[name] = Materialised(torch.from_numpy(x), torch.from_numpy(y), missing)
    return result


class MaterialisedDataset(Dataset):
    """Batch-level dataset over materialised windows: ``dataset[positions]`` is a batch.

    Drive it with :func:`stzarr.loader.batch_loader` to get the same batch order as
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
        moved = Materialised(w.x.to(device), w.y.to(device), missing)
        return MaterialisedDataset(moved, with_mask=self.with_mask)
