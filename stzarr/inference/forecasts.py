"""Forecasts of a trained model written as a Zarr store, and a picture of one sensor's.

:func:`predict` writes, for every selected window, the model's forecast in the data's units:

* ``forecast`` ``(time, horizon, node, feature)`` float32, where ``time`` is the issue time (the
  window's last input step) and horizon ``h`` (coordinate ``horizon``, 1-based) targets the
  step ``h`` after it, ``time + h * interval`` on a gap-free axis;
* ``target`` (the reading there, NaN where missing), ``missing`` (bool, the store's
  missing-value convention) and ``historical_average`` (the baseline's forecast) alongside;
* coordinates ``node`` (sensor ids) and ``feature`` (the target features);
* attributes: the checkpoint's path, SHA-256, epoch, model configuration and statistics, the
  source store's path, provenance and identity, and the selection.

Ranks (``workers``) take contiguous shares of the windows, each starting at an output chunk
boundary and each chunk a whole number of batches, so a rank writes only its own chunks and
every window is forecast in the same batch whatever the number of ranks: the store written is
the same. Each rank streams its inputs through ``max_memory`` bytes (its output buffers, one
chunk of each variable, are counted in it). The store is written to a locked partial sibling and
renamed into place at the end (:mod:`stzarr.store.atomic`); an error or a signal leaves nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import xarray as xr
import zarr

from stzarr.data.scaler import Scaler
from stzarr.errors import StzarrError
from stzarr.inference.evaluation import historical_average
from stzarr.inference.trained import (
    Job,
    TrainedModel,
    extended_time,
    future_inputs,
    open_job,
    positive,
    rank_batches,
)
from stzarr.store.atomic import AtomicOutput, remove_stale_partials
from stzarr.store.format import COMPRESSOR, Store, codec_chain, consolidate, is_local, valid_mask
from stzarr.store.format import tool_version as created_by
from stzarr.store.io_config import writing
from stzarr.training.identity import store_identity
from stzarr.training.metrics import HistoricalAverage
from stzarr.units import format_bytes

FORECAST_KEY = "stzarr_forecast"
FORECAST_VERSION = 1
VARIABLES = ("forecast", "target", "historical_average")
DIMS = ("time", "horizon", "node", "feature")
CHUNK_BYTES = 4 * 2**20


def is_forecast_store(path: Path) -> bool:
    """True for a directory holding a forecast store stzarr wrote (its marker attribute)."""
    try:
        meta = json.loads((Path(path) / "zarr.json").read_text())
        return FORECAST_KEY in meta.get("attributes", {})
    except (OSError, ValueError, AttributeError):
        return False


def chunk_windows(batch_size: int, window_bytes: int, max_memory: int | None) -> int:
    """Windows per output chunk: whole batches, about :data:`CHUNK_BYTES` per variable (a
    thirty-second of ``max_memory`` at most)."""
    target = CHUNK_BYTES if max_memory is None else min(CHUNK_BYTES, max_memory // 32)
    return batch_size * max(1, target // max(1, batch_size * window_bytes))


def _create(path: Path, store: Store, trained: TrainedModel, issue: np.ndarray, chunk: int) -> None:
    """The group, its coordinates, and the empty variables (chunked ``chunk`` windows)."""
    spec = trained.window
    targets = list(trained.features["target"])
    shape = (len(issue), spec.horizon, store.shape[1], len(targets))
    group = zarr.open_group(path, mode="w-", zarr_format=3)
    codecs = codec_chain(COMPRESSOR)
    whole = {"write_empty_chunks": True}
    for name in (*VARIABLES, "missing"):
        group.create_array(
            name,
            shape=shape,
            chunks=(chunk, *shape[1:]),
            dtype="bool" if name == "missing" else "float32",
            fill_value=True if name == "missing" else np.nan,
            compressors=codecs,
            dimension_names=DIMS,
            config=whole,
        )
    times = group.create_array(
        "time",
        shape=(len(issue),),
        dtype="int64",
        compressors=codecs,
        dimension_names=("time",),
        attributes={"units": "nanoseconds since 1970-01-01", "calendar": "proleptic_gregorian"},
    )
    times[:] = issue.astype("datetime64[ns]").astype(np.int64)
    horizon = group.create_array(
        "horizon", shape=(spec.horizon,), dtype="int32", dimension_names=("horizon",)
    )
    horizon[:] = np.arange(1, spec.horizon + 1, dtype=np.int32)
    for name, values in (("node", store.node_ids), ("feature", targets)):
        arr = group.create_array(name, shape=(len(values),), dtype=str, dimension_names=(name,))
        arr[:] = np.array(values, dtype=object)


class _ChunkWriter:
    """Write whole output chunks of one rank: forecasts given, the rest read from the store."""

    def __init__(
        self, path: str, store: Store, trained: TrainedModel, ha: HistoricalAverage
    ) -> None:
        with writing():
            group = zarr.open_group(path, mode="r+", zarr_format=3)
            self.arrays = {name: group[name] for name in (*VARIABLES, "missing")}
        self.store, self.ha = store, ha
        self.spec = trained.window
        self.targets = trained.target_indices(store)

    def write(self, at: int, starts: np.ndarray, forecast: np.ndarray) -> None:
        """Write windows ``at ..`` (global starts ``starts``) with their forecasts."""
        steps = starts[:, None] + self.spec.input_steps + np.arange(self.spec.horizon)
        lo, hi = int(steps.min()), int(steps.max()) + 1
        n_time = self.store.shape[0]
        block = np.full((hi - lo, *self.store.shape[1:]), np.nan, dtype=np.float32)
        if lo < n_time:  # steps past the end of the store stay missing
            self.store.read(lo, min(hi, n_time), out=block[: min(hi, n_time) - lo])
        raw = block[steps - lo][..., self.targets]
        missing = ~valid_mask(raw, self.store.missing_value)
        ha = self.ha.predict(extended_time(self.store, lo, hi)[steps.reshape(-1) - lo])
        ha = ha.reshape(*steps.shape, *ha.shape[1:])[..., self.targets]
        end = at + len(starts)
        self.arrays["forecast"][at:end] = forecast
        self.arrays["target"][at:end] = np.where(missing, np.float32(np.nan), raw)
        self.arrays["missing"][at:end] = missing
        self.arrays["historical_average"][at:end] = ha.astype(np.float32)


@torch.no_grad()
def _predict_share(
    job: Job,
    store: Store,
    share: tuple[int, int],
    device: torch.device,
    path: str,
    ha: HistoricalAverage,
    chunk: int,
    loader_memory: int | None,
) -> int:
    """Forecast one share of the windows and write its chunks; returns the windows written."""
    first, end = share
    starts = job.starts[first:end]
    if starts.size == 0:
        return 0
    trained = job.trained
    model = trained.build(store, device)
    scaler = Scaler.fit(trained.stats, store.missing_value)
    scaler = scaler.select(trained.target_indices(store))
    writer = _ChunkWriter(path, store, trained, ha)
    past_end = starts + trained.window.span > store.shape[0]

    def forecasts() -> Iterator[np.ndarray]:
        if not past_end.all():
            for x, _, _ in rank_batches(
                store, trained, starts[~past_end], batch_size=job.batch_size,
                max_memory=loader_memory, device=device,
            ):  # fmt: skip
                yield scaler.inverse(model(x)).cpu().numpy()
        if past_end.any():
            x = future_inputs(store, trained, starts[past_end], device)
            yield scaler.inverse(model(x)).cpu().numpy()

    pending: list[np.ndarray] = []
    done = 0
    for forecast in forecasts():
        pending.append(forecast)
        held = sum(len(p) for p in pending)
        if held >= chunk or done + held == starts.size:
            writer.write(first + done, starts[done : done + held], np.concatenate(pending))
            done += held
            pending = []
    return done


def _loader_memory(max_memory: int | None, chunk: int, window_bytes: int) -> int | None:
    """What is left of ``max_memory`` for a rank's input stream once its output buffers (one
    chunk of forecasts, targets, baseline and mask, and a read of the chunk's targets) are
    counted."""
    if max_memory is None:
        return None
    left = max_memory - 5 * chunk * window_bytes
    if left <= 0:
        raise StzarrError(
            f"--max-memory {format_bytes(max_memory)} cannot hold the output buffers of one "
            f"batch ({format_bytes(5 * chunk * window_bytes)})"
        )
    return left


def predict(
    store: Store | str | os.PathLike[str],
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    split: str | None = None,
    start: str | None = None,
    stop: str | None = None,
    workers: int = 1,
    max_memory: int | None = None,
    batch_size: int = 64,
    overwrite: bool = False,
    future: bool = False,
) -> xr.Dataset:
    """Write a trained model's forecasts of a store's windows to the Zarr store ``out``.

    Parameters
    ----------
    store, checkpoint, split, start, stop, workers, batch_size
        As for :func:`stzarr.inference.evaluation.evaluate` (each rank forecasts and writes a
        share).
    out : path
        The forecast store to write (local path).
    max_memory : int, optional
        Bytes of series, batches and output buffers a rank may hold; inputs beyond it stream.
    overwrite : bool
        Replace ``out`` when it is a forecast store stzarr wrote.
    future : bool
        Also forecast from each of the store's last ``horizon`` steps, past its end (targets
        there missing): :func:`stzarr.inference.trained.select_windows`.

    Returns
    -------
    xarray.Dataset
        ``out`` opened with ``xarray.open_zarr``.
    """
    if not is_local(out):
        raise StzarrError(f"--out {out}: forecasts are written to a local path")
    out = Path(os.fspath(out).removeprefix("file://"))
    store, job, selection = open_job(
        store, checkpoint, split=split, start=start, stop=stop, batch_size=batch_size,
        max_memory=max_memory, future=future,
    )  # fmt: skip
    trained = job.trained
    spec = trained.window
    window_bytes = spec.horizon * store.shape[1] * len(trained.features["target"]) * 4
    chunk = chunk_windows(job.batch_size, window_bytes, max_memory)
    loader_memory = _loader_memory(max_memory, chunk, window_bytes)
    ha, fitted = historical_average(store, trained)
    issue = store.time[selection.starts + spec.input_steps - 1]
    remove_stale_partials(out)
    with AtomicOutput(
        out,
        overwrite=overwrite,
        ours=is_forecast_store,
        what="a stzarr forecast store",
        directory=True,
    ) as output:
        with writing():
            _create(output.partial, store, trained, issue, chunk)
        written = job.run(
            _predict_share,
            positive(workers),
            str(output.partial),
            ha,
            chunk,
            loader_memory,
            unit=chunk,
        )
        if sum(written) != selection.starts.size:
            raise StzarrError(f"wrote {sum(written)} of {selection.starts.size} windows")
        group = zarr.open_group(output.partial, mode="r+", zarr_format=3)
        group.attrs.update(
            json.loads(
                json.dumps(
                    {
                        FORECAST_KEY: FORECAST_VERSION,
                        "created_by": created_by(),
                        "sampling_interval_s": store.attrs.get("sampling_interval_s"),
                        "checkpoint": trained.describe(),
                        "statistics": trained.record["stats"],
                        "source": {
                            "store": store.path,
                            "provenance": store.attrs.get("source"),
                            "identity": store_identity(store, (0, 0)),
                        },
                        "selection": selection.label,
                        "historical_average_fit": fitted,
                        "units": "the source store's data units",
                    }
                )
            )
        )
        consolidate(output.partial)
    return xr.open_zarr(out, consolidated=True)


def open_forecasts(path: str | os.PathLike[str]) -> xr.Dataset:
    """Open a forecast store written by :func:`predict`.

    Raises
    ------
    StzarrError
        When ``path`` is not one.
    """
    if not is_forecast_store(Path(path)):
        raise StzarrError(f"{path} is not a stzarr forecast store (written by `stzarr predict`)")
    return xr.open_zarr(path, consolidated=True)


def plot_forecast(
    path: str | os.PathLike[str],
    node: str,
    *,
    horizon: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """PNG of one sensor's forecast against the truth over time, with the historical average.

    Parameters
    ----------
    path : path
        A forecast store.
    node : str
        The sensor id.
    horizon : int, optional
        The horizon step drawn (default: the last).
    out_dir : path, optional
        Where the PNG ``<store>-<node>-h<H>.png`` goes (default: next to the store).
    """
    from stzarr.plot import _save, plt

    ds = open_forecasts(path)
    nodes = [str(v) for v in ds["node"].values]
    if str(node) not in nodes:
        some = ", ".join(nodes[:5]) + (", ..." if len(nodes) > 5 else "")
        raise StzarrError(f"no sensor {node!r} in {path} (it has {len(nodes)}: {some})")
    steps = [int(h) for h in ds["horizon"].values]
    h = steps[-1] if horizon is None else int(horizon)
    if h not in steps:
        raise StzarrError(f"horizon {h} is not in {path} (1..{steps[-1]})")
    feature = str(ds["feature"].values[0])
    one = ds.sel(node=str(node), horizon=h, feature=feature)
    interval = ds.attrs.get("sampling_interval_s")
    when = ds["time"].values + (np.timedelta64(h * int(interval), "s") if interval else 0)
    truth, model, base = (
        np.asarray(one[v].values, dtype=np.float64)
        for v in ("target", "forecast", "historical_average")
    )
    valid = ~np.asarray(one["missing"].values)
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(when, truth, color="black", lw=1.0, label="truth")
    for values, name, style in ((model, "model", "-"), (base, "historical average", "--")):
        mae = float(np.abs(values - truth)[valid].mean()) if valid.any() else float("nan")
        ax.plot(when, values, style, lw=1.0, label=f"{name} (MAE {mae:.3f})")
    minutes = f" ({h * int(interval) // 60} min ahead)" if interval else ""
    ax.set_title(f"sensor {node}, {feature}: forecast at horizon {h}{minutes}")
    ax.set_xlabel("target time")
    ax.set_ylabel(f"{feature} (data units)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", framealpha=0.8)
    fig.autofmt_xdate()
    fig.tight_layout()
    path = Path(path)
    where = Path(out_dir) if out_dir is not None else path.parent
    return _save(fig, where / f"{path.stem}-{node}-h{h}.png")
