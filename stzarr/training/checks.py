"""Checks of a training run that must hold before any rank or cluster process starts.

Each check turns a run that would silently do something else than asked (run on the CPU when an
accelerator was asked for, start more processes than the machine has cores, train ranks on
duplicated windows) into one :class:`~stzarr.errors.SpecError` line.
"""

from __future__ import annotations

import os
import warnings

import torch

from stzarr.errors import SpecError, StzarrWarning
from stzarr.plan.partition import SharedChunksWarning, store_partitions
from stzarr.plan.rank import DISTRIBUTED_MODES
from stzarr.plan.windows import WindowPlan
from stzarr.store.format import Store
from stzarr.training.config import RunOptions, TrainConfig


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - platforms without affinity masks
        return os.cpu_count() or 1


def check_options(config: TrainConfig) -> None:
    """Refuse options that would do nothing in this run's mode (never ignore them silently)."""
    run = config.run
    distributed = run.mode in DISTRIBUTED_MODES
    cluster = run.scheduler_file is not None or run.scheduler_address is not None
    unused = []
    if cluster and not distributed:
        unused.append(("--scheduler-file/--scheduler-address", "--mode full or partitioned"))
    if run.oversubscribe and (not distributed or cluster):
        unused.append(("--oversubscribe", "an embedded cluster (full or partitioned)"))
    if run.shuffle != RunOptions.shuffle and run.mode != "partitioned":
        unused.append((f"--shuffle {run.shuffle}", "--mode partitioned"))
    if run.warmup_epochs != RunOptions.warmup_epochs and not run.lr_scaling:
        unused.append(("--warmup-epochs", "--lr-scaling"))
    if unused:
        option, needs = unused[0]
        raise SpecError(f"{option} does nothing without {needs} (mode is {run.mode!r})")


def check_device(config: TrainConfig) -> None:
    """Mode ``device`` needs a usable CUDA device unless ``device="auto"`` asks for a fallback."""
    run = config.run
    if run.mode == "device" and run.device != "auto" and not torch.cuda.is_available():
        raise SpecError(
            "--mode device needs a CUDA device and torch sees none usable here; "
            "pass --device auto to fall back to the CPU, or use --mode single"
        )


def check_workers(config: TrainConfig) -> None:
    """An embedded cluster may not start more ranks than CPU cores unless ``oversubscribe``."""
    run = config.run
    embedded = run.scheduler_file is None and run.scheduler_address is None
    if run.mode not in DISTRIBUTED_MODES or not embedded or run.oversubscribe:
        return
    cores = usable_cores()
    if run.workers > cores:
        raise SpecError(
            f"--workers {run.workers} would start {run.workers} processes on {cores} CPU "
            f"core(s); use at most {cores}, or pass --oversubscribe"
        )


def check_ranks_have_windows(windows: WindowPlan, config: TrainConfig) -> None:
    """Every rank needs training windows of its own: in ``partitioned`` a rank with none has no
    partition, in ``full`` the extra ranks would train on duplicated windows."""
    world = config.run.world_size
    count = windows.count("train")
    if config.run.mode not in DISTRIBUTED_MODES or world <= count:
        return
    if config.run.mode == "full":
        raise SpecError(
            f"mode full with {world} ranks and {count} training windows would train "
            f"{world - count} rank(s) on duplicated windows; use at most {count} workers"
        )
    raise SpecError(
        f"mode partitioned with {world} ranks needs at least {world} training windows, the "
        f"train split has {count}; use at most {count} workers"
    )


def warn_skipped_windows(store: Store, windows: WindowPlan, config: TrainConfig) -> None:
    """In ``partitioned``, say how many windows each rank leaves out of every epoch (an
    :class:`~stzarr.errors.StzarrWarning`; nothing when every rank trains all of its windows)."""
    run = config.run
    if run.mode != "partitioned":
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedChunksWarning)  # each rank reports it
        line = store_partitions(store, windows, run.world_size).skipped_line(run.batch_size)
    if line is not None:
        warnings.warn(line, StzarrWarning, stacklevel=3)
