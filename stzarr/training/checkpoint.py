"""Per-epoch checkpoints that let ``--resume`` continue bit-exactly.

A checkpoint holds the model and optimiser (and learning-rate scheduler) state, the number of
completed epochs, the global step, the random-number-generator states of every rank (torch CPU,
CUDA, NumPy's legacy global generator, Python's ``random``), the sampler epoch and the per-epoch
log so far. Samplers are stateless apart from their epoch (their order is a function of the seed
and the epoch), so restoring the epoch restores the data order.

Files are written atomically (:mod:`stzarr.store.atomic`): to a locked partial sibling, fsynced,
then renamed over ``last.pt``, so a crash mid-write leaves the previous checkpoint intact. An epoch
that improves validation MAE is also written, the same way and after ``last.pt``, as
``best.pt`` (the same format, so either file loads alike). The
checkpoint directory and the JSON log are checked by :func:`check_training_outputs` before
training starts, so a bad target fails in a second rather than after the work.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stzarr.errors import StzarrError
from stzarr.store.atomic import atomic_file, is_json_with, is_torch_file, write_text

CHECKPOINT_NAME = "last.pt"
BEST_NAME = "best.pt"
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
    tracker : dict, optional
        :meth:`stzarr.training.callbacks.BestTracker.state_dict` (best epoch, its validation MAE,
        epochs without improvement); absent in checkpoints written before it existed.
    data : dict
        What the model is bound to (:func:`stzarr.training.identity.data_record`): model and window,
        train statistics, feature layout and the store's identity. Empty in checkpoints written
        before stzarr recorded it.
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
    tracker: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The serialised form (``torch.save``-able)."""
        return {"version": CHECKPOINT_VERSION, **self.__dict__}


def save_checkpoint(
    directory: str | os.PathLike[str], checkpoint: Checkpoint, name: str = CHECKPOINT_NAME
) -> Path:
    """Write ``checkpoint`` to ``directory/name`` (``last.pt``) atomically; return the path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    with atomic_file(path, ours=is_torch_file, what="a stzarr checkpoint") as partial:
        with partial.open("wb") as fh:
            torch.save(checkpoint.to_dict(), fh)
    return path


is_training_log = is_json_with("epochs")


def write_log(path: str | os.PathLike[str], log: dict[str, Any]) -> Path:
    """Write the training log ``path`` atomically (replacing only a stzarr training log)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(log, indent=1, allow_nan=True)
    return write_text(path, text, ours=is_training_log, what="a stzarr training log")


def _writable_directory(path: Path, flag: str) -> None:
    """``path`` is a directory that exists or can be created, and files can be written in it."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    if probe == path and not path.is_dir():
        raise StzarrError(f"{flag} {path} is a file, not a directory")
    if not probe.is_dir():
        raise StzarrError(f"{flag} {path}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise StzarrError(f"{flag} {path}: directory {probe} is not writable")


def check_training_outputs(
    checkpoint_dir: str | os.PathLike[str] | None,
    log_path: str | os.PathLike[str] | None,
    tensorboard_dir: str | os.PathLike[str] | None = None,
) -> None:
    """Refuse, before training starts, a checkpoint directory or log that could not be
    written or that would replace something stzarr did not write.

    Raises
    ------
    StzarrError
        ``--checkpoint`` is a file or not writable, or holds a ``last.pt`` that is not a
        checkpoint (nor ``best.pt``); ``--log`` is a directory, not writable, or an existing
        file that is not a stzarr training log; ``--tensorboard`` is a file or not writable.
    """
    if checkpoint_dir is not None:
        directory = Path(checkpoint_dir)
        _writable_directory(directory, "--checkpoint")
        for name in (CHECKPOINT_NAME, BEST_NAME):
            target = directory / name
            if target.exists() and not is_torch_file(target):
                raise StzarrError(
                    f"{target} exists and is not a stzarr checkpoint; refusing to replace it"
                )
    if tensorboard_dir is not None:
        _writable_directory(Path(tensorboard_dir), "--tensorboard")
    if log_path is not None:
        log = Path(log_path)
        if log.is_dir():
            raise StzarrError(f"--log {log} is a directory, not a file")
        if log.exists() and not is_training_log(log):
            raise StzarrError(
                f"{log} exists and is not a stzarr training log; refusing to replace it"
            )
        _writable_directory(log.parent, "--log")


def load_checkpoint(directory: str | os.PathLike[str], name: str = CHECKPOINT_NAME) -> Checkpoint:
    """Read ``directory/name`` (``last.pt``).

    Raises
    ------
    StzarrError
        When there is no checkpoint or it is unreadable or of another version.
    """
    path = Path(directory) / name
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
