"""Use a trained model: open its checkpoint, select windows of a store, run it on ranks.

:func:`open_trained` reads a checkpoint (a file, or a directory: ``best.pt`` when present, else
``last.pt``) with the data record training wrote into it (:mod:`stzarr.training.identity`), so
nothing
but the checkpoint and a store is needed. :meth:`TrainedModel.check_store` refuses a store with
other sensors, graph or features in one line naming the difference. The inputs are standardised
with the checkpoint's statistics, never the new store's.

:func:`select_windows` picks the windows (a split cut as the training run cut it, or every
window inside ``[start, stop)``); :func:`rank_batches` streams a contiguous share of them in
time order through the streaming loader (bounded by ``max_memory``, one block without it), the
same batches on every number of ranks when shares start at multiples of the batch size.
:meth:`Job.run` runs a function over contiguous shares of the windows, on one process or on
ranks started by :func:`stzarr.training.launch.launch` (:mod:`stzarr.inference.evaluation`,
:mod:`stzarr.inference.forecasts`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stzarr.data.batcher import SeriesBatcher, default_device
from stzarr.data.contract import BatchContract, resolve_features
from stzarr.data.streaming import StreamingLoader
from stzarr.errors import SpecError, StzarrError
from stzarr.plan.windows import SPLITS, WindowPlan, WindowSpec, make_plan
from stzarr.store.format import Store, open_store
from stzarr.store.stats import Stats
from stzarr.training.config import SplitSpec
from stzarr.training.identity import compatibility_differences
from stzarr.training.launch import launch
from stzarr.training.models import GraphForecaster, build_for_store

CHECKPOINT_FILES = ("best.pt", "last.pt")
"""Files looked for, in order, when a checkpoint is given as a directory."""


def checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """The checkpoint file of ``path``: the file itself, or a directory's ``best.pt`` (else
    ``last.pt``).

    Raises
    ------
    StzarrError
        When there is no such file.
    """
    path = Path(path)
    if path.is_dir():
        for name in CHECKPOINT_FILES:
            if (path / name).is_file():
                return path / name
        raise StzarrError(f"no checkpoint in {path} (looked for {', '.join(CHECKPOINT_FILES)})")
    if not path.is_file():
        raise StzarrError(f"no checkpoint at {path}")
    return path


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while piece := fh.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


@dataclass(frozen=True)
class TrainedModel:
    """A trained model as its checkpoint describes it.

    Attributes
    ----------
    path : pathlib.Path
        The checkpoint file.
    sha256 : str
        SHA-256 of the file.
    epoch : int or None
        Completed epochs when it was written.
    record : dict
        The data record (:func:`stzarr.training.identity.data_record`).
    state_dict : dict
        The parameters.
    """

    path: Path
    sha256: str
    epoch: int | None
    record: dict[str, Any]
    state_dict: dict[str, torch.Tensor]

    @property
    def model_name(self) -> str:
        """The model's name in :data:`stzarr.training.models.MODELS`."""
        return str(self.record["model"]["name"])

    @property
    def model_options(self) -> dict[str, Any]:
        """The model's hyper-parameters."""
        return dict(self.record["model"]["options"])

    @property
    def window(self) -> WindowSpec:
        """The window spec it was trained with."""
        return WindowSpec(**self.record["window"])

    @property
    def split(self) -> SplitSpec:
        """How its training run cut the splits."""
        return SplitSpec(**self.record["split"])

    @cached_property
    def stats(self) -> Stats:
        """The train statistics inputs are standardised with."""
        return Stats.from_dict(self.record["stats"])

    @property
    def identity(self) -> dict[str, Any]:
        """The identity of the store it was trained on."""
        return dict(self.record["store"])

    @property
    def features(self) -> dict[str, Any]:
        """Its feature layout (input, target and calendar channels, missing fill)."""
        return dict(self.record["features"])

    @property
    def contract(self) -> BatchContract:
        """The batch contract it was trained with."""
        f = self.features
        return BatchContract(
            input_features=tuple(f["input"]),
            target_features=tuple(f["target"]),
            time_of_day=bool(f["time_of_day"]),
            day_of_week=bool(f["day_of_week"]),
            fill_missing=bool(f["fill_missing"]),
        )

    def describe(self) -> dict[str, Any]:
        """Provenance as plain data: file, digest, epoch, model, window, features."""
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "epoch": self.epoch,
            "model": {"name": self.model_name, "options": self.model_options},
            "window": self.window.to_dict(),
            "features": self.features,
        }

    def check_store(self, store: Store) -> None:
        """Refuse a store the model cannot be used on, naming the difference.

        Raises
        ------
        StzarrError
            Other sensor ids, graph, features, missing-value convention or sampling interval,
            or a series shorter than one window.
        """
        diff = compatibility_differences(self.identity, store)
        if diff:
            raise StzarrError(
                f"{store.path} does not match the store {self.path.name} was trained on "
                f"({'; '.join(diff)})"
            )
        spec = self.window
        if store.shape[0] < spec.span:
            raise StzarrError(
                f"{store.path} has {store.shape[0]} steps, fewer than one window of the model "
                f"({spec.input_steps} input steps + horizon {spec.horizon})"
            )

    def target_indices(self, store: Store) -> list[int]:
        """Indices of the target features in ``store``."""
        return resolve_features(self.features["target"], store.feature_names)

    def build(self, store: Store, device: torch.device | str = "cpu") -> GraphForecaster:
        """The model on ``store``'s graph with the trained parameters, in eval mode."""
        f = self.features
        model = build_for_store(
            self.model_name,
            store,
            self.window,
            in_features=len(f["input"]) + len(f["calendar"]),
            out_features=len(f["target"]),
            **self.model_options,
        )
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise StzarrError(
                f"{self.path}: its parameters do not fit model {self.model_name!r} ({first})"
            ) from None
        return model.to(device).eval()


def open_trained(path: str | os.PathLike[str]) -> TrainedModel:
    """Read a checkpoint for evaluation or prediction.

    Parameters
    ----------
    path : path
        A checkpoint file, or a directory holding ``best.pt`` or ``last.pt``.

    Raises
    ------
    StzarrError
        When there is no checkpoint, it cannot be read, or it was written before checkpoints
        recorded their store and statistics (one line saying so).
    """
    file = checkpoint_file(path)
    try:
        # a stzarr checkpoint holds NumPy RNG state and plain Python objects, not just tensors
        data = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as exc:
        why = exc.__class__.__name__
        raise StzarrError(f"cannot read {file} as a checkpoint ({why})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise StzarrError(f"{file} is not a stzarr checkpoint")
    record = data.get("data") or {}
    if "store" not in record or "stats" not in record:
        raise StzarrError(
            f"{file} was written by an older stzarr: it records no store identity or train "
            "statistics (resume it for one more epoch, or train again, to get a checkpoint "
            "that does)"
        )
    return TrainedModel(file, sha256_file(file), data.get("epoch"), record, data["model"])


@dataclass(frozen=True)
class Selection:
    """The windows a command works on.

    Attributes
    ----------
    starts : numpy.ndarray
        Sorted global starts.
    label : str
        ``"split test"`` or ``"[start, stop)"``, for messages and provenance.
    """

    starts: np.ndarray
    label: str

    def plan(self, spec: WindowSpec, n_time: int) -> WindowPlan:
        """A window plan holding only these windows (as split ``"selected"``)."""
        lo = int(self.starts.min())
        hi = int(self.starts.max()) + spec.span
        return WindowPlan(spec, n_time, {"selected": (lo, hi)}, {"selected": self.starts})


def select_windows(
    store: Store,
    trained: TrainedModel,
    *,
    split: str | None = None,
    start: str | None = None,
    stop: str | None = None,
    future: bool = False,
) -> Selection:
    """The windows of ``split`` (default ``"test"``) cut as the training run cut its splits, or
    every window whose steps all lie in ``[start, stop)`` (timestamps; either may be omitted).

    Windows that read across a gap in time are dropped when the training run dropped them.
    ``future`` adds the windows whose inputs end in the last ``horizon`` steps of the store (one
    per step), their horizon running past its end: the last one forecasts from the last step.

    Raises
    ------
    SpecError
        For an unknown split, both a split and a time range, ``future`` with ``stop`` or a split
        other than the test split, or a selection holding no window.
    """
    spec, cut = trained.window, trained.split
    if split is not None and (start is not None or stop is not None):
        raise SpecError("give --split or --start/--stop, not both")
    if future and (stop is not None or split not in (None, "test")):
        raise SpecError("--future forecasts past the end of the store: not with --stop or a split")
    time = store.time
    n_time = len(time)
    if start is None and stop is None:
        split = split or "test"
        if split not in SPLITS:
            raise SpecError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
        starts = cut.plan(spec, time).starts[split]
        first = cut.bounds(time)[split][0]
        label = f"split {split}"
    else:
        try:
            lo, hi = (
                default if t is None else int(np.searchsorted(time, np.datetime64(t, "ns")))
                for t, default in ((start, 0), (stop, len(time)))
            )
        except ValueError as exc:
            raise SpecError(f"cannot parse timestamp ({exc})") from None
        label = f"[{start or 'start'}, {stop or 'end'})"
        first = lo
        need = spec.input_steps if future else spec.span
        if hi - lo < need:
            raise SpecError(
                f"{label} holds {max(0, hi - lo)} steps of {store.path}, fewer than one window "
                f"({need} steps)"
            )
        starts = np.zeros(0, dtype=np.int64)
        if hi - lo >= spec.span:
            plan = make_plan(
                n_time, spec, bounds={"selected": (lo, hi)}, time=time,
                exclude_gaps=cut.exclude_gaps,
            )  # fmt: skip
            starts = plan.starts["selected"]
    if future:
        tail_from = max(first, n_time - spec.span + 1, int(starts.max()) + 1 if starts.size else 0)
        starts = np.concatenate([starts, np.arange(tail_from, n_time - spec.input_steps + 1)])
        label += " and the future"
    if starts.size == 0:
        raise SpecError(f"{label} of {store.path} holds no window")
    return Selection(np.asarray(starts, dtype=np.int64), label)


def rank_batches(
    store: Store,
    trained: TrainedModel,
    starts: np.ndarray,
    *,
    batch_size: int,
    max_memory: int | None,
    device: torch.device,
) -> StreamingLoader:
    """``(x, y, missing)`` batches of ``starts`` in time order: consecutive ``batch_size``
    windows, streamed through ``max_memory`` bytes (one block when None)."""
    return StreamingLoader.from_starts(
        store,
        trained.stats,
        trained.window,
        starts,
        batch_size=batch_size,
        max_memory=max_memory,
        contract=trained.contract,
        shuffle=False,
        device=device,
    )


def extended_time(store: Store, lo: int, hi: int) -> np.ndarray:
    """Timestamps of steps ``lo .. hi - 1``, continued past the store's last step at its
    sampling interval."""
    time = store.time
    n_time = len(time)
    if hi <= n_time:
        return time[lo:hi]
    interval = store.attrs.get("sampling_interval_s")
    if interval:
        step = np.timedelta64(int(interval), "s")
    else:
        step = np.median(np.diff(time[-min(n_time, 1000) :]))
    extra = time[-1] + np.arange(1, hi - n_time + 1) * step
    return np.concatenate([time[lo:], extra.astype(time.dtype)])


def future_inputs(
    store: Store, trained: TrainedModel, starts: np.ndarray, device: torch.device
) -> torch.Tensor:
    """The inputs ``x`` of windows whose horizon runs past the end of the store (their targets
    unknown): the store's last steps, as missing readings beyond."""
    spec = trained.window
    n_time = store.shape[0]
    lo, hi = int(starts.min()), int(starts.max()) + spec.span
    block = np.full((hi - lo, *store.shape[1:]), np.nan, dtype=np.float32)
    store.read(lo, n_time, out=block[: n_time - lo])
    batcher = SeriesBatcher.from_array(
        block, extended_time(store, lo, hi), trained.stats, spec, offset=lo,
        missing_value=store.missing_value, device=device, feature_names=store.feature_names,
        copy=False, **trained.contract.batcher_options(),
    )  # fmt: skip
    return batcher.batch(starts)[0]


def shares(n: int, world_size: int, unit: int) -> list[tuple[int, int]]:
    """Contiguous index ranges of ``n`` windows for ``world_size`` ranks, every boundary a
    multiple of ``unit`` (so each rank's batches or output chunks are those of one process)."""
    pieces = np.array_split(np.arange(-(-n // unit)), world_size)
    return [
        (int(p[0]) * unit, min(n, (int(p[-1]) + 1) * unit)) if p.size else (n, n) for p in pieces
    ]


def set_rank_threads(world_size: int) -> None:
    """Share the CPU cores among ``world_size`` ranks of this host."""
    if world_size > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))


@dataclass(frozen=True)
class Job:
    """What every rank of a command needs (pickled to Dask workers).

    Attributes
    ----------
    store_path : str
    trained : TrainedModel
    starts : numpy.ndarray
        Every selected start (each rank takes its share).
    batch_size : int
    max_memory : int or None
    """

    store_path: str
    trained: TrainedModel
    starts: np.ndarray
    batch_size: int
    max_memory: int | None

    def run(self, fn: Any, workers: int, *args: Any, unit: int | None = None) -> list[Any]:
        """``fn(job, store, share, device, *args)`` on one process or ``workers`` ranks; each
        share is a range of indices into ``starts`` starting at a multiple of ``unit``
        (default: the batch size). Returns every rank's value in rank order."""
        pieces = shares(self.starts.size, workers, unit or self.batch_size)
        if workers == 1:
            return [fn(self, open_store(self.store_path), pieces[0], default_device(), *args)]
        results = launch(_rank, workers, fn, self, pieces, args)
        return [r.value for r in results]


def open_job(
    store: Store | str | os.PathLike[str],
    checkpoint: str | os.PathLike[str],
    *,
    split: str | None,
    start: str | None,
    stop: str | None,
    batch_size: int,
    max_memory: int | None,
    future: bool = False,
) -> tuple[Store, Job, Selection]:
    """Open ``store`` and ``checkpoint``, refuse a store the model cannot be used on, select
    the windows (:func:`select_windows`): the opened store, the job and the selection."""
    if not isinstance(store, Store):
        store = open_store(store)
    trained = open_trained(checkpoint)
    trained.check_store(store)
    selection = select_windows(store, trained, split=split, start=start, stop=stop, future=future)
    job = Job(store.path, trained, selection.starts, positive(batch_size), max_memory)
    return store, job, selection


def _rank(ctx: Any, fn: Any, job: Job, pieces: list[tuple[int, int]], args: tuple) -> Any:
    """Entry point of a rank under :func:`stzarr.training.launch.launch`."""
    set_rank_threads(ctx.world_size)
    return fn(job, open_store(job.store_path), pieces[ctx.rank], ctx.device, *args)


def positive(value: int) -> int:
    """``value`` when it is a positive integer (worker counts, batch sizes)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"expected a positive integer, got {value!r}")
    return value
