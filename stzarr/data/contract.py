"""The batch contract: what every loader's batch holds, with its defaults defined once.

Every path that builds batches (``stzarr train``, :func:`stzarr.data.loaders.make_loaders`,
:func:`stzarr.data.rank.open_rank_data`, :class:`stzarr.data.streaming.StreamingLoader`) takes a
:class:`BatchContract` and resolves its open defaults against the store the same way
(:meth:`BatchContract.for_store`), and every one yields :data:`BATCH_FIELDS`:

* ``x``: ``(b, input_steps, n, F_in)`` standardised inputs, the data features then the calendar
  channels;
* ``y``: ``(b, horizon, n, F_out)`` standardised targets;
* ``missing``: boolean, like ``y``: the targets that were missing in the raw data (taken before
  ``fill_missing`` is applied).

So a model built for one path's batches accepts every other path's batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stzarr.data.calendar import is_subdaily, time_feature_names
from stzarr.errors import SpecError
from stzarr.plan.stream import batch_nbytes
from stzarr.plan.windows import WindowSpec

Features = Sequence[int | str] | None

BATCH_FIELDS = ("x", "y", "missing")
"""What a batch is, on every path: the tuple ``(x, y, missing)``."""


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


@dataclass(frozen=True)
class BatchContract:
    """What a batch holds.

    Parameters
    ----------
    input_features, target_features : tuple of str or int, optional
        Data features in ``x`` and forecast in ``y`` (default: all).
    time_of_day : bool, optional
        Append the time-of-day channel to ``x``. Default (None): when the store is sampled more
        often than daily.
    day_of_week : bool
        Append the seven day-of-week channels to ``x``.
    fill_missing : bool, optional
        Replace missing inputs and targets by 0 (the train mean) after the mask was taken.
        Default (None): only for stores whose missing readings are NaN (``missing_value="nan"``);
        under ``"zero"`` missing inputs keep their standardised value ``(0 - mean) / std``, as
        DCRNN's and PGT's pipelines feed them.
    """

    input_features: tuple[int | str, ...] | None = None
    target_features: tuple[int | str, ...] | None = None
    time_of_day: bool | None = None
    day_of_week: bool = False
    fill_missing: bool | None = None

    def __post_init__(self) -> None:
        for name in ("input_features", "target_features"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))

    def resolved(self, *, subdaily: bool, missing_value: str) -> BatchContract:
        """The contract with its open defaults decided, for data sampled more often than daily
        (``subdaily``) whose missing readings follow ``missing_value``."""
        return dataclasses.replace(
            self,
            time_of_day=subdaily if self.time_of_day is None else bool(self.time_of_day),
            fill_missing=(
                missing_value == "nan" if self.fill_missing is None else bool(self.fill_missing)
            ),
        )

    def for_store(self, store: Any) -> BatchContract:
        """:meth:`resolved` for an open store (its sampling interval and missing convention)."""
        return self.resolved(
            subdaily=is_subdaily(store.attrs.get("sampling_interval_s")),
            missing_value=store.missing_value,
        )

    def calendar_names(self) -> list[str]:
        """Names of the calendar channels appended to ``x``."""
        return time_feature_names(
            time_of_day=bool(self.time_of_day), day_of_week=bool(self.day_of_week)
        )

    def channels(self, names: Sequence[str]) -> tuple[int, int, int]:
        """Input data features, target features and calendar channels of a batch for a store
        with the features ``names``."""
        return (
            len(resolve_features(self.input_features, names)),
            len(resolve_features(self.target_features, names)),
            len(self.calendar_names()),
        )

    def batch_bytes(
        self, store: Any, spec: WindowSpec, batch_size: int, *, with_mask: bool = True
    ) -> int:
        """Bytes of one batch of ``store`` under this (resolved) contract: ``(x, y, missing)``,
        or ``(x, y)`` without the mask."""
        n_in, n_out, n_cal = self.channels(store.feature_names)
        return batch_nbytes(
            spec,
            batch_size,
            store.shape[1],
            n_input=n_in,
            n_target=n_out,
            n_calendar=n_cal,
            with_mask=with_mask,
        )

    def batcher_options(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`stzarr.data.batcher.SeriesBatcher.from_array`."""
        return {
            "input_features": self.input_features,
            "target_features": self.target_features,
            "time_of_day": bool(self.time_of_day),
            "day_of_week": bool(self.day_of_week),
            "fill_missing": bool(self.fill_missing),
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON, checkpoints)."""
        out = dataclasses.asdict(self)
        for name in ("input_features", "target_features"):
            if out[name] is not None:
                out[name] = list(out[name])
        return out
