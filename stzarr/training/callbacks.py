"""Pieces of a training run that act around its batches and epochs, as callbacks.

A :class:`Callback` receives the rank's :class:`~stzarr.training.loop.Session`, the epoch's log
record and the log; :func:`stzarr.training.train.fit` calls every rank's callbacks in order
(:func:`stzarr.training.train.callbacks_of` builds the list). Every rank runs the same
callbacks, since some gather from every rank; only rank 0 writes.

* :class:`MemoryMonitor`: samples host RSS on a background thread, adds each epoch's peaks (host
  and device) to its record, and the whole trace to the log.
* :class:`BestTracker`: the best validation MAE so far, its epoch and parameters, and early
  stopping after ``patience`` epochs without improvement. It decides from rank 0's validation
  MAE, so that every rank stops at the same epoch and tests the same parameters.
* :class:`stzarr.training.tensorboard.TensorBoardLogger` (rank 0): TensorBoard event files.
* :class:`CheckpointWriter`: ``last.pt`` (and ``best.pt``) with every rank's RNG state.
* :class:`LogWriter`: the JSON log, rewritten after every epoch and at the end.
* :class:`ProgressPrinter`: a progress bar per epoch and one line per epoch.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from stzarr.monitor import MemorySampler
from stzarr.training.checkpoint import (
    BEST_NAME,
    Checkpoint,
    rng_state,
    save_checkpoint,
    write_log,
)
from stzarr.training.collective import gather
from stzarr.training.history import continue_trace, trace_end

if TYPE_CHECKING:
    from stzarr.training.loop import Session


class Callback:
    """Hooks of a training run; the base class does nothing."""

    def on_epoch_start(self, s: Session, epoch: int) -> None:
        """Before epoch ``epoch`` (0-based) trains."""

    def on_batch_end(self, s: Session, batch: int) -> None:
        """After optimiser step ``batch`` (0-based) of the epoch."""

    def on_epoch_end(self, s: Session, record: dict[str, Any], log: dict[str, Any]) -> None:
        """After epoch ``record["epoch"]`` was trained and validated, and recorded in the log."""

    def on_train_end(self, s: Session, log: dict[str, Any]) -> None:
        """After the test split was scored (``log["test"]``)."""

    def close(self) -> None:
        """Release what the callback holds; called when the run ends, also when it fails."""


class MemoryMonitor(Callback):
    """Host-RSS samples of the rank (every ``interval`` seconds) and its peaks per epoch.

    Use as a context manager around the whole rank, preprocessing included.

    Parameters
    ----------
    interval : float
        Seconds between samples.
    device : torch.device
        Its peak memory is recorded per epoch when it is a CUDA device.
    earlier : dict, optional
        The trace of the run this one resumes (:func:`~stzarr.training.history.earlier_trace`),
        which this run's trace and epoch end times continue.
    """

    def __init__(self, interval: float, device: torch.device, earlier: dict | None) -> None:
        self.sampler = MemorySampler(interval=interval)
        self.device, self.earlier = device, earlier
        self.wall0 = time.perf_counter()
        self._epoch_start = 0.0

    def __enter__(self) -> MemoryMonitor:
        self.wall0 = time.perf_counter()
        self.reset_device_peak()
        self.sampler.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sampler.__exit__(*exc)

    def reset_device_peak(self) -> None:
        """Start a new peak of device memory."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def device_peak(self) -> int | None:
        """Peak device memory since the last reset (``None`` off CUDA)."""
        if self.device.type != "cuda":
            return None
        return int(torch.cuda.max_memory_allocated(self.device))

    def peak_since(self, t0: float) -> int:
        """Peak host RSS sampled since ``t0`` seconds (one sample now when none)."""
        trace = self.sampler.trace
        return max((rss for t, rss in trace if t >= t0), default=self.sampler.sample())

    def traces(self) -> dict[str, Any]:
        """Every rank's trace as plain data (seconds, bytes), after the earlier run's."""
        ranks = gather([(round(t, 3), int(rss)) for t, rss in self.sampler.trace])
        traces = {
            "interval_s": self.sampler.interval,
            "ranks": [
                {"peak_rss_bytes": max((r for _, r in tr), default=0), "trace": tr} for tr in ranks
            ],
        }
        return continue_trace(self.earlier, traces)

    def on_epoch_start(self, s: Session, epoch: int) -> None:
        """Mark where the epoch's peaks start."""
        self._epoch_start = self.sampler.trace[-1][0] if self.sampler.trace else 0.0
        self.reset_device_peak()

    def on_epoch_end(self, s: Session, record: dict[str, Any], log: dict[str, Any]) -> None:
        """Every rank's peaks of the epoch, and when it ended (continuing an earlier run)."""
        peaks = gather((self.peak_since(self._epoch_start), self.device_peak()))
        record["peak_rss_bytes"] = [p[0] for p in peaks]
        record["peak_device_bytes"] = [p[1] for p in peaks]
        record["end_s"] = time.perf_counter() - self.wall0 + trace_end(self.earlier)

    def on_train_end(self, s: Session, log: dict[str, Any]) -> None:
        """The whole trace of every rank, and their peaks."""
        log["memory_trace"] = self.traces()
        log["peak_rss_bytes"] = [t["peak_rss_bytes"] for t in log["memory_trace"]["ranks"]]


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


class CheckpointWriter(Callback):
    """After every epoch, ``directory/last.pt`` with every rank's RNG state, and ``best.pt``
    when the epoch improved validation MAE (after :class:`BestTracker` has seen it)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def on_epoch_end(self, s: Session, record: dict[str, Any], log: dict[str, Any]) -> None:
        """Write the checkpoint after epoch ``record["epoch"]`` (rank 0)."""
        rng = gather(rng_state())
        if s.rank != 0:
            return
        epoch = record["epoch"]
        ckpt = Checkpoint(
            epoch=epoch,
            step=s.step,
            model=s.model.state_dict(),
            optimizer=s.optimizer.state_dict(),
            scheduler=None if s.scheduler is None else s.scheduler.state_dict(),
            rng=rng,
            sampler_epoch=epoch,
            history=s.history,
            config=s.config.to_dict(),
            tracker=s.best.state_dict(),
            data=s.data_record,
        )
        save_checkpoint(self.directory, ckpt)
        if s.best.improved:
            save_checkpoint(self.directory, ckpt, BEST_NAME)


class LogWriter(Callback):
    """The JSON log at ``path`` (rank 0), rewritten atomically after every epoch (with the
    memory trace so far) and at the end; without a path it only times the run (``wall_s``).

    Parameters
    ----------
    path : str, optional
        Where the log goes.
    memory : MemoryMonitor
        Whose trace the log holds.
    """

    def __init__(self, path: str | None, memory: MemoryMonitor) -> None:
        self.path, self.memory = path, memory

    def on_epoch_end(self, s: Session, record: dict[str, Any], log: dict[str, Any]) -> None:
        """Rewrite the log with the epoch."""
        if self.path is None:
            return
        traces = self.memory.traces()
        if s.rank == 0:
            write_log(self.path, {**log, "memory_trace": traces})

    def on_train_end(self, s: Session, log: dict[str, Any]) -> None:
        """The run's wall time; the final log."""
        log["wall_s"] = time.perf_counter() - self.memory.wall0
        if self.path is not None and s.rank == 0:
            write_log(self.path, log)


class ProgressPrinter(Callback):
    """On rank 0: a progress bar over each epoch's batches (when ``bar``), and one line per
    epoch with its loss and validation metrics (always)."""

    def __init__(self, bar: bool) -> None:
        self.show_bar = bar
        self.bar: Any = None

    def on_epoch_start(self, s: Session, epoch: int) -> None:
        """Open the epoch's bar."""
        self.bar = tqdm(
            total=s.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{s.config.run.epochs}",
            unit="batch",
            disable=not self.show_bar or s.rank != 0,
            leave=False,
        )

    def on_batch_end(self, s: Session, batch: int) -> None:
        """Advance the bar; close it after the epoch's last batch."""
        self.bar.update(1)
        if batch + 1 == s.steps_per_epoch:
            self.close()

    def on_epoch_end(self, s: Session, record: dict[str, Any], log: dict[str, Any]) -> None:
        """Print the epoch's line (also under ``--no-progress``: that hides the bars only)."""
        self.close()
        if s.rank != 0:
            return
        tqdm.write(
            f"epoch {record['epoch']}/{s.config.run.epochs}: loss {record['loss']:.4f}  "
            f"val MAE {record['val']['mae']:.4f} RMSE {record['val']['rmse']:.4f}  "
            f"{record['train_s']:.1f}s train, {record['eval_s']:.1f}s eval"
            + ("  (best)" if s.best.improved else "")
            + ("  early stop" if s.best.stop else "")
        )

    def close(self) -> None:
        """Close the bar if open."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
