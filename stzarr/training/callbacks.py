"""Pieces of a training run that act at the end of each epoch and of the run.

A :class:`Callback` receives the rank's :class:`~stzarr.training.loop.Session`, the epoch's log
record and the log; :func:`stzarr.training.train.run_rank` calls every rank's callbacks in order.

* :class:`BestTracker` (every rank): the best validation MAE so far, its epoch and parameters,
  and early stopping after ``patience`` epochs without improvement. It decides from rank 0's
  validation MAE, so that every rank stops at the same epoch and tests the same parameters.
* :class:`stzarr.training.tensorboard.TensorBoardLogger` (rank 0): TensorBoard event files.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from stzarr.training.loop import Session


class Callback:
    """Hooks of a training run; the base class does nothing."""

    def on_epoch_end(self, s: Session, record: dict[str, Any], log: dict[str, Any]) -> None:
        """After epoch ``record["epoch"]`` was trained, validated and logged."""

    def on_train_end(self, s: Session, log: dict[str, Any]) -> None:
        """After the test split was scored (``log["test"]``); also called when training fails."""


class BestTracker(Callback):
    """The best epoch on validation MAE, its parameters, and early stopping.

    An epoch improves when its validation MAE is strictly below the best so far (a NaN never
    does). Training stops once ``patience`` epochs in a row did not improve (DCRNN's rule).

    Parameters
    ----------
    patience : int, optional
        ``None``: never stop early.
    share : callable, optional
        Maps this rank's value to rank 0's (e.g. ``lambda v: gather(v)[0]``); identity by
        default (one process).
    """

    def __init__(self, patience: int | None = None, share: Any = None) -> None:
        self.patience = patience
        self.share = share if share is not None else (lambda value: value)
        self.best_epoch = 0  # 1-based; 0 until an epoch improved
        self.best_val_mae = math.inf
        self.bad_epochs = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.improved = False

    def on_epoch_end(self, s: Session, record: dict[str, Any], log: dict[str, Any]) -> None:
        """Compare the epoch's validation MAE with the best and keep its parameters if better."""
        mae = float(self.share(record["val"]["mae"]))
        self.improved = mae < self.best_val_mae
        if self.improved:
            self.best_epoch, self.best_val_mae, self.bad_epochs = record["epoch"], mae, 0
            self.best_state = {
                k: v.detach().to("cpu", copy=True) for k, v in s.model.state_dict().items()
            }
        else:
            self.bad_epochs += 1
        log["best"] = self.state_dict()

    @property
    def stop(self) -> bool:
        """Whether ``patience`` epochs in a row did not improve."""
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """The tracker's counters (for checkpoints and the log; not the parameters)."""
        return {
            "best_epoch": self.best_epoch,
            "best_val_mae": self.best_val_mae,
            "bad_epochs": self.bad_epochs,
        }

    def load_state_dict(self, state: dict[str, Any], best_model: Any) -> None:
        """Restore the counters and the best parameters.

        Parameters
        ----------
        state : dict
            :meth:`state_dict` of the checkpointed run.
        best_model : callable
            Called with the best epoch, returns that epoch's model ``state_dict``.
        """
        self.best_epoch = int(state["best_epoch"])
        self.best_val_mae = float(state["best_val_mae"])
        self.bad_epochs = int(state["bad_epochs"])
        self.best_state = best_model(self.best_epoch) if self.best_epoch else None

    def load_best(self, model: torch.nn.Module) -> int | None:
        """Load the best parameters into ``model``; returns their epoch (``None``, and
        ``model`` unchanged, when no epoch had a finite validation MAE)."""
        if self.best_state is None:
            return None
        model.load_state_dict(self.best_state)
        return self.best_epoch
