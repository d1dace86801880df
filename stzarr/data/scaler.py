"""Standardisation with the train-split statistics, in float32: fit, transform, inverse, and the
value a missing reading takes.

``z = (x - float32(mean)) / float32(std)``, with the float32 images of the float64 statistics
(:class:`stzarr.store.stats.Stats`), and ``x = z * float32(std) + float32(mean)`` back. Every stage
(index-batching on CPU or device, streaming, evaluation, the materialised reference pipeline)
uses this exact arithmetic, which is what makes their batches byte-identical.

Missing readings
----------------
Under the store convention ``"zero"`` (0 and NaN missing) NaN readings are set to 0 before
standardising, so every missing reading becomes the same float32 value ``(0 - mean) / std`` (the
*sentinel*, per feature or per node-feature); under ``"nan"`` missing readings stay NaN. A mask of
missing readings is therefore recomputed from standardised values by exact comparison
(:func:`mask_missing`), with no second full-size array. Caveat: a valid raw reading so close to 0
that it standardises to the same float32 (|x| below half a float32 ulp of the mean, e.g. < 2e-6
mph for speeds averaging 60) counts as missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from stzarr.errors import SpecError
from stzarr.store.stats import Stats


class Scaler:
    """Standardise and de-standardise ``(..., f)`` or ``(..., n, f)`` values in float32.

    Build it with :meth:`fit` (train statistics) or :meth:`identity` (values already in the
    scale wanted); :meth:`select` restricts it to some features (e.g. the targets).

    Parameters
    ----------
    mean, std : numpy.ndarray
        float32 ``(f,)`` or per node ``(n, f)``.
    missing_value : str
        Store convention, ``"zero"`` or ``"nan"`` (see the module docstring).
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray, missing_value: str) -> None:
        if missing_value not in ("zero", "nan"):
            raise SpecError(f"missing_value must be 'zero' or 'nan', got {missing_value!r}")
        self.mean = np.ascontiguousarray(mean, dtype=np.float32)
        self.std = np.ascontiguousarray(std, dtype=np.float32)
        self.missing_value = missing_value
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def fit(cls, stats: Stats, missing_value: str) -> Scaler:
        """The scaler of the train statistics ``stats`` (their float32 images)."""
        mean32, std32 = stats.float32()
        return cls(mean32, std32, missing_value)

    @classmethod
    def identity(cls, n_feature: int, missing_value: str) -> Scaler:
        """A scaler that leaves values as they are (mean 0, std 1)."""
        return cls(np.zeros(n_feature, np.float32), np.ones(n_feature, np.float32), missing_value)

    def select(self, features: Sequence[int]) -> Scaler:
        """The scaler of the features ``features`` (indices on the last axis), in that order."""
        idx = list(features)
        return Scaler(self.mean[..., idx], self.std[..., idx], self.missing_value)

    @property
    def sentinel(self) -> np.ndarray:
        """float32 value of a missing reading after :meth:`transform_`, per feature or
        node-feature: ``(0 - mean) / std`` under ``"zero"``, NaN under ``"nan"``."""
        if self.missing_value == "zero":
            return (np.float32(0) - self.mean) / self.std
        return np.full_like(self.mean, np.nan)

    def _tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on:
            self._on[device] = (
                torch.from_numpy(self.mean).to(device),
                torch.from_numpy(self.std).to(device),
            )
        return self._on[device]

    def transform_(self, series: np.ndarray | torch.Tensor) -> Any:
        """Standardise a float32 array or tensor **in place** and return it.

        Under ``"zero"`` NaN readings are first set to 0, so that every missing reading
        standardises to :attr:`sentinel`. Under ``"nan"`` NaN stays NaN.
        """
        if isinstance(series, torch.Tensor):
            mean, std = self._tensors(series.device)
            if self.missing_value == "zero":
                series.nan_to_num_(nan=0.0)
            series.sub_(mean)
            series.div_(std)
            return series
        if self.missing_value == "zero":
            np.nan_to_num(series, copy=False, nan=0.0)
        np.subtract(series, self.mean, out=series)
        np.divide(series, self.std, out=series)
        return series

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """De-standardise ``z`` (``... f``, or ``... n f`` for per-node statistics) to raw units:
        ``z * std + mean``."""
        mean, std = self._tensors(z.device)
        if mean.ndim == 2 and z.shape[-2:] != mean.shape:
            raise SpecError("per-node statistics need values shaped (..., n, f)")
        return z * std + mean


def mask_missing(values: Any, sentinel: Any, missing_value: str, out: Any) -> None:
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


def zero_where(values: Any, mask: Any) -> None:
    """Set ``values`` to 0 (the train mean) where ``mask`` holds; NumPy arrays or tensors."""
    if isinstance(values, np.ndarray):
        np.copyto(values, 0.0, where=mask)
    else:
        values.masked_fill_(mask, 0.0)
