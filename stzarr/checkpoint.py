"""Per-epoch checkpoints that let ``--resume`` continue bit-exactly.

A checkpoint holds the model and optimiser (and learning-rate scheduler) state, the number of
completed epochs, the global step, the random-number-generator states of every rank (torch CPU,
CUDA, NumPy's legacy global generator, Python's ``random``), the sampler epoch and the per-epoch
log so far. Samplers are stateless apart from their epoch (their order is a function of the seed
and the epoch), so restoring the epoch restores the data order.

Files are written atomically: to a temporary sibling, flushed and fsynced, then renamed over
``last.pt``, so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stzarr.errors import StzarrError

CHECKPOINT_NAME = "last.pt"
CHECKPOINT_VERSION = 1


def rng_state() -> dict[str, Any]:
    """The random-number-generator states of this process."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # the legacy global generator: the one user code seeds with np.random.seed
        "numpy": np.random.get_state(),  # noqa: NPY002
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])


@dataclass
class Checkpoint:
    """Everything needed to continue a run after ``epoch`` completed epochs.

    Attributes
    ----------
    epoch : int
        Completed epochs.
    step : int
        Optimiser steps taken.
    model, optimizer : dict
        ``state_dict`` of the (unwrapped) model and of the optimiser.
    scheduler : dict or None
        ``state_dict`` of the learning-rate scheduler.
    rng : list of dict
        :func:`rng_state` of each rank, indexed by rank.
    sampler_epoch : int
        Epoch the training sampler will be set to next.
    history : list of dict
        Per-epoch log records so far.
    config : dict
        The run's configuration (checked on resume).
    """

    epoch: int
    step: int
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    rng: list[dict[str, Any]]
    sampler_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The serialised form (``torch.save``-able)."""
        return {"version": CHECKPOINT_VERSION, **self.__dict__}


def save_checkpoint(directory: str | os.PathLike[str], checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``directory/last.pt`` atomically and return the path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_NAME
    tmp = directory / f".{CHECKPOINT_NAME}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "wb") as fh:
            torch.save(checkpoint.to_dict(), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(directory: str | os.PathLike[str]) -> Checkpoint:
    """Read ``directory/last.pt``.

    Raises
    ------
    StzarrError
        When there is no checkpoint or it is unreadable or of another version.
    """
    path = Path(directory) / CHECKPOINT_NAME
    if not path.is_file():
        raise StzarrError(f"--resume: no checkpoint at {path}")
    try:
        # our own file: it holds NumPy RNG state and plain Python objects, not just tensors
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise StzarrError(f"--resume: cannot read {path} ({exc.__class__.__name__})") from None
    if not isinstance(data, dict) or data.get("version") != CHECKPOINT_VERSION:
        raise StzarrError(
            f"--resume: {path} is not a stzarr checkpoint of version {CHECKPOINT_VERSION}"
        )
    data.pop("version")
    return Checkpoint(**data)


def checkpoint_exists(directory: str | os.PathLike[str]) -> bool:
    """True when ``directory`` holds a checkpoint."""
    return (Path(directory) / CHECKPOINT_NAME).is_file()
