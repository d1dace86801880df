"""stzarr's loaders in PyTorch Lightning (optional extra ``lightning``).

:class:`StzarrDataModule` plans and opens the data of the rank Lightning assigns
(``trainer.global_rank`` of ``trainer.world_size``) through the one rank-data path of
``stzarr train`` (:func:`stzarr.plan.rank.plan_rank`, :func:`stzarr.data.rank.open_rank_data`):

* ``mode="full"``: every rank holds the standardised series and draws its share of a seeded
  global shuffle; ``mode="partitioned"``: every rank reads only its chunk-aligned time range;
* with ``max_memory`` a rank whose range does not fit streams it in blocks;
* the train, validation and test loaders are stzarr's own iterables of ``(x, y, missing)``
  batches, not ``DataLoader`` objects, so Lightning has no sampler to replace: nothing wraps
  them in a ``DistributedSampler`` (``use_distributed_sampler=False`` says so explicitly);
* :attr:`StzarrDataModule.scaler` de-standardises forecasts with the train statistics.

The training order is that of ``stzarr train`` for the same seed: :class:`ForecastModule`
trained on this module with Adam reproduces its loss curve (``tests/test_lightning.py``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch

from stzarr.data.calendar import is_subdaily
from stzarr.data.contract import BatchContract, resolve_features
from stzarr.data.rank import Batch, RankData, open_rank_data
from stzarr.data.scaler import Scaler
from stzarr.plan.windows import WindowPlan, WindowSpec
from stzarr.store.format import Store, open_store
from stzarr.store.stats import Stats, cache_stats, cached_stats, compute_stats
from stzarr.training.config import BatchOptions, SplitSpec, TrainConfig
from stzarr.training.loop import plan_rank_of
from stzarr.training.metrics import masked_mae
from stzarr.training.models import GraphForecaster, build_for_store


class EpochBatches:
    """The training batches of a rank as a re-iterable: each iteration is the next epoch
    (its sampler set to that epoch), at most ``steps`` batches."""

    def __init__(self, data: RankData, steps: int, trainer: Any = None) -> None:
        self.data, self.steps, self.trainer = data, steps, trainer
        self.epoch = 0

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.epoch if self.trainer is None else int(self.trainer.current_epoch)
        self.epoch = epoch + 1
        self.data.train.set_epoch(epoch)
        for k, batch in enumerate(self.data.train):
            if k >= self.steps:
                break
            yield batch


class EvalBatches:
    """A rank's share of an evaluation split in time order, read again on every iteration."""

    def __init__(self, data: RankData, split: str) -> None:
        self.data, self.split = data, split

    def __iter__(self) -> Iterator[Batch]:
        return self.data.eval_batches(self.split)


class StzarrDataModule(L.LightningDataModule):
    """Train, validation and test loaders of a store for the rank Lightning assigns.

    Parameters
    ----------
    store : Store or path
    window : WindowSpec or dict
        The shape of a sample (``{"input_steps": 12, "horizon": 12}``).
    mode : {"full", "partitioned"}
        What every rank holds (see the module docstring).
    max_memory : int, optional
        Bytes of series and batches a rank may hold; more is streamed.
    batch_size : int
        Samples per batch per rank.
    seed : int
        Seeds the samplers.
    split : SplitSpec, optional
    batch : BatchOptions, optional
        Features, calendar channels and missing fill (as ``stzarr train``).
    shuffle : {"window", "batch"}
        How a partitioned rank shuffles.
    max_batches : int, optional
        Training batches per epoch.
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str],
        *,
        window: WindowSpec | dict[str, int] | None = None,
        mode: str = "full",
        max_memory: int | None = None,
        batch_size: int = 64,
        seed: int = 0,
        split: SplitSpec | None = None,
        batch: BatchOptions | None = None,
        shuffle: str = "window",
        max_batches: int | None = None,
    ) -> None:
        super().__init__()
        if mode not in ("full", "partitioned"):
            raise ValueError(f"mode must be 'full' or 'partitioned', got {mode!r}")
        self.path = store.path if isinstance(store, Store) else os.fspath(store)
        if isinstance(window, dict):
            window = WindowSpec(**window)
        self.config = TrainConfig.of(
            **(window or WindowSpec()).to_dict(),
            **_fields(split or SplitSpec()),
            **_fields(batch or BatchOptions()),
            mode=mode,
            max_memory=max_memory,
            batch_size=batch_size,
            seed=seed,
            shuffle=shuffle,
            max_batches=max_batches,
        )
        self.data: RankData | None = None
        self._rank: tuple[int, int] | None = None

    @property
    def store(self) -> Store:
        """The opened store."""
        if not hasattr(self, "_store"):
            self._store = open_store(self.path)
        return self._store

    @property
    def windows(self) -> WindowPlan:
        """The store's window plan."""
        return self.config.split.plan(self.config.window, self.store.time)

    def prepare_data(self) -> None:
        """Compute the train statistics once and cache them in the store (one process)."""
        bounds = self.windows.bounds["train"]
        if cached_stats(self.store, bounds=bounds) is None:
            cache_stats(self.store, compute_stats(self.store, bounds=bounds))

    @property
    def stats(self) -> Stats:
        """The train statistics (cached in the store by :meth:`prepare_data`)."""
        bounds = self.windows.bounds["train"]
        return cached_stats(self.store, bounds=bounds) or compute_stats(self.store, bounds=bounds)

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def setup(self, stage: str | None = None) -> None:
        """Plan and open the data of this rank (again only when the rank changed)."""
        rank, world = self._world()
        if self.data is not None and self._rank == (rank, world):
            return
        config = self.config.replace(workers=world) if world > 1 else self.config
        plan, contract = plan_rank_of(self.store, self.windows, config, rank=rank, world_size=world)
        self.data = open_rank_data(
            self.store, plan, self.stats, device=torch.device("cpu"), contract=contract
        )
        self._rank = (rank, world)

    def _opened(self) -> RankData:
        if self.data is None:
            self.setup()
        assert self.data is not None
        return self.data

    def train_dataloader(self) -> EpochBatches:
        """The rank's training batches (an epoch per iteration)."""
        data = self._opened()
        steps = len(data.train)
        if self.config.run.max_batches is not None:
            steps = min(steps, self.config.run.max_batches)
        return EpochBatches(data, steps, self.trainer)

    def val_dataloader(self) -> EvalBatches:
        """The rank's share of the validation windows."""
        return EvalBatches(self._opened(), "val")

    def test_dataloader(self) -> EvalBatches:
        """The rank's share of the test windows."""
        return EvalBatches(self._opened(), "test")

    @property
    def scaler(self) -> Scaler:
        """De-standardises forecasts (and targets) to the data's units."""
        targets = self._contract().target_features
        names = resolve_features(targets, self.store.feature_names)
        return Scaler.fit(self.stats, self.store.missing_value).select(names)

    def _contract(self) -> BatchContract:
        store = self.store
        return self.config.batch.resolve(
            subdaily=is_subdaily(store.attrs.get("sampling_interval_s")),
            missing_value=store.missing_value,
        )

    def build_model(self, name: str, **options: Any) -> GraphForecaster:
        """A model of :data:`stzarr.training.models.MODELS` for this store's graph and batches, its
        parameters drawn after ``torch.manual_seed(seed)`` as ``stzarr train`` draws them."""
        n_in, n_out, n_cal = self._contract().channels(self.store.feature_names)
        torch.manual_seed(self.config.run.seed)
        return build_for_store(
            name,
            self.store,
            self.config.window,
            in_features=n_in + n_cal,
            out_features=n_out,
            **options,
        )


def _fields(part: Any) -> dict[str, Any]:
    return {f.name: getattr(part, f.name) for f in dataclasses.fields(part)}


class ForecastModule(L.LightningModule):
    """A stzarr forecaster trained as ``stzarr train`` trains it: Adam on the masked MAE of
    de-standardised forecasts (missing targets excluded).

    Parameters
    ----------
    model : GraphForecaster
        E.g. :meth:`StzarrDataModule.build_model`.
    scaler : Scaler
        :attr:`StzarrDataModule.scaler`.
    lr : float
        Adam learning rate.
    """

    def __init__(self, model: GraphForecaster, scaler: Scaler, lr: float = 0.01) -> None:
        super().__init__()
        self.model, self.scaler, self.lr = model, scaler, lr
        self.losses: list[float] = []

    def _loss(self, batch: Batch) -> torch.Tensor:
        x, y, missing = batch
        pred = self.model(x, targets=y.masked_fill(missing, 0.0), step=self.global_step)
        return masked_mae(self.scaler.inverse(pred), self.scaler.inverse(y), ~missing)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.losses.append(float(loss.detach()))
        self.log("train_mae", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.log("val_mae", self._loss(batch), sync_dist=True)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.log("test_mae", self._loss(batch), sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)
