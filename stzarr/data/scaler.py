"""Standardisation with the train-split statistics, in float32, in place.

``z = (x - float32(mean)) / float32(std)``, with the float32 images of the float64 statistics
(:class:`stzarr.store.stats.Stats`). Every stage (index-batching on CPU or device, the
materialised reference pipeline) uses this exact arithmetic, which is what makes their batches
byte-identical.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from stzarr.store.stats import Stats


def standardise_(series: np.ndarray | torch.Tensor, stats: Stats, missing_value: str) -> Any:
    """Standardise a ``(t, n, f)`` float32 array or tensor **in place** and return it.

    Under the ``"zero"`` convention NaN readings are first set to 0, so that every missing
    reading standardises to the same float32 value (see :func:`missing_sentinel`). Under
    ``"nan"`` NaN stays NaN.
    """
    mean32, std32 = stats.float32()
    if isinstance(series, torch.Tensor):
        if missing_value == "zero":
            series.nan_to_num_(nan=0.0)
        series.sub_(torch.from_numpy(mean32).to(series.device))
        series.div_(torch.from_numpy(std32).to(series.device))
        return series
    if missing_value == "zero":
        np.nan_to_num(series, copy=False, nan=0.0)
    np.subtract(series, mean32, out=series)
    np.divide(series, std32, out=series)
    return series


def missing_sentinel(stats: Stats, missing_value: str) -> np.ndarray:
    """float32 value of a missing reading after :func:`standardise_`, per feature or node-feature.

    ``(0 - mean) / std`` under ``"zero"``; NaN under ``"nan"``.
    """
    mean32, std32 = stats.float32()
    if missing_value == "zero":
        return (np.float32(0) - mean32) / std32
    return np.full_like(mean32, np.nan)


class Inverse:
    """De-standardisation of target-shaped tensors with the checkpoint's statistics (the
    arithmetic of training: ``y * float32(std) + float32(mean)``)."""

    def __init__(self, stats: Stats, targets: list[int], device: torch.device) -> None:
        mean32, std32 = stats.float32()
        self.mean = torch.from_numpy(mean32[..., targets]).to(device)
        self.std = torch.from_numpy(std32[..., targets]).to(device)

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std.to(y.device) + self.mean.to(y.device)
