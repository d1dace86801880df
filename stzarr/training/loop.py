"""The stages of one rank's training run, each a function that receives what it needs.

:func:`prepare` (plan the rank's data, load it, build the model, optimiser and schedule, restore
a checkpoint), then for every epoch :func:`train_epoch` and :func:`evaluate`, then
:func:`evaluate` on the test split. :func:`stzarr.training.train.fit` strings them together;
logging, checkpoints, progress and memory sampling are callbacks
(:mod:`stzarr.training.callbacks`).

Loss and metrics: Adam on the masked MAE of de-standardised forecasts (missing targets
excluded). Losses and metric sums stay on the device during an epoch and are read back once at
its end (no per-batch host synchronisation).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from stzarr.data.calendar import is_subdaily
from stzarr.data.contract import BatchContract
from stzarr.data.rank import Batch, RankData, open_rank_data
from stzarr.errors import StzarrError
from stzarr.monitor import current_rss
from stzarr.plan.rank import RankPlan, plan_rank
from stzarr.plan.windows import WindowPlan
from stzarr.store.format import Store
from stzarr.store.stats import Stats
from stzarr.training.callbacks import BestTracker, Callback
from stzarr.training.checkpoint import BEST_NAME, Checkpoint, load_checkpoint, set_rng_state
from stzarr.training.collective import distributed, gather
from stzarr.training.config import TrainConfig
from stzarr.training.identity import data_record
from stzarr.training.metrics import MaskedMetrics, masked_mae
from stzarr.training.models import GraphForecaster, build_for_store
from stzarr.training.schedule import make_scheduler


@dataclass
class Session:
    """What :func:`prepare` builds for the epochs of one rank.

    Attributes
    ----------
    config : TrainConfig
    rank, world_size : int
    device : torch.device
    windows : WindowPlan
        The store's window plan.
    data : RankData
        The rank's batches (the one rank-data path).
    model : GraphForecaster
        The model; ``wrapped`` is the module trained (DDP wrapper or the model itself).
    optimizer, scheduler
        Adam and the optional learning-rate schedule (:mod:`stzarr.training.schedule`).
    steps_per_epoch : int
        Training batches per epoch (the same on every rank).
    first_epoch, step : int
        Where the run starts (past a restored checkpoint) and the optimiser steps taken.
    history : list of dict
        Records of the finished epochs.
    rss_before_data, rss_after_data : int
        Host RSS just before the rank's data is loaded (its baseline: interpreter, libraries,
        open store) and once data and model are ready.
    best : BestTracker
        The best epoch on validation MAE and early stopping (the same decisions on every rank).
    """

    config: TrainConfig
    rank: int
    world_size: int
    device: torch.device
    windows: WindowPlan
    data: RankData
    model: GraphForecaster
    wrapped: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR | None
    steps_per_epoch: int
    first_epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    rss_before_data: int = 0
    rss_after_data: int = 0
    best: BestTracker = field(default_factory=BestTracker)

    @cached_property
    def data_record(self) -> dict[str, Any]:
        """The checkpoints' :func:`~stzarr.training.identity.data_record` of this run: fixed for the
        run (graph hash and manifest digest included), so computed once, not every epoch."""
        run = self.config.run
        return data_record(
            self.data.store,
            model=run.model,
            model_options=run.model_options,
            window=self.config.window.to_dict(),
            split=dataclasses.asdict(self.config.split),
            train_bounds=self.windows.bounds["train"],
            stats=self.data.stats,
            options=self.data.contract.to_dict(),
        )


def plan_rank_of(
    store: Store, windows: WindowPlan, config: TrainConfig, *, rank: int, world_size: int
) -> tuple[RankPlan, BatchContract]:
    """The plan of rank ``rank`` under ``config`` and the batch contract it resolves to."""
    run = config.run
    contract = config.batch.resolve(
        subdaily=is_subdaily(store.attrs.get("sampling_interval_s")),
        missing_value=store.missing_value,
    )
    plan = plan_rank(
        windows,
        store,
        mode=run.mode,
        rank=rank,
        world_size=world_size,
        batch_size=run.batch_size,
        seed=run.seed,
        max_memory=run.max_memory,
        shuffle=run.shuffle,
        batch_bytes=contract.batch_bytes(store, config.window, run.batch_size),
    )
    return plan, contract


def prepare(
    store: Store,
    windows: WindowPlan,
    stats: Stats,
    config: TrainConfig,
    *,
    rank: int,
    world_size: int,
    device: torch.device,
) -> Session:
    """Plan and load the rank's data, build the model and optimiser, restore a checkpoint.

    Parameters
    ----------
    store : Store
        The open store.
    windows : WindowPlan
        Its window plan (``config.split.plan``).
    stats : Stats
        Train-split statistics.
    config : TrainConfig
    rank, world_size : int
    device : torch.device
    """
    run = config.run
    rank_plan, contract = plan_rank_of(store, windows, config, rank=rank, world_size=world_size)
    rss_before_data = current_rss()
    data = open_rank_data(store, rank_plan, stats, device=device, contract=contract)
    torch.manual_seed(run.seed)  # identical initial parameters on every rank
    model = build_for_store(
        run.model,
        store,
        config.window,
        in_features=data.n_input_features,
        out_features=data.n_target_features,
        **run.model_options,
        **({"recompute": True} if run.recompute else {}),
    ).to(device)
    wrapped: torch.nn.Module = model
    if distributed():
        wrapped = DistributedDataParallel(
            model,
            device_ids=[device] if device.type == "cuda" else None,
            forward_sync_buffers=False,  # the graph buffers are identical on every rank
        )
    steps = len(data.train)
    if run.max_batches is not None:
        steps = min(steps, run.max_batches)
    optimizer = torch.optim.Adam(
        wrapped.parameters(), lr=run.lr * (world_size if run.lr_scaling else 1)
    )
    scheduler = make_scheduler(optimizer, run, steps)
    session = Session(
        config, rank, world_size, device, windows, data, model, wrapped, optimizer, scheduler, steps
    )
    session.best = BestTracker(run.patience, share=lambda value: gather(value)[0])
    session.rss_before_data = rss_before_data
    session.rss_after_data = current_rss()
    if run.resume:
        _restore(session)
    return session


def _restore(s: Session) -> None:
    """Continue from the checkpoint of ``s.config`` (whose configuration
    :func:`stzarr.training.train.train` compared): parameters, optimiser, schedule, RNG."""
    ckpt = load_checkpoint(s.config.run.checkpoint_dir)
    if len(ckpt.rng) != s.world_size:
        raise StzarrError(
            f"--resume: the checkpoint has {len(ckpt.rng)} ranks, this run {s.world_size}"
        )
    s.model.load_state_dict(ckpt.model)
    s.optimizer.load_state_dict(ckpt.optimizer)
    if s.scheduler is not None and ckpt.scheduler is not None:
        s.scheduler.load_state_dict(ckpt.scheduler)
    s.first_epoch, s.step, s.history = ckpt.sampler_epoch, ckpt.step, list(ckpt.history)
    if ckpt.tracker is not None:
        directory = s.config.run.checkpoint_dir
        s.best.load_state_dict(ckpt.tracker, lambda epoch: _best_model(directory, ckpt, epoch))
    set_rng_state(ckpt.rng[s.rank])


def _best_model(directory: str, last: Checkpoint, epoch: int) -> dict[str, Any]:
    """The parameters of the best epoch ``epoch`` when resuming from ``last``: its own when it
    is that epoch (``best.pt`` is written after ``last.pt``, so it may lag), else ``best.pt``'s.
    """
    if last.epoch == epoch:
        return last.model
    best = load_checkpoint(directory, BEST_NAME)
    if best.epoch != epoch:
        raise StzarrError(
            f"--resume: {directory}/{BEST_NAME} holds epoch {best.epoch}, the run's best is {epoch}"
        )
    return best.model


@dataclass
class EpochResult:
    """What one rank did in one training epoch (losses already on the host)."""

    losses: list[float]
    lrs: list[float]
    metrics: MaskedMetrics
    samples: int
    seconds: float


def train_epoch(s: Session, epoch: int, callbacks: Sequence[Callback] = ()) -> EpochResult:
    """Run ``s.steps_per_epoch`` optimiser steps of epoch ``epoch`` (0-based), calling every
    callback's :meth:`~stzarr.training.callbacks.Callback.on_batch_end` after each."""
    run = s.config.run
    s.data.train.set_epoch(epoch)
    s.wrapped.train()
    metrics = MaskedMetrics(s.config.window.horizon)
    losses: list[torch.Tensor] = []
    lrs: list[float] = []
    samples = 0
    t0 = time.perf_counter()
    for k, (x, y, missing) in enumerate(s.data.train):
        if k >= s.steps_per_epoch:
            break
        samples += x.shape[0]
        # targets only feed scheduled sampling (the seq2seq model): missing ones as the mean
        pred = s.wrapped(x, targets=y.masked_fill(missing, 0.0), step=s.step)
        pred_raw, y_raw = s.data.inverse(pred), s.data.inverse(y)
        loss = masked_mae(pred_raw, y_raw, ~missing)
        s.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if run.clip_grad_norm is not None:
            # DDP has averaged the gradients: every rank clips the same ones alike
            torch.nn.utils.clip_grad_norm_(s.wrapped.parameters(), run.clip_grad_norm)
        lrs.append(s.optimizer.param_groups[0]["lr"])
        s.optimizer.step()
        if s.scheduler is not None:
            s.scheduler.step()
        s.step += 1
        losses.append(loss.detach())
        metrics.update(pred_raw.detach(), y_raw, ~missing)
        for callback in callbacks:
            callback.on_batch_end(s, k)
    host = torch.stack(losses).tolist() if losses else []  # the epoch's one host sync
    return EpochResult(host, lrs, metrics, samples, time.perf_counter() - t0)


@torch.no_grad()
def evaluate(model: GraphForecaster, batches: Any, data: RankData, horizon: int) -> MaskedMetrics:
    """Masked metrics of ``model`` on ``(x, y, missing)`` batches (not yet reduced over ranks).

    Parameters
    ----------
    model : GraphForecaster
        The unwrapped model (not the DDP wrapper).
    batches : iterable of (x, y, missing)
        E.g. :meth:`RankData.eval_batches`.
    data : RankData
        For :meth:`RankData.inverse`.
    horizon : int
    """
    metrics = MaskedMetrics(horizon)
    was_training = model.training
    model.eval()
    batch: Batch
    for batch in batches:
        x, y, missing = batch
        metrics.update(data.inverse(model(x)), data.inverse(y), ~missing)
    model.train(was_training)
    return metrics
