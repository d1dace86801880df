"""The training workflow: ``train(store, config)``, in one process or as PyTorch DDP ranks on Dask.

1. **Prepare** (:func:`train`): check the run can start, open the store once, plan the windows,
   get the train-split statistics (cached in the store as an explicit step, so a later run
   reuses them), then start the ranks.
2. **Each rank** (:func:`run_rank`): :func:`stzarr.training.loop.prepare` loads the rank's data
   through the one rank-data path (:mod:`stzarr.plan.rank`, :mod:`stzarr.data.rank`) and builds
   the model; :func:`fit` trains every epoch (:func:`~stzarr.training.loop.train_epoch`),
   validates, and hands the epoch's record to the callbacks (:func:`callbacks_of`: memory peaks,
   best epoch, TensorBoard, checkpoint, log, progress line); the test split is scored after the
   last epoch.

Modes are those of :data:`stzarr.plan.rank.MODES`; ``single`` and ``full`` with one worker draw
the same batches in the same order. Validation and test windows are split among ranks and the
masked metric sums are all-reduced, so reported metrics are exact over every window.

Measurements
------------
The run is split into preprocessing (statistics, window plan, loading and standardising the
series, building the model) and training (per epoch: training and evaluation seconds, samples
per second). Host RSS is sampled on a background thread
(:class:`~stzarr.training.callbacks.MemoryMonitor`, every ``memory_interval`` seconds) in every
rank; peak device memory is
``torch.cuda.max_memory_allocated``. The JSON log (``log_path``) is rewritten atomically after
every epoch; a checkpoint is written every epoch when ``checkpoint_dir`` is given, and
``resume=True`` continues from it bit-exactly.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stzarr.data.batcher import default_device
from stzarr.data.rank import check_budget
from stzarr.errors import StzarrError, StzarrWarning
from stzarr.plan.rank import DISTRIBUTED_MODES
from stzarr.plan.windows import WindowPlan
from stzarr.store.format import Store, absolute_location, open_store
from stzarr.store.stats import Stats, cache_stats, cached_stats, compute_stats
from stzarr.training.callbacks import (
    Callback,
    CheckpointWriter,
    LogWriter,
    MemoryMonitor,
    ProgressPrinter,
)
from stzarr.training.checkpoint import Checkpoint, check_training_outputs, load_checkpoint
from stzarr.training.checks import (
    check_device,
    check_options,
    check_ranks_have_windows,
    check_workers,
    warn_skipped_windows,
)
from stzarr.training.collective import distributed, gather
from stzarr.training.config import TrainConfig
from stzarr.training.history import earlier_trace
from stzarr.training.identity import resume_differences, store_identity
from stzarr.training.loop import (
    EpochResult,
    Session,
    evaluate,
    plan_rank_of,
    prepare,
    train_epoch,
)
from stzarr.training.tensorboard import TensorBoardLogger, require_tensorboard


@dataclass
class TrainResult:
    """What :func:`train` returns (rank 0's view of the run).

    Attributes
    ----------
    config : dict
        The run's :class:`~stzarr.training.config.TrainConfig` as plain data.
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


def _rank_log(s: Session) -> dict[str, Any]:
    """This rank's entry of the log's ``ranks``: its plan, what it holds and its baseline RSS."""
    return {
        **s.data.plan.to_dict(),
        **s.data.report(),
        "rss_before_data_bytes": s.rss_before_data,
        "rss_after_data_bytes": s.rss_after_data,
    }


def _skipped(s: Session) -> dict[str, Any]:
    """Windows each partitioned rank leaves out per epoch, and their fraction of the split."""
    parts = s.data.plan.partitions
    if parts is None:
        return {}
    batch = s.config.run.batch_size
    return {
        "skipped_per_epoch": parts.skipped(batch),
        "skipped_fraction": parts.skipped_fraction(batch),
    }


def _start_log(s: Session, memory: MemoryMonitor, stats: dict) -> dict:
    """The log once the rank's data and model are ready (preprocessing measured)."""
    preprocess_s = time.perf_counter() - memory.wall0
    pre = gather((memory.peak_since(0.0), memory.device_peak(), preprocess_s, _rank_log(s)))
    run = s.config.run
    return {
        "store": s.data.store.path,
        "config": s.config.to_dict(),
        "world_size": s.world_size,
        "device": str(s.device),
        "n_parameters": int(sum(p.numel() for p in s.model.parameters())),
        "plan": s.windows.to_dict(),
        "ranks": [p[3] for p in pre],
        "samples_per_epoch": s.steps_per_epoch * run.batch_size * s.world_size,
        **_skipped(s),
        "preprocess": {
            **stats,
            "seconds": max(p[2] for p in pre),
            "rank_seconds": [p[2] for p in pre],
            "peak_rss_bytes": [p[0] for p in pre],
            "peak_device_bytes": [p[1] for p in pre],
            "series_bytes": s.data.series_bytes,
        },
        "resumed_at_epoch": s.first_epoch if run.resume else None,
        "epochs": s.history,
    }


def _epoch_record(s: Session, epoch: int, done: EpochResult) -> dict[str, Any]:
    """Validate after epoch ``epoch`` (0-based); its log record from every rank's measurements
    (the callbacks add to it: :class:`MemoryMonitor` the peaks)."""
    run = s.config.run
    t1 = time.perf_counter()
    val = evaluate(s.model, s.data.eval_batches("val", run.eval_batches), s.data, s.model.horizon)
    done.metrics.all_reduce()
    val.all_reduce()
    eval_s = time.perf_counter() - t1
    report = s.data.report()
    streamed = report if report["train"] == "streamed" else None
    per_rank = gather((done.seconds, eval_s, done.samples, done.losses, streamed))
    samples = sum(r[2] for r in per_rank)
    # a step's loss under DDP: the mean of the ranks' losses, whose gradients DDP averages
    losses = (
        done.losses
        if s.world_size == 1
        else [sum(v) / len(v) for v in zip(*(r[3] for r in per_rank), strict=True)]
    )
    train_s = max(r[0] for r in per_rank)
    train = done.metrics.result(run.horizons)
    return {
        "epoch": epoch + 1,
        # the epoch's loss: masked MAE pooled over every valid target of the epoch's batches
        # (all ranks), as forecast during the epoch
        "loss": train["mae"],
        "batch_losses": losses,
        "batch_lr": done.lrs,
        "lr": s.optimizer.param_groups[0]["lr"],
        "batches": s.steps_per_epoch,
        "samples": samples,
        "train_s": train_s,
        "eval_s": max(r[1] for r in per_rank),
        "samples_per_s": samples / max(1e-9, train_s),
        "train": train,
        "val": val.result(run.horizons),
        # per rank that streams its training data: its stream counters so far (else None)
        "streams": [r[4] for r in per_rank],
    }


def run_rank(
    store: Store | str,
    windows: WindowPlan,
    stats: Stats,
    config: TrainConfig,
    *,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str | None = None,
    stats_s: float = 0.0,
    stats_cached: bool = False,
) -> dict[str, Any] | None:
    """Train as one rank (the process group, if any, is already initialised).

    ``store`` is the open store (one process) or its path (a DDP rank opens it once);
    ``stats_s`` and ``stats_cached`` (for the log): how long getting the statistics took and
    whether they came from the store's cache. Returns rank 0's result as plain data (``None``
    on the other ranks).
    """
    run = config.run
    if run.threads is not None:
        torch.set_num_threads(run.threads)
    if device is None:
        device = default_device() if run.mode != "single" else torch.device("cpu")
    device = torch.device(device)
    earlier = earlier_trace(run) if rank == 0 else None
    with MemoryMonitor(run.memory_interval, device, earlier) as memory:
        if not isinstance(store, Store):
            store = open_store(store)
        s = prepare(store, windows, stats, config, rank=rank, world_size=world_size, device=device)
        log = _start_log(s, memory, {"stats_s": stats_s, "stats_cached": stats_cached})
        state = fit(s, log, callbacks_of(s, memory))
    return {"log": log, "state_dict": state} if rank == 0 else None


def callbacks_of(s: Session, memory: MemoryMonitor) -> list[Callback]:
    """The rank's callbacks, in the order they act: memory peaks, the best epoch, TensorBoard
    (rank 0, if asked), the checkpoint (if asked), the log, the progress line."""
    run = s.config.run
    out: list[Callback] = [memory, s.best]
    if s.rank == 0 and run.tensorboard_dir is not None:
        out.append(TensorBoardLogger(run.tensorboard_dir))
    if run.checkpoint_dir is not None:
        out.append(CheckpointWriter(run.checkpoint_dir))
    return [*out, LogWriter(run.log_path, memory), ProgressPrinter(run.progress)]


def fit(s: Session, log: dict[str, Any], callbacks: list[Callback]) -> dict[str, torch.Tensor]:
    """The epochs (until ``epochs`` or early stopping), then the test split (``log["test"]``),
    with the callbacks; returns the last epoch's parameters (CPU copies)."""
    try:
        for epoch in range(s.first_epoch, s.config.run.epochs):
            if s.best.stop:
                break
            for callback in callbacks:
                callback.on_epoch_start(s, epoch)
            record = _epoch_record(s, epoch, train_epoch(s, epoch, callbacks))
            s.history.append(record)
            log["ranks"] = gather(_rank_log(s))
            for callback in callbacks:
                callback.on_epoch_end(s, record, log)
            if distributed():
                torch.distributed.barrier()
        state = {k: v.detach().cpu().clone() for k, v in s.model.state_dict().items()}
        log["test"] = _test(s)
        log["ranks"] = gather(_rank_log(s))
        for callback in callbacks:
            callback.on_train_end(s, log)
    finally:
        for callback in callbacks:
            callback.close()
    return state


def _test(s: Session) -> dict[str, Any]:
    """Masked metrics on the test split with the parameters ``test_on`` names (the best epoch's
    on validation MAE, or the last epoch's; the last when no epoch had a finite one)."""
    run = s.config.run
    best = s.best.load_best(s.model) if run.test_on == "best" else None
    t1 = time.perf_counter()
    test = evaluate(s.model, s.data.eval_batches("test", run.eval_batches), s.data, s.model.horizon)
    test.all_reduce()
    return {
        **test.result(run.horizons),
        "seconds": time.perf_counter() - t1,
        "parameters": "last" if best is None else "best",
        "parameters_epoch": len(s.history) if best is None else best,
    }


def _launched_rank(
    ctx: Any,
    path: str,
    windows: WindowPlan,
    stats: Stats,
    config: TrainConfig,
    stats_s: float,
    stats_cached: bool,
) -> dict[str, Any] | None:
    """Entry point of one DDP rank under :func:`stzarr.training.launch.launch`."""
    return run_rank(
        path,
        windows,
        stats,
        config,
        rank=ctx.rank,
        world_size=ctx.world_size,
        device=ctx.device,
        stats_s=stats_s,
        stats_cached=stats_cached,
    )


def preflight(config: TrainConfig) -> None:
    """Everything that must hold before any data is read or a cluster starts.

    The one place for checks of the run's targets (checkpoint, log, TensorBoard): today a
    resumed run needs its checkpoint, the targets must be writable, and ``--tensorboard`` needs
    the tensorboard package.
    """
    run = config.run
    check_options(config)
    check_device(config)
    check_workers(config)
    if run.tensorboard_dir is not None:
        require_tensorboard()
    check_training_outputs(run.checkpoint_dir, run.log_path, run.tensorboard_dir)
    if config.run.resume:
        load_checkpoint(config.run.checkpoint_dir)


def resumed_checkpoint(config: TrainConfig) -> Checkpoint:
    """The checkpoint ``--resume`` continues, after refusing, in one line naming them, options
    that differ from its configuration and would break bit-exact continuation."""
    checkpoint = load_checkpoint(config.run.checkpoint_dir)
    breaking = config.resume_diff(checkpoint.config)
    if breaking:
        raise StzarrError(
            "--resume: the checkpoint was written with another configuration ("
            + "; ".join(breaking)
            + ")"
        )
    return checkpoint


def resume_record(store: Store, windows: WindowPlan, checkpoint: Checkpoint) -> dict[str, Any]:
    """The data record of the ``checkpoint`` ``--resume`` continues, after refusing, in one line
    naming what differs, a store other than the one it was trained on. A checkpoint written
    before stores were recorded resumes with a warning (its record is empty)."""
    record = checkpoint.data
    if "store" not in record:
        warnings.warn(
            "--resume: the checkpoint does not record its store (written by an older stzarr); "
            "the store is not checked",
            StzarrWarning,
            stacklevel=2,
        )
        return {}
    diff = resume_differences(record["store"], store_identity(store, windows.bounds["train"]))
    if diff:
        raise StzarrError(
            f"--resume: the checkpoint was trained on another store ({'; '.join(diff)})"
        )
    return record


def check_resume_statistics(record: dict[str, Any], stats: Stats) -> None:
    """Refuse ``--resume`` when the train statistics differ from the checkpoint's: the same
    shape, sensors and graph, but other readings."""
    if "stats" not in record:
        return
    saved = Stats.from_dict(record["stats"])
    if saved.mean.shape != stats.mean.shape:
        what = f"shape {list(saved.mean.shape)} -> {list(stats.mean.shape)}"
    else:
        pairs = np.stack([saved.mean, saved.std]).reshape(2, -1)
        ours = np.stack([stats.mean, stats.std]).reshape(2, -1)
        differ = np.flatnonzero((pairs != ours).any(axis=0))
        if differ.size == 0:
            return
        i = int(differ[0])
        what = (
            f"entry {i}: mean {pairs[0, i]:.6g} -> {ours[0, i]:.6g}, "
            f"std {pairs[1, i]:.6g} -> {ours[1, i]:.6g}"
        )
    raise StzarrError(
        f"--resume: the checkpoint was trained on another store (train statistics {what})"
    )


def check_budgets(store: Store, windows: WindowPlan, config: TrainConfig) -> None:
    """Plan every rank's data under ``max_memory`` before any rank starts, so that a budget too
    small to stream is one line naming the size needed (nothing is read)."""
    run = config.run
    if run.max_memory is None:
        return
    for rank in range(run.world_size):
        plan, contract = plan_rank_of(store, windows, config, rank=rank, world_size=run.world_size)
        check_budget(store, plan, contract)


def train_statistics(store: Store, windows: WindowPlan) -> tuple[Stats, bool]:
    """The train split's statistics and whether they came from the store's cache; computed
    statistics are cached (an explicit step) so that the next run reuses them."""
    bounds = windows.bounds["train"]
    stats = cached_stats(store, bounds=bounds)
    if stats is not None:
        return stats, True
    stats = compute_stats(store, bounds=bounds)
    cache_stats(store, stats)
    return stats, False


def train(store: Store | str | os.PathLike[str], config: TrainConfig | None = None) -> TrainResult:
    """Train a forecaster on a store; score it on validation (every epoch) and test (at the end).

    Parameters
    ----------
    store : Store or path
        The Zarr store.
    config : TrainConfig, optional
        The run (default: every option at its default). Build one from its parts or with
        :meth:`TrainConfig.of`, e.g. ``TrainConfig.of(epochs=3, mode="partitioned",
        workers=2)``.

    Returns
    -------
    TrainResult
    """
    wall0 = time.perf_counter()
    config = TrainConfig() if config is None else config
    run = config.run
    if run.threads is None and run.mode in DISTRIBUTED_MODES:
        config = config.replace(threads=max(1, (os.cpu_count() or 1) // run.workers))
    preflight(config)
    if not isinstance(store, Store):
        store = open_store(store)
    t0 = time.perf_counter()
    windows = config.split.plan(config.window, store.time)
    check_ranks_have_windows(windows, config)
    warn_skipped_windows(store, windows, config)
    checkpoint = resumed_checkpoint(config) if run.resume else None
    record = {} if checkpoint is None else resume_record(store, windows, checkpoint)
    stats, cached = train_statistics(store, windows)
    check_resume_statistics(record, stats)
    changes = [] if checkpoint is None else config.resume_changes(checkpoint.config)
    if changes:  # the same store: the run continues with these changes
        warnings.warn("--resume: changed " + "; ".join(changes), StzarrWarning, stacklevel=2)
    stats_s = time.perf_counter() - t0
    check_budgets(store, windows, config)
    if run.mode in DISTRIBUTED_MODES:
        from stzarr.training.launch import launch

        # ranks may run in another working directory (an existing cluster's workers)
        config = config.replace(
            **{
                name: absolute_location(getattr(run, name))
                for name in ("checkpoint_dir", "log_path", "tensorboard_dir")
                if getattr(run, name) is not None
            }
        )
        results = launch(
            _launched_rank,
            config.run.world_size,
            absolute_location(store.path),
            windows,
            stats,
            config,
            stats_s,
            cached,
            scheduler_file=run.scheduler_file,
            scheduler_address=run.scheduler_address,
        )
        out = results[0].value
    else:
        out = run_rank(store, windows, stats, config, stats_s=stats_s, stats_cached=cached)
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
