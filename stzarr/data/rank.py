"""The one rank-data path: execute a :class:`~stzarr.plan.rank.RankPlan` against an open store.

For every mode the training loop gets the same things: training batches
(:class:`TrainBatches`: ``set_epoch``, ``len``, iteration yielding ``(x, y, missing)``),
evaluation batches per split (:meth:`RankData.eval_batches`) and the de-standardisation of
targets (:meth:`RankData.inverse`). A range the plan loads is read once into a
:class:`~stzarr.data.batcher.SeriesBatcher` (one zarr read, standardised in place); a range it
streams goes through a :class:`~stzarr.data.streaming.StreamingLoader`. The choice is the plan's
(:meth:`~stzarr.plan.rank.RankPlan.streams`); this module only executes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from stzarr.data.batcher import SeriesBatcher
from stzarr.data.contract import BatchContract, resolve_features
from stzarr.data.scaler import Scaler
from stzarr.data.streaming import StreamCounters, StreamingLoader, plan_store_stream
from stzarr.errors import StatsError
from stzarr.plan.rank import RankPlan
from stzarr.plan.sampler import Sampler
from stzarr.plan.stream import StreamPlan, rank_seed
from stzarr.store.format import Store
from stzarr.store.stats import Stats

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""``(x, y, missing)``: inputs, standardised targets, mask of missing targets."""


class LoadedBatches:
    """Training batches of a resident series: a sampler's starts, gathered by a batcher."""

    def __init__(self, batcher: SeriesBatcher, sampler: Sampler) -> None:
        self.batcher = batcher
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        """Select the sampler's order of ``epoch``."""
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Batch]:
        for starts in self.sampler:
            yield self.batcher.batch_masked(starts)


TrainBatches = LoadedBatches | StreamingLoader


def _in_order(batcher: SeriesBatcher, starts: np.ndarray, batch_size: int) -> Iterator[Batch]:
    for k in range(0, starts.size, batch_size):
        yield batcher.batch_masked(starts[k : k + batch_size])


def _load(
    store: Store,
    stats: Stats,
    plan: RankPlan,
    time_range: tuple[int, int],
    device: torch.device,
    contract: BatchContract,
) -> SeriesBatcher:
    return SeriesBatcher.from_store(
        store,
        stats,
        plan.windows.spec,
        time_range=time_range,
        device=device,
        **contract.batcher_options(),
    )


def stream_plan(
    store: Store, plan: RankPlan, starts: np.ndarray, contract: BatchContract
) -> StreamPlan:
    """The :class:`~stzarr.plan.stream.StreamPlan` of streaming ``starts`` under the rank's
    budget (``(x, y, missing)`` batches of ``contract``)."""
    return plan_store_stream(
        store,
        plan.windows.spec,
        starts,
        contract,
        batch_size=plan.batch_size,
        max_memory=plan.max_memory,
    )


def _stream(
    store: Store,
    stats: Stats,
    plan: RankPlan,
    starts: np.ndarray,
    device: torch.device,
    contract: BatchContract,
    *,
    shuffle: bool,
) -> StreamingLoader:
    seed, num_batches = plan.seed, None
    if shuffle and plan.partitions is not None:  # the partition's common steps per epoch
        seed = rank_seed(plan.seed, plan.rank)
        num_batches = plan.partitions.steps_per_epoch(plan.batch_size)
    return StreamingLoader(
        store,
        stats,
        stream_plan(store, plan, starts, contract),
        contract=contract,
        seed=seed,
        shuffle=shuffle,
        num_batches=num_batches,
        device=device,
    )


def check_budget(store: Store, plan: RankPlan, contract: BatchContract) -> None:
    """Plan every stream of a rank (training, and evaluation shares that do not fit) from the
    plan's numbers, reading nothing and building no loader.

    Raises
    ------
    SpecError
        When ``plan.max_memory`` cannot hold even the smallest streaming plan (one line naming
        the size needed), before any rank starts.
    """
    contract = contract.for_store(store)
    if plan.train_streamed:
        stream_plan(store, plan, plan.train_starts, contract)
    for split, starts in plan.eval_starts.items():
        if plan.eval_range(split) is not None and plan.streams(plan.windows.read_range(starts)):
            stream_plan(store, plan, starts, contract)


@dataclass
class RankData:
    """What one rank executes: its training batches, evaluation batches and target scale.

    Build it with :func:`open_rank_data`.
    """

    plan: RankPlan
    store: Store
    stats: Stats
    device: torch.device
    contract: BatchContract
    train: TrainBatches
    series: SeriesBatcher | None
    scaler: Scaler
    n_input_features: int
    n_target_features: int
    eval_streams: list[StreamCounters] = field(default_factory=list)
    eval_loaded_bytes: int = 0

    @property
    def series_bytes(self) -> int:
        """Bytes of the resident training series (0 when streamed)."""
        return 0 if self.series is None else self.series.nbytes

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """De-standardise target-shaped values to raw units (``y * std + mean``)."""
        return self.scaler.inverse(y)

    def eval_batches(self, split: str, max_batches: int | None = None) -> Iterator[Batch]:
        """The rank's share of ``split`` in time order, at most ``max_batches`` batches.

        Reads the share's range when the training series does not hold it (dropped once the
        iterator is), streaming it when the plan says so.
        """
        plan = self.plan
        starts = plan.eval_starts[split]
        if max_batches is not None:
            starts = starts[: max_batches * plan.batch_size]
        if starts.size == 0:
            return iter(())
        time_range = plan.eval_range(split)
        if time_range is None and self.series is not None:
            return _in_order(self.series, starts, plan.batch_size)
        time_range = plan.windows.read_range(starts)
        if plan.streams(time_range):
            args = (self.store, self.stats, plan, starts, self.device, self.contract)
            loader = _stream(*args, shuffle=False)
            self.eval_streams.append(loader.counters)
            return iter(loader)
        series = _load(self.store, self.stats, plan, time_range, self.device, self.contract)
        self.eval_loaded_bytes = max(self.eval_loaded_bytes, series.nbytes)
        return _in_order(series, starts, plan.batch_size)

    def report(self) -> dict[str, Any]:
        """What the rank held so far, for the JSON log (training and evaluation together).

        ``train``: ``"loaded"`` or ``"streamed"``; ``blocks_planned``: blocks of the training
        stream per epoch (1 when loaded whole); ``peak_series_bytes``: the most bytes of series
        resident at once (blocks counted by the streaming loaders, or the loaded ranges);
        ``wait_s``: seconds spent waiting for blocks not yet read.
        """
        streams = list(self.eval_streams)
        if isinstance(self.train, StreamingLoader):
            streams.append(self.train.counters)
            blocks = self.train.plan.n_blocks
        else:
            blocks = 1
        held = self.series_bytes  # resident all along when loaded, 0 when streamed
        peaks = [held + c.peak_resident_bytes for c in streams]
        peaks.append(held + self.eval_loaded_bytes)
        return {
            "train": "streamed" if isinstance(self.train, StreamingLoader) else "loaded",
            "blocks_planned": int(blocks),
            "blocks_read": int(sum(c.blocks_loaded for c in streams)),
            "peak_series_bytes": int(max(peaks)),
            "wait_s": float(sum(c.wait_seconds for c in streams)),
        }


def open_rank_data(
    store: Store,
    plan: RankPlan,
    stats: Stats,
    *,
    device: torch.device,
    contract: BatchContract | None = None,
) -> RankData:
    """Load (or prepare to stream) one rank's training data as ``plan`` says.

    Parameters
    ----------
    store : Store
        The open store the plan was made for.
    plan : RankPlan
    stats : Stats
        Train-split statistics (the same on every rank).
    device : torch.device
        Where the series lives and batches are built.
    contract : BatchContract, optional
        What a batch holds (default: :class:`~stzarr.data.contract.BatchContract`'s defaults for
        ``store``, those of ``stzarr train``).
    """
    if not isinstance(stats, Stats):
        raise StatsError(
            f"open_rank_data needs the train split's Stats, got {type(stats).__name__}; "
            "get them with stzarr.require_stats(store, bounds=...) before launching the ranks"
        )
    contract = (contract or BatchContract()).for_store(store)
    n_in, _, n_cal = contract.channels(store.feature_names)
    targets = resolve_features(contract.target_features, store.feature_names)
    series = None
    train: TrainBatches
    if plan.train_streamed:
        train = _stream(store, stats, plan, plan.train_starts, device, contract, shuffle=True)
    else:
        series = _load(store, stats, plan, plan.train_range, device, contract)
        train = LoadedBatches(series, plan.sampler())
    return RankData(
        plan=plan,
        store=store,
        stats=stats,
        device=device,
        contract=contract,
        train=train,
        series=series,
        scaler=Scaler.fit(stats, store.missing_value).select(targets),
        n_input_features=n_in + n_cal,
        n_target_features=len(targets),
    )
