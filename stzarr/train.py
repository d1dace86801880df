"""The training workflow: single process (CPU or device index-batching) or PyTorch DDP on Dask.

Modes
-----
``single``
    One process, the standardised series on the CPU (index-batching).
``device``
    One process, the series on CUDA when present (GPU-index-batching; CPU otherwise).
``full``
    DDP (distributed-index-batching): every rank holds the whole standardised series on its
    device and takes its share of a seeded global shuffle (:class:`~stzarr.sampler.
    GlobalShuffleSampler`); only gradients are exchanged.
``partitioned``
    DDP (generalized-distributed-index-batching): every rank reads from the store only its
    chunk-aligned range of training time plus the halo (:func:`~stzarr.partition.plan_partitions`)
    and shuffles the order of its fixed batches (:class:`~stzarr.sampler.BatchShuffleSampler`).

``single`` and ``full`` with one worker draw the same batches in the same order. Validation and
test windows are split among ranks (contiguous ranges in ``partitioned``, so a rank loads only
the range its evaluation windows read) and the masked metric sums are all-reduced, so reported
metrics are exact over every window.

Loss and metrics
----------------
Adam on the masked MAE of de-standardised forecasts (missing targets excluded). Each epoch logs
the training loss (mean of batch losses) and masked MAE/RMSE/MAPE on the training batches and on
validation; the test split is scored after the last epoch. Optional linear learning-rate scaling
with the global batch size (``lr * world_size``) with a linear warm-up (Goyal et al.).

Measurements
------------
The run is split into preprocessing (opening the store, statistics, window plan, loading and
standardising the series, building the model) and training (per epoch: training and evaluation
seconds, samples per second). Host RSS is sampled on a background thread
(:class:`~stzarr.monitor.MemorySampler`, every ``memory_interval`` seconds; the paper samples
every second) in every rank; peak device memory is ``torch.cuda.max_memory_allocated``. The JSON
log (``log_path``) is rewritten atomically after every epoch; a checkpoint is written every epoch
when ``checkpoint_dir`` is given, and ``resume=True`` continues from it bit-exactly.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from stzarr.checkpoint import Checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from stzarr.errors import SpecError, StzarrError
from stzarr.features import is_subdaily
from stzarr.loader import SeriesBatcher, default_device
from stzarr.metrics import DEFAULT_HORIZONS, MaskedMetrics, masked_mae
from stzarr.models import MODELS, GraphForecaster, build_model
from stzarr.monitor import MemorySampler
from stzarr.partition import plan_partitions
from stzarr.sampler import GlobalShuffleSampler
from stzarr.stats import Stats, compute_stats
from stzarr.store import Store, open_store
from stzarr.windows import WindowPlan, WindowSpec, make_plan

MODES = ("single", "device", "full", "partitioned")
DISTRIBUTED_MODES = ("full", "partitioned")
# configuration keys that must match for --resume to continue the same run
RESUME_KEYS = (
    "model",
    "mode",
    "workers",
    "batch_size",
    "lr",
    "input_steps",
    "horizon",
    "stride",
    "shuffle",
    "seed",
    "lr_scaling",
    "warmup_epochs",
    "max_batches",
    "model_options",
    "train_fraction",
    "val_fraction",
    "time_of_day",
    "target_features",
    "fill_missing",
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on: plain data (``to_dict`` for the log and checkpoints).

    See :func:`train` for the meaning of each field.
    """

    store: str
    model: str = "dcrnn"
    mode: str = "single"
    workers: int = 1
    epochs: int = 1
    batch_size: int = 64
    lr: float = 0.01
    input_steps: int = 12
    horizon: int = 12
    stride: int = 1
    shuffle: str = "window"
    seed: int = 0
    checkpoint_dir: str | None = None
    resume: bool = False
    scheduler_file: str | None = None
    scheduler_address: str | None = None
    lr_scaling: bool = False
    warmup_epochs: float = 1.0
    max_batches: int | None = None
    eval_batches: int | None = None
    log_path: str | None = None
    train_fraction: float = 0.7
    val_fraction: float = 0.1
    time_of_day: bool | None = None
    target_features: tuple[str, ...] | None = None
    fill_missing: bool | None = None
    threads: int | None = None
    progress: bool = True
    memory_interval: float = 0.2
    horizons: tuple[int, ...] = DEFAULT_HORIZONS
    model_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise SpecError(f"unknown model {self.model!r} (choose from {', '.join(MODELS)})")
        if self.mode not in MODES:
            raise SpecError(f"unknown mode {self.mode!r} (choose from {', '.join(MODES)})")
        for name in ("workers", "epochs", "batch_size", "input_steps", "horizon"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise SpecError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_batches", "eval_batches", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SpecError(f"{name} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise SpecError(f"lr must be positive, got {self.lr}")
        if self.mode not in DISTRIBUTED_MODES and self.workers != 1:
            raise SpecError(
                f"mode {self.mode!r} runs one process; use --mode full or "
                f"partitioned for {self.workers} workers"
            )
        if self.resume and self.checkpoint_dir is None:
            raise SpecError("--resume needs --checkpoint DIR")

    @property
    def world_size(self) -> int:
        """Number of ranks (1 in the single-process modes)."""
        return self.workers if self.mode in DISTRIBUTED_MODES else 1

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for JSON."""
        d = asdict(self)
        d["horizons"] = list(self.horizons)
        d["target_features"] = None if self.target_features is None else list(self.target_features)
        return d


@dataclass
class TrainResult:
    """What :func:`train` returns (rank 0's view of the run).

    Attributes
    ----------
    config : dict
        The run's :class:`TrainConfig` as plain data.
    history : list of dict
        One record per epoch (the JSON log's ``epochs``).
    test : dict
        Masked metrics on the test split after the last epoch.
    log : dict
        The whole JSON log.
    state_dict : dict
        Final model parameters (CPU tensors).
    wall_s : float
        Seconds from the call to the return.
    """

    config: dict[str, Any]
    history: list[dict[str, Any]]
    test: dict[str, Any]
    log: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    wall_s: float

    @property
    def val(self) -> dict[str, Any]:
        """Validation metrics of the last epoch."""
        return self.history[-1]["val"] if self.history else {}

    @property
    def losses(self) -> list[float]:
        """Mean training loss of every epoch."""
        return [float(r["loss"]) for r in self.history]


# -- helpers ----------------------------------------------------------------------------------


def _write_json(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (temporary sibling, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.write_text(json.dumps(data, indent=1, allow_nan=True))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _gather(obj: Any) -> list[Any]:
    """``all_gather_object`` over ranks (a one-element list without a process group)."""
    if not _distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _barrier() -> None:
    if _distributed():
        dist.barrier()


def _time_of_day(config: TrainConfig, store: Store) -> bool:
    if config.time_of_day is not None:
        return config.time_of_day
    return is_subdaily(store.attrs.get("sampling_interval_s"))


def _fill_missing(config: TrainConfig, store: Store) -> bool:
    if config.fill_missing is not None:
        return config.fill_missing
    return store.missing_value == "nan"


def _plan(config: TrainConfig, store: Store) -> WindowPlan:
    spec = WindowSpec(config.input_steps, config.horizon, config.stride)
    return make_plan(store.shape[0], spec, train=config.train_fraction, val=config.val_fraction)


def _peak_since(sampler: MemorySampler, t0: float) -> int:
    return max((rss for t, rss in sampler.trace if t >= t0), default=sampler.sample())


def _device_peak(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    return int(torch.cuda.max_memory_allocated(device))


def _reset_device_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


@dataclass
class _RankData:
    """What one rank executes: its batchers and the starts it trains and evaluates on."""

    train: SeriesBatcher
    sampler: Any
    eval_batchers: dict[str, SeriesBatcher | None]
    eval_starts: dict[str, np.ndarray]


def _eval_share(starts: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Contiguous share of evaluation windows for ``rank`` (may be empty)."""
    return np.array_split(starts, world_size)[rank]


def _load(
    config: TrainConfig,
    store: Store,
    plan: WindowPlan,
    stats: Stats,
    rank: int,
    world_size: int,
    device: torch.device,
) -> _RankData:
    options = dict(
        device=device,
        time_of_day=_time_of_day(config, store),
        target_features=config.target_features,
        fill_missing=_fill_missing(config, store),
    )
    train_starts = plan.starts["train"]
    if config.mode == "partitioned":
        partitions = plan_partitions(
            plan,
            chunk_time=store.chunk_time,
            world_size=world_size,
            n_node=store.shape[1],
            n_feature=store.shape[2],
        )
        own = partitions.partitions[rank]
        batcher = SeriesBatcher.from_store(
            store, stats, plan.spec, time_range=own.time_range, **options
        )
        sampler = partitions.sampler(
            rank, config.batch_size, seed=config.seed, shuffle=config.shuffle
        )
        eval_batchers: dict[str, SeriesBatcher | None] = {}
        eval_starts = {}
        for split in ("val", "test"):
            mine = _eval_share(plan.starts[split], rank, world_size)
            eval_starts[split] = mine
            eval_batchers[split] = None  # loaded when needed (bounded memory)
        return _RankData(batcher, sampler, eval_batchers, eval_starts)
    batcher = SeriesBatcher.from_store(store, stats, plan.spec, **options)
    sampler = GlobalShuffleSampler(
        train_starts, config.batch_size, world_size=world_size, rank=rank, seed=config.seed
    )
    eval_starts = {s: _eval_share(plan.starts[s], rank, world_size) for s in ("val", "test")}
    return _RankData(batcher, sampler, {"val": batcher, "test": batcher}, eval_starts)


def _eval_batcher(
    config: TrainConfig,
    store: Store,
    plan: WindowPlan,
    stats: Stats,
    data: _RankData,
    split: str,
    device: torch.device,
) -> SeriesBatcher | None:
    starts = data.eval_starts[split]
    if starts.size == 0:
        return None
    held = data.eval_batchers[split]
    if held is not None:
        return held
    lo, hi = plan.read_range(starts)
    return SeriesBatcher.from_store(
        store,
        stats,
        plan.spec,
        time_range=(lo, hi),
        device=device,
        time_of_day=_time_of_day(config, store),
        target_features=config.target_features,
        fill_missing=_fill_missing(config, store),
    )


def _batches(starts: np.ndarray, batch_size: int, limit: int | None) -> Iterator[np.ndarray]:
    n = math.ceil(starts.size / batch_size)
    if limit is not None:
        n = min(n, limit)
    for k in range(n):
        yield starts[k * batch_size : (k + 1) * batch_size]


@torch.no_grad()
def evaluate(
    model: GraphForecaster,
    batcher: SeriesBatcher | None,
    starts: np.ndarray,
    batch_size: int,
    *,
    max_batches: int | None = None,
) -> MaskedMetrics:
    """Masked metrics of ``model`` on the windows ``starts`` (not yet reduced over ranks).

    Parameters
    ----------
    model : GraphForecaster
        The unwrapped model (not the DDP wrapper).
    batcher : SeriesBatcher or None
        Holds the time range ``starts`` read (None when ``starts`` is empty).
    starts : numpy.ndarray
        Global window starts.
    batch_size : int
    max_batches : int, optional
        Score only the first ``max_batches`` batches.
    """
    metrics = MaskedMetrics(model.horizon)
    if batcher is None or starts.size == 0:
        return metrics
    was_training = model.training
    model.eval()
    for batch in _batches(starts, batch_size, max_batches):
        x, y, missing = batcher.batch_masked(batch)
        pred = model(x)
        metrics.update(batcher.inverse(pred), batcher.inverse(y), ~missing)
    model.train(was_training)
    return metrics


def _check_resume(config: TrainConfig, saved: dict[str, Any]) -> None:
    ours = config.to_dict()
    for key in RESUME_KEYS:
        if ours.get(key) != saved.get(key):
            raise StzarrError(
                f"--resume: the checkpoint was written with {key}={saved.get(key)!r}, this run "
                f"has {key}={ours.get(key)!r}"
            )


def _scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR | None:
    if not config.lr_scaling:
        return None
    warmup = max(1, round(config.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))


# -- one rank ---------------------------------------------------------------------------------


def run_rank(
    config: TrainConfig,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str | None = None,
    stats_s: float = 0.0,
) -> dict[str, Any] | None:
    """Run the training loop as one rank (the process group, if any, is already initialised).

    Returns rank 0's result as plain data (``None`` on the other ranks). Used by :func:`train`
    directly (single-process modes) and through :func:`stzarr.launch.launch` (DDP modes).
    """
    wall0 = time.perf_counter()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    if device is None:
        device = default_device() if config.mode != "single" else torch.device("cpu")
    device = torch.device(device)
    lead = rank == 0
    with MemorySampler(interval=config.memory_interval) as memory:
        # ---- preprocessing
        t_pre = time.perf_counter()
        _reset_device_peak(device)
        store = open_store(config.store)
        plan = _plan(config, store)
        stats = compute_stats(store, bounds=plan.bounds["train"])  # cached by train()
        data = _load(config, store, plan, stats, rank, world_size, device)
        torch.manual_seed(config.seed)  # identical initial parameters on every rank
        model = build_model(
            config.model,
            n_node=store.shape[1],
            in_features=data.train.n_input_features,
            out_features=data.train.n_target_features,
            input_steps=config.input_steps,
            horizon=config.horizon,
            edge_index=store.edge_index,
            edge_weight=store.edge_weight,
            **config.model_options,
        ).to(device)
        wrapped: torch.nn.Module = model
        if _distributed():
            wrapped = DistributedDataParallel(
                model,
                device_ids=[device] if device.type == "cuda" else None,
                forward_sync_buffers=False,  # the graph buffers are identical on every rank
            )
        steps_per_epoch = len(data.sampler)
        if config.max_batches is not None:
            steps_per_epoch = min(steps_per_epoch, config.max_batches)
        lr = config.lr * (world_size if config.lr_scaling else 1)
        optimizer = torch.optim.Adam(wrapped.parameters(), lr=lr)
        scheduler = _scheduler(config, optimizer, steps_per_epoch)
        history: list[dict[str, Any]] = []
        first_epoch, step = 0, 0
        if config.resume:
            ckpt = load_checkpoint(config.checkpoint_dir)
            _check_resume(config, ckpt.config)
            if len(ckpt.rng) != world_size:
                raise StzarrError(
                    f"--resume: the checkpoint has {len(ckpt.rng)} ranks, this run {world_size}"
                )
            model.load_state_dict(ckpt.model)
            optimizer.load_state_dict(ckpt.optimizer)
            if scheduler is not None and ckpt.scheduler is not None:
                scheduler.load_state_dict(ckpt.scheduler)
            first_epoch, step, history = ckpt.sampler_epoch, ckpt.step, list(ckpt.history)
            set_rng_state(ckpt.rng[rank])
        preprocess_s = time.perf_counter() - t_pre
        pre_peaks = _gather((_peak_since(memory, 0.0), _device_peak(device), preprocess_s))
        log: dict[str, Any] = {
            "config": config.to_dict(),
            "world_size": world_size,
            "device": str(device),
            "n_parameters": int(sum(p.numel() for p in model.parameters())),
            "plan": plan.to_dict(),
            "samples_per_epoch": steps_per_epoch * config.batch_size * world_size,
            "preprocess": {
                "stats_s": stats_s,
                "seconds": max(p[2] for p in pre_peaks),
                "rank_seconds": [p[2] for p in pre_peaks],
                "peak_rss_bytes": [p[0] for p in pre_peaks],
                "peak_device_bytes": [p[1] for p in pre_peaks],
                "series_bytes": data.train.nbytes,
            },
            "resumed_at_epoch": first_epoch if config.resume else None,
            "epochs": history,
        }

        # ---- training
        for epoch in range(first_epoch, config.epochs):
            t_epoch = memory.trace[-1][0] if memory.trace else 0.0
            _reset_device_peak(device)
            data.sampler.set_epoch(epoch)
            wrapped.train()
            train_metrics = MaskedMetrics(config.horizon)
            losses = []
            n_samples = 0
            t0 = time.perf_counter()
            bar = tqdm(
                total=steps_per_epoch,
                desc=f"epoch {epoch + 1}/{config.epochs}",
                unit="batch",
                disable=not (lead and config.progress),
                leave=False,
            )
            for k, starts in enumerate(data.sampler):
                if k >= steps_per_epoch:
                    break
                x, y, missing = data.train.batch_masked(starts)
                n_samples += len(starts)
                # targets only feed scheduled sampling (dcrnn-seq2seq): missing ones as the mean
                pred = wrapped(x, targets=y.masked_fill(missing, 0.0), step=step)
                pred_raw, y_raw = data.train.inverse(pred), data.train.inverse(y)
                loss = masked_mae(pred_raw, y_raw, ~missing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                step += 1
                losses.append(float(loss.detach()))
                train_metrics.update(pred_raw.detach(), y_raw, ~missing)
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            bar.close()
            train_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            val_batcher = _eval_batcher(config, store, plan, stats, data, "val", device)
            val_metrics = evaluate(
                model,
                val_batcher,
                data.eval_starts["val"],
                config.batch_size,
                max_batches=config.eval_batches,
            )
            del val_batcher
            train_metrics.all_reduce()
            val_metrics.all_reduce()
            eval_s = time.perf_counter() - t1
            per_rank = _gather(
                (train_s, eval_s, _peak_since(memory, t_epoch), _device_peak(device), n_samples)
            )
            samples = sum(r[4] for r in per_rank)
            train_result = train_metrics.result(config.horizons)
            record = {
                "epoch": epoch + 1,
                # the epoch's loss: masked MAE pooled over every valid target of the epoch's
                # batches (all ranks), as forecast during the epoch
                "loss": train_result["mae"],
                "batch_losses": losses if world_size == 1 else None,
                "lr": optimizer.param_groups[0]["lr"],
                "batches": steps_per_epoch,
                "samples": samples,
                "train_s": max(r[0] for r in per_rank),
                "eval_s": max(r[1] for r in per_rank),
                "samples_per_s": samples / max(1e-9, max(r[0] for r in per_rank)),
                "train": train_result,
                "val": val_metrics.result(config.horizons),
                "peak_rss_bytes": [r[2] for r in per_rank],
                "peak_device_bytes": [r[3] for r in per_rank],
                "end_s": time.perf_counter() - wall0,
            }
            history.append(record)
            ranks_rng = _gather(rng_state()) if config.checkpoint_dir else None
            traces = _traces(memory) if config.log_path else None
            if lead:
                if config.checkpoint_dir:
                    save_checkpoint(
                        config.checkpoint_dir,
                        Checkpoint(
                            epoch=epoch + 1,
                            step=step,
                            model=model.state_dict(),
                            optimizer=optimizer.state_dict(),
                            scheduler=None if scheduler is None else scheduler.state_dict(),
                            rng=ranks_rng,
                            sampler_epoch=epoch + 1,
                            history=history,
                            config=config.to_dict(),
                        ),
                    )
                if config.log_path:
                    log["memory_trace"] = traces
                    _write_json(config.log_path, log)
                if config.progress:
                    val = record["val"]
                    tqdm.write(
                        f"epoch {epoch + 1}/{config.epochs}: loss {record['loss']:.4f}  "
                        f"val MAE {val['mae']:.4f} RMSE {val['rmse']:.4f}  "
                        f"{record['train_s']:.1f}s train, {record['eval_s']:.1f}s eval"
                    )
            _barrier()

        # ---- test
        t1 = time.perf_counter()
        test_batcher = _eval_batcher(config, store, plan, stats, data, "test", device)
        test_metrics = evaluate(
            model,
            test_batcher,
            data.eval_starts["test"],
            config.batch_size,
            max_batches=config.eval_batches,
        )
        test_metrics.all_reduce()
        del test_batcher
        log["test"] = test_metrics.result(config.horizons)
        log["test"]["seconds"] = time.perf_counter() - t1
    log["memory_trace"] = _traces(memory)
    log["peak_rss_bytes"] = [t["peak_rss_bytes"] for t in log["memory_trace"]["ranks"]]
    log["wall_s"] = time.perf_counter() - wall0
    if lead and config.log_path:
        _write_json(config.log_path, log)
    if not lead:
        return None
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {"log": log, "state_dict": state}


def _traces(memory: MemorySampler) -> dict[str, Any]:
    """Host-RSS traces of every rank as plain data (seconds since the rank started, bytes)."""
    ranks = _gather([(round(t, 3), int(rss)) for t, rss in memory.trace])
    return {
        "interval_s": memory.interval,
        "ranks": [
            {"peak_rss_bytes": max((r for _, r in tr), default=0), "trace": tr} for tr in ranks
        ],
    }


def _launched_rank(ctx: Any, config: TrainConfig, stats_s: float) -> dict[str, Any] | None:
    """Entry point of one DDP rank under :func:`stzarr.launch.launch`."""
    return run_rank(config, ctx.rank, ctx.world_size, ctx.device, stats_s)


# -- public entry point -----------------------------------------------------------------------


def train(
    store: Store | str | os.PathLike[str],
    *,
    model: str = "dcrnn",
    mode: str = "single",
    workers: int = 1,
    epochs: int = 1,
    batch_size: int = 64,
    lr: float = 0.01,
    input_steps: int = 12,
    horizon: int = 12,
    stride: int = 1,
    shuffle: str = "window",
    seed: int = 0,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    scheduler_file: str | None = None,
    scheduler_address: str | None = None,
    lr_scaling: bool = False,
    warmup_epochs: float = 1.0,
    max_batches: int | None = None,
    eval_batches: int | None = None,
    log_path: str | os.PathLike[str] | None = None,
    train_fraction: float = 0.7,
    val_fraction: float = 0.1,
    time_of_day: bool | None = None,
    target_features: Sequence[str] | None = None,
    fill_missing: bool | None = None,
    threads: int | None = None,
    progress: bool = True,
    memory_interval: float = 0.2,
    horizons: Sequence[int] = DEFAULT_HORIZONS,
    model_options: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a forecaster on a store and score it on validation (every epoch) and test (at the end).

    Parameters
    ----------
    store : Store or path
        The Zarr store (statistics of the train split are computed and cached in it).
    model : str
        ``"dcrnn"``, ``"dcrnn-seq2seq"`` or ``"a3tgcn"`` (:func:`stzarr.models.build_model`).
    mode : str
        ``"single"``, ``"device"``, ``"full"`` or ``"partitioned"`` (see the module docstring).
    workers : int
        DDP ranks (``full`` and ``partitioned`` only).
    epochs, batch_size, lr : int, int, float
        Epochs in total (a resumed run continues up to ``epochs``), samples per batch per rank,
        Adam learning rate.
    input_steps, horizon : int
        Window shape (``T_in``, ``T_out``).
    seed : int
        Seeds model initialisation and the samplers.
    checkpoint_dir : path, optional
        Write ``last.pt`` there after every epoch.
    resume : bool
        Continue from ``checkpoint_dir`` (same configuration required).
    scheduler_file, scheduler_address : str, optional
        Run the DDP ranks on an existing Dask cluster instead of a ``LocalCluster``.
    lr_scaling : bool
        Multiply ``lr`` by the number of ranks (global batch / per-rank batch), with a linear
        warm-up over ``warmup_epochs`` epochs.
    max_batches : int, optional
        Training batches per epoch (bounded runs, demos, benchmarks).
    eval_batches : int, optional
        Evaluation batches per rank per split (default: every window).
    log_path : path, optional
        JSON log, rewritten after every epoch.
    train_fraction, val_fraction : float
        Split fractions along time (test takes the rest).
    time_of_day : bool, optional
        Append the time-of-day feature to the inputs (default: when sampled more than daily).
    target_features : sequence of str, optional
        Features to forecast (default: all data features).
    fill_missing : bool, optional
        Replace missing inputs by 0 (the train mean) in batches. Default: only for stores whose
        missing readings are NaN (``missing_value="nan"``); under ``"zero"`` missing inputs keep
        their standardised value ``(0 - mean) / std``, as DCRNN's and PGT's pipelines feed them.
        Missing targets are excluded from the loss and metrics either way.
    threads : int, optional
        ``torch.set_num_threads`` in every rank (default: torch's choice, or
        ``cpu_count // workers`` in DDP modes).
    progress : bool
        Progress bar and one line per epoch on rank 0.
    memory_interval : float
        Seconds between host-RSS samples.
    horizons : sequence of int
        Horizon steps reported separately (default 3/6/12).
    model_options : dict, optional
        Hyper-parameters passed to the model (e.g. ``{"hidden": 32}``).

    Returns
    -------
    TrainResult
    """
    wall0 = time.perf_counter()
    if not isinstance(store, Store):
        store = open_store(store)
    if threads is None and mode in DISTRIBUTED_MODES:
        threads = max(1, (os.cpu_count() or 1) // workers)
    config = TrainConfig(
        store=store.path,
        model=model,
        mode=mode,
        workers=workers,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        input_steps=input_steps,
        horizon=horizon,
        stride=stride,
        shuffle=shuffle,
        seed=seed,
        checkpoint_dir=None if checkpoint_dir is None else os.fspath(checkpoint_dir),
        resume=resume,
        scheduler_file=scheduler_file,
        scheduler_address=scheduler_address,
        lr_scaling=lr_scaling,
        warmup_epochs=warmup_epochs,
        max_batches=max_batches,
        eval_batches=eval_batches,
        log_path=None if log_path is None else os.fspath(log_path),
        train_fraction=train_fraction,
        val_fraction=val_fraction,
        time_of_day=time_of_day,
        target_features=None if target_features is None else tuple(target_features),
        fill_missing=fill_missing,
        threads=threads,
        progress=progress,
        memory_interval=memory_interval,
        horizons=tuple(int(h) for h in horizons),
        model_options=dict(model_options or {}),
    )
    if resume:
        load_checkpoint(config.checkpoint_dir)  # fail early, before any cluster starts
    # statistics once, before any rank starts, so that ranks read them from the store's cache
    t0 = time.perf_counter()
    plan = _plan(config, store)
    compute_stats(store, bounds=plan.bounds["train"])
    stats_s = time.perf_counter() - t0
    if mode in DISTRIBUTED_MODES:
        from stzarr.launch import launch

        results = launch(
            _launched_rank,
            config.world_size,
            config,
            stats_s,
            scheduler_file=scheduler_file,
            scheduler_address=scheduler_address,
        )
        out = results[0].value
    else:
        out = run_rank(config, stats_s=stats_s)
    if out is None:
        raise StzarrError("rank 0 returned no result")
    log = out["log"]
    return TrainResult(
        config=config.to_dict(),
        history=log["epochs"],
        test=log["test"],
        log=log,
        state_dict=out["state_dict"],
        wall_s=time.perf_counter() - wall0,
    )
