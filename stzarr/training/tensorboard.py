"""TensorBoard event files of a training run (``stzarr train --tensorboard DIR``), from rank 0.

Scalars, all taken from the run's JSON log records so that the two always agree:

* per optimiser step (x axis: the global step, 0-based): ``train/loss_step`` (the batch's masked
  MAE, averaged over ranks) and ``train/lr``;
* per epoch (x axis: the epoch, 1-based): ``{train,val}/{mae,rmse,mape}`` and the same per
  horizon step ``h`` as ``{split}/{metric}@{h}``, ``speed/samples_per_s``,
  ``memory/peak_rss_bytes/rank{r}``, and for every rank that streams its training data
  ``stream/rank{r}/{blocks_read,wait_s,peak_series_bytes}``;
* at the end: ``test/...`` as for validation, at the last epoch.

``tensorboard`` is an optional extra (``pip install 'stzarr[tensorboard]'``);
:func:`require_tensorboard` turns its absence into one line before any work starts.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from stzarr.errors import StzarrError
from stzarr.training.callbacks import Callback

if TYPE_CHECKING:
    from stzarr.training.loop import Session

METRICS = ("mae", "rmse", "mape")
STREAM_COUNTERS = ("blocks_read", "wait_s", "peak_series_bytes")


def require_tensorboard() -> None:
    """Check that ``torch.utils.tensorboard`` can be imported.

    Raises
    ------
    StzarrError
        Naming the extra to install.
    """
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        raise StzarrError(
            "--tensorboard needs the tensorboard package: pip install 'stzarr[tensorboard]'"
        ) from None


class TensorBoardLogger(Callback):
    """Write the run's scalars to ``directory`` (see the module's description).

    Parameters
    ----------
    directory : str or path
        Event files go there (created if needed); a resumed run adds a new event file.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(os.fspath(directory))

    def _metrics(self, split: str, metrics: dict[str, Any], epoch: int) -> None:
        for name in METRICS:
            self.writer.add_scalar(f"{split}/{name}", metrics[name], epoch)
            for h, at in metrics.get("horizons", {}).items():
                self.writer.add_scalar(f"{split}/{name}@{h}", at[name], epoch)

    def on_epoch_end(self, s: Session, record: dict[str, Any], log: dict[str, Any]) -> None:
        """Write the epoch's per-step and per-epoch scalars."""
        epoch, add = record["epoch"], self.writer.add_scalar
        first = (epoch - 1) * record["batches"]
        steps = zip(record["batch_losses"], record["batch_lr"], strict=True)
        for k, (loss, lr) in enumerate(steps):
            add("train/loss_step", loss, first + k)
            add("train/lr", lr, first + k)
        for split in ("train", "val"):
            self._metrics(split, record[split], epoch)
        add("speed/samples_per_s", record["samples_per_s"], epoch)
        for r, peak in enumerate(record["peak_rss_bytes"]):
            add(f"memory/peak_rss_bytes/rank{r}", peak, epoch)
        for r, counters in enumerate(record["streams"]):
            for name in STREAM_COUNTERS if counters is not None else ():
                add(f"stream/rank{r}/{name}", counters[name], epoch)
        self.writer.flush()

    def on_train_end(self, s: Session, log: dict[str, Any]) -> None:
        """Write the test metrics."""
        self._metrics("test", log["test"], len(s.history))
        self.writer.flush()

    def close(self) -> None:
        """Close the event files (also when training failed)."""
        self.writer.close()
