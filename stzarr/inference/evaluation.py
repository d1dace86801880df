"""Score a trained model on a store, next to the historical average on the same windows.

:func:`evaluate` reports the masked MAE, RMSE and MAPE
(:class:`stzarr.training.metrics.MaskedMetrics`:
de-standardised forecasts, missing targets excluded) overall and at every horizon step. The
ranks (:meth:`stzarr.inference.trained.Job.run`) return their float64 metric sums, which are added,
so the result is exact over every window whatever the number of ranks. The historical average
(:func:`historical_average`) is fitted on the checkpoint's train time range and scored on the
same windows by :func:`stzarr.training.metrics.evaluate_historical_average`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from stzarr.data.scaler import Scaler
from stzarr.inference.trained import (
    Job,
    TrainedModel,
    open_job,
    positive,
    rank_batches,
)
from stzarr.monitor import release_free_heap
from stzarr.store.format import Store
from stzarr.training.metrics import (
    HistoricalAverage,
    MaskedMetrics,
    evaluate_historical_average,
    fit_historical_average,
)


@torch.no_grad()
def _evaluate_share(
    job: Job, store: Store, share: tuple[int, int], device: torch.device
) -> np.ndarray:
    """Masked-metric sums of the model on one share of the windows (float64, per step)."""
    trained = job.trained
    metrics = MaskedMetrics(trained.window.horizon)
    starts = job.starts[share[0] : share[1]]
    if starts.size:
        model = trained.build(store, device)
        scaler = Scaler.fit(trained.stats, store.missing_value)
        scaler = scaler.select(trained.target_indices(store))
        loader = rank_batches(
            store, trained, starts, batch_size=job.batch_size, max_memory=job.max_memory,
            device=device,
        )  # fmt: skip
        for x, y, missing in loader:
            metrics.update(scaler.inverse(model(x)), scaler.inverse(y), ~missing)
    return metrics.sums.cpu().numpy()


def historical_average(store: Store, trained: TrainedModel) -> tuple[HistoricalAverage, list]:
    """The historical average fitted on the steps of ``store`` inside the checkpoint's train
    time range (the same baseline as on the training store), or, when ``store`` has none of
    them, on its own train split as the checkpoint's split spec cuts it. Returns it with the
    first and last timestamp fitted on."""
    time = store.time
    saved = trained.identity.get("train_time")
    lo = hi = 0
    if saved:
        lo = int(np.searchsorted(time, np.datetime64(saved[0], "ns"), side="left"))
        hi = int(np.searchsorted(time, np.datetime64(saved[1], "ns"), side="right"))
    if hi <= lo:
        lo, hi = trained.split.bounds(time)["train"]
    fitted = [str(np.datetime_as_string(time[i], unit="s")) for i in (lo, hi - 1)]
    return fit_historical_average(store, (lo, hi)), fitted


def evaluate(
    store: Store | str | os.PathLike[str],
    checkpoint: str | os.PathLike[str],
    *,
    split: str | None = None,
    start: str | None = None,
    stop: str | None = None,
    workers: int = 1,
    max_memory: int | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Score a trained model on a store: masked MAE, RMSE and MAPE overall and at every horizon
    step, next to the historical average on the same windows.

    Parameters
    ----------
    store : Store or path
        The store trained on, or another with the same sensors, graph and features.
    checkpoint : path
        A checkpoint file or directory (``best.pt``, else ``last.pt``).
    split : {"train", "val", "test"}, optional
        The split to score (default ``"test"``), cut as the training run cut it.
    start, stop : str, optional
        Score every window inside ``[start, stop)`` instead of a split.
    workers : int
        Ranks (:func:`stzarr.training.launch.launch`); each scores a contiguous share.
    max_memory : int, optional
        Bytes of series and batches a rank may hold; more is streamed.
    batch_size : int
        Windows per batch.

    Returns
    -------
    dict
        ``{"store", "checkpoint", "selection", "windows", "time", "model",
        "historical_average", "historical_average_fit"}``; the metrics are
        :meth:`MaskedMetrics.result` with every horizon step.
    """
    store, job, selection = open_job(
        store, checkpoint, split=split, start=start, stop=stop, batch_size=batch_size,
        max_memory=max_memory,
    )  # fmt: skip
    trained = job.trained
    horizon = trained.window.horizon
    sums = sum(job.run(_evaluate_share, positive(workers)))
    release_free_heap()  # what the model's pass freed, before the baseline's pass
    metrics = MaskedMetrics(horizon)
    metrics.sums = torch.from_numpy(np.asarray(sums, dtype=np.float64))
    steps = tuple(range(1, horizon + 1))
    ha, fitted = historical_average(store, trained)
    baseline = evaluate_historical_average(
        store,
        selection.plan(trained.window, store.shape[0]),
        "selected",
        model=ha,
        features=trained.target_indices(store),
        horizons=steps,
    )
    time = store.time
    spec = trained.window
    issue = [time[int(selection.starts[i]) + spec.input_steps - 1] for i in (0, -1)]
    return {
        "store": store.path,
        "checkpoint": trained.describe(),
        "selection": selection.label,
        "windows": int(selection.starts.size),
        "time": [str(np.datetime_as_string(t, unit="s")) for t in issue],
        "model": metrics.result(steps),
        "historical_average": baseline,
        "historical_average_fit": fitted,
    }
