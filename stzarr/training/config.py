"""The configuration of a training run, composed of typed parts: plain frozen dataclasses.

* :class:`~stzarr.plan.windows.WindowSpec`: the shape of a sample (input steps, horizon, stride);
* :class:`SplitSpec`: where train, validation and test lie (fractions or timestamps), gaps,
  cross-split windows;
* :class:`BatchOptions`: what a batch holds (features, calendar channels, missing fill);
* :class:`RunOptions`: how the run executes (model, mode, workers, epochs, optimiser and
  schedule, checkpoints, memory).

:class:`TrainConfig` holds one of each. Every option is declared once, here: the CLI builds its
flags from these fields (:mod:`stzarr.cli.options`), :func:`stzarr.training.train.train` takes a
:class:`TrainConfig`, and ``--resume`` compares two configurations as data
(:meth:`TrainConfig.resume_diff`). Fields that may change between a run and its resumption carry
``metadata={"resume": False}``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stzarr.data.contract import BatchContract
from stzarr.errors import SpecError
from stzarr.plan.partition import SHUFFLES
from stzarr.plan.rank import DISTRIBUTED_MODES, MODES
from stzarr.plan.windows import WindowPlan, WindowSpec, make_plan, split_bounds, split_bounds_at

MODELS = ("dcrnn", "pgt-batched-dcrnn", "a3tgcn")
"""The model names :func:`stzarr.training.models.build_model` builds; the first is the default."""
DEFAULT_HORIZONS = (3, 6, 12)
"""Horizon steps whose metrics are reported by default (15, 30, 60 min at 5-minute steps)."""

DEVICES = ("cuda", "auto")
"""Values of :attr:`RunOptions.device`."""

FREE = {"resume": False}
"""Field metadata: the option may differ between a run and its ``--resume``."""

TEST_ON = ("best", "last")
"""Which parameters score the test split: the best on validation MAE, or the last epoch's."""


def _positive(owner: str, name: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise SpecError(f"{owner}: {name} must be a positive integer, got {value!r}")


def _extent(time: np.ndarray) -> str:
    """``"the store covers FIRST .. LAST (N steps)"`` of a time coordinate."""
    first, last = (np.datetime_as_string(np.asarray(time)[i], unit="s") for i in (0, -1))
    return f"the store covers {first} .. {last} ({len(time):,} steps)"


@dataclass(frozen=True)
class SplitSpec:
    """Where the splits lie along time.

    Parameters
    ----------
    train, val : float
        Fractions of the steps for training and validation (test takes the rest); ignored when
        timestamps are given.
    val_start, test_start : str, optional
        First timestamp of the validation and of the test split (give both or neither).
    exclude_gaps : bool
        Drop windows that read across a gap in the time coordinate.
    cross_splits : bool
        Let windows read past their split's end (PGT's convention).
    """

    train: float = 0.7
    val: float = 0.1
    val_start: str | None = None
    test_start: str | None = None
    exclude_gaps: bool = False
    cross_splits: bool = False

    def __post_init__(self) -> None:
        if (self.val_start is None) != (self.test_start is None):
            raise SpecError("give both val_start and test_start, or neither")
        split_bounds(1000, self.train, self.val)  # validates the fractions

    def bounds(self, time: np.ndarray) -> dict[str, tuple[int, int]]:
        """Half-open step ranges of the splits of a series with time coordinate ``time``.

        Raises
        ------
        SpecError
            When a split would be empty or starts outside the data; the message names the
            split and the store's time range.
        """
        if self.val_start is None:
            bounds = split_bounds(len(time), self.train, self.val)
        else:
            try:
                bounds = split_bounds_at(time, self.val_start, self.test_start)
            except ValueError as exc:
                raise SpecError(f"cannot parse timestamp ({exc})") from None
        for name, (lo, hi) in bounds.items():
            if hi <= lo:
                raise SpecError(f"the {name} split is empty: {self._where(name)}, {_extent(time)}")
        return bounds

    def _where(self, name: str) -> str:
        if self.val_start is None:
            return f"fractions train {self.train}, val {self.val}"
        start = {"train": self.val_start, "val": self.val_start, "test": self.test_start}[name]
        return f"{'validation' if name == 'train' else name} starts {start}"

    def plan(self, window: WindowSpec, time: np.ndarray) -> WindowPlan:
        """The window plan of a series with time coordinate ``time`` (plain NumPy)."""
        return make_plan(
            len(time),
            window,
            bounds=self.bounds(time),
            time=time if self.exclude_gaps else None,
            exclude_gaps=self.exclude_gaps,
            cross_splits=self.cross_splits,
        )


@dataclass(frozen=True)
class BatchOptions:
    """What a batch holds.

    Parameters
    ----------
    input_features, target_features : tuple of str, optional
        Data features in ``x`` and forecast in ``y`` (default: all).
    time_of_day : bool, optional
        Append the time-of-day channel to ``x`` (default: when the store is sampled more often
        than daily).
    day_of_week : bool
        Append the seven day-of-week channels to ``x``.
    fill_missing : bool, optional
        Replace missing inputs by 0 (the train mean). Default: only for stores whose missing
        readings are NaN (``missing_value="nan"``); under ``"zero"`` missing inputs keep their
        standardised value ``(0 - mean) / std``, as DCRNN's and PGT's pipelines feed them.
        Missing targets are excluded from the loss and metrics either way.
    """

    input_features: tuple[str, ...] | None = None
    target_features: tuple[str, ...] | None = None
    time_of_day: bool | None = None
    day_of_week: bool = False
    fill_missing: bool | None = None

    def __post_init__(self) -> None:
        for name in ("input_features", "target_features"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))

    def resolve(self, *, subdaily: bool, missing_value: str) -> BatchContract:
        """The batch contract of these options for one store (defaults decided by
        :meth:`stzarr.data.contract.BatchContract.resolved`)."""
        return BatchContract(
            input_features=self.input_features,
            target_features=self.target_features,
            time_of_day=self.time_of_day,
            day_of_week=self.day_of_week,
            fill_missing=self.fill_missing,
        ).resolved(subdaily=subdaily, missing_value=missing_value)


@dataclass(frozen=True)
class RunOptions:
    """How a run executes.

    Parameters
    ----------
    model : str
        A name of :data:`stzarr.training.models.MODELS` (default: the first).
    model_options : dict
        Hyper-parameters passed to the model (e.g. ``{"hidden": 32}``).
    mode : str
        One of :data:`stzarr.plan.rank.MODES`.
    workers : int
        DDP ranks (``full`` and ``partitioned`` only).
    epochs : int
        Epochs in total (a resumed run continues up to ``epochs``).
    batch_size : int
        Samples per batch per rank.
    lr : float
        Adam learning rate.
    lr_scaling : bool
        Multiply ``lr`` by the number of ranks, with a linear warm-up over ``warmup_epochs``.
    warmup_epochs : float
    lr_milestones : tuple of int
        Epochs (0-based: the first epoch trained at the lower rate) at which the learning rate
        is multiplied by ``lr_decay`` (DCRNN's schedule; composes with the warm-up).
    lr_decay : float
        The factor applied at each milestone.
    clip_grad_norm : float, optional
        Clip the gradients' total 2-norm to this value before each optimiser step.
    patience : int, optional
        Stop when validation MAE has not improved for this many epochs in a row.
    test_on : str
        ``"best"``: score the test split with the parameters of the best validation MAE;
        ``"last"``: with those of the last epoch.
    seed : int
        Seeds model initialisation and the samplers.
    shuffle : str
        ``"window"`` (default): in ``partitioned``, each epoch a seeded permutation of the
        rank's own windows; ``"batch"``: the paper's shuffle of the order of fixed batches of
        consecutive windows. A streamed rank shuffles windows across its resident blocks.
    max_batches : int, optional
        Training batches per epoch (bounded runs, demos, benchmarks).
    eval_batches : int, optional
        Evaluation batches per rank per split (default: every window).
    max_memory : int, optional
        Bytes of series and batch buffers a rank may hold (not counting the interpreter, the
        model or autograd); a rank whose data needs more streams it in chunk-aligned blocks
        with prefetch, evaluation included (default: load it whole).
    checkpoint_dir : str, optional
        Write ``last.pt`` there after every epoch, and ``best.pt`` after every epoch that
        improves validation MAE.
    resume : bool
        Continue from ``checkpoint_dir`` (same configuration required).
    log_path : str, optional
        JSON log, rewritten after every epoch.
    tensorboard_dir : str, optional
        TensorBoard event files, written by rank 0 (needs the ``tensorboard`` extra).
    scheduler_file, scheduler_address : str, optional
        Run the DDP ranks on an existing Dask cluster instead of a ``LocalCluster``.
    threads : int, optional
        ``torch.set_num_threads`` in every rank (default: torch's choice, or
        ``cpu_count // workers`` in DDP modes).
    progress : bool
        Progress bar on rank 0 (the one line per epoch prints either way).
    device : {"cuda", "auto"}, optional
        Mode ``device`` only: ``"cuda"`` (default) refuses to run without a usable CUDA
        device; ``"auto"`` falls back to the CPU.
    oversubscribe : bool
        Allow more ranks of an embedded cluster than CPU cores.
    memory_interval : float
        Seconds between host-RSS samples.
    horizons : tuple of int
        Horizon steps reported separately.
    recompute : bool
        ``dcrnn`` only: activation checkpointing of every cell step (only hidden states are kept
        for the backward pass, which runs each step's forward again).
    """

    model: str = MODELS[0]
    model_options: Mapping[str, Any] = field(default_factory=dict)
    mode: str = "single"
    workers: int = 1
    epochs: int = field(default=1, metadata=FREE)
    batch_size: int = 64
    lr: float = 0.01
    lr_scaling: bool = False
    warmup_epochs: float = 1.0
    lr_milestones: tuple[int, ...] = ()
    lr_decay: float = 0.1
    clip_grad_norm: float | None = None
    patience: int | None = field(default=None, metadata=FREE)
    test_on: str = field(default="best", metadata=FREE)
    seed: int = 0
    shuffle: str = "window"
    max_batches: int | None = None
    eval_batches: int | None = field(default=None, metadata=FREE)
    max_memory: int | None = None
    checkpoint_dir: str | None = field(default=None, metadata=FREE)
    resume: bool = field(default=False, metadata=FREE)
    log_path: str | None = field(default=None, metadata=FREE)
    tensorboard_dir: str | None = field(default=None, metadata=FREE)
    scheduler_file: str | None = field(default=None, metadata=FREE)
    scheduler_address: str | None = field(default=None, metadata=FREE)
    threads: int | None = field(default=None, metadata=FREE)
    progress: bool = field(default=True, metadata=FREE)
    device: str | None = field(default=None, metadata=FREE)
    oversubscribe: bool = field(default=False, metadata=FREE)
    memory_interval: float = field(default=0.2, metadata=FREE)
    horizons: tuple[int, ...] = field(default=DEFAULT_HORIZONS, metadata=FREE)
    recompute: bool = field(default=False, metadata=FREE)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_options", dict(self.model_options))
        for name in ("checkpoint_dir", "log_path", "scheduler_file", "tensorboard_dir"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, os.fspath(value))
        object.__setattr__(self, "horizons", tuple(int(h) for h in self.horizons))
        object.__setattr__(self, "lr_milestones", tuple(self.lr_milestones))
        if self.model not in MODELS:
            raise SpecError(f"unknown model {self.model!r} (choose from {', '.join(MODELS)})")
        if self.mode not in MODES:
            raise SpecError(f"unknown mode {self.mode!r} (choose from {', '.join(MODES)})")
        for name in ("workers", "epochs", "batch_size"):
            _positive("run", name, getattr(self, name))
        for name in ("max_batches", "eval_batches", "threads", "max_memory"):
            _positive("run", name, getattr(self, name), optional=True)
        if not self.lr > 0:
            raise SpecError(f"lr must be positive, got {self.lr}")
        self._check_protocol()
        if self.shuffle not in SHUFFLES:
            raise SpecError(f"unknown shuffle {self.shuffle!r} (choose from {', '.join(SHUFFLES)})")
        if self.mode not in DISTRIBUTED_MODES and self.workers != 1:
            raise SpecError(
                f"mode {self.mode!r} runs one process; use --mode full or "
                f"partitioned for {self.workers} workers"
            )
        if self.recompute and self.model != "dcrnn":
            raise SpecError(f"--recompute applies to dcrnn only, not {self.model}")
        if self.device is not None and self.mode != "device":
            raise SpecError(f"--device applies to --mode device only (mode is {self.mode!r})")
        if self.device not in (None, *DEVICES):
            raise SpecError(f"unknown device {self.device!r} (choose from {', '.join(DEVICES)})")
        if self.resume and self.checkpoint_dir is None:
            raise SpecError("--resume needs --checkpoint DIR")

    def _check_protocol(self) -> None:
        """Learning-rate milestones, clipping, early stopping and the tested parameters."""
        for m in self.lr_milestones:
            if isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 0:
                raise SpecError(f"lr_milestones must be epochs >= 0, got {m!r}")
        if list(self.lr_milestones) != sorted(set(self.lr_milestones)):
            raise SpecError(f"lr_milestones must increase, got {list(self.lr_milestones)}")
        if not 0 < self.lr_decay <= 1:
            raise SpecError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise SpecError(f"clip_grad_norm must be positive, got {self.clip_grad_norm}")
        _positive("run", "patience", self.patience, optional=True)
        if self.test_on not in TEST_ON:
            raise SpecError(f"test_on must be one of {', '.join(TEST_ON)}, got {self.test_on!r}")

    @property
    def world_size(self) -> int:
        """Number of ranks (1 in the single-process modes)."""
        return self.workers if self.mode in DISTRIBUTED_MODES else 1


PARTS: dict[str, type] = {
    "window": WindowSpec,
    "split": SplitSpec,
    "batch": BatchOptions,
    "run": RunOptions,
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on, in four typed parts.

    Build it from its parts, or from option names with :meth:`of` (each name belongs to exactly
    one part).
    """

    window: WindowSpec = field(default_factory=WindowSpec)
    split: SplitSpec = field(default_factory=SplitSpec)
    batch: BatchOptions = field(default_factory=BatchOptions)
    run: RunOptions = field(default_factory=RunOptions)

    @classmethod
    def of(cls, **options: Any) -> TrainConfig:
        """A configuration from option names, e.g. ``TrainConfig.of(epochs=3, horizon=6)``.

        Raises
        ------
        SpecError
            For a name that belongs to no part.
        """
        owner = {f.name: part for part, kind in PARTS.items() for f in dataclasses.fields(kind)}
        unknown = sorted(set(options) - set(owner))
        if unknown:
            raise SpecError(f"unknown training option(s): {', '.join(unknown)}")
        grouped: dict[str, dict[str, Any]] = {part: {} for part in PARTS}
        for name, value in options.items():
            grouped[owner[name]][name] = value
        return cls(**{part: PARTS[part](**kw) for part, kw in grouped.items()})

    def replace(self, **options: Any) -> TrainConfig:
        """A copy with some options (by name, as in :meth:`of`) changed."""
        return TrainConfig.of(**{**self.options(), **options})

    def options(self) -> dict[str, Any]:
        """Every option by name (the inverse of :meth:`of`)."""
        return {
            f.name: getattr(getattr(self, part), f.name)
            for part, kind in PARTS.items()
            for f in dataclasses.fields(kind)
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for JSON, checkpoints and the log: ``{part: {option: value}}``."""
        out: dict[str, Any] = {}
        for part in PARTS:
            values = dataclasses.asdict(getattr(self, part))
            out[part] = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`."""
        unknown = sorted(set(data) - set(PARTS))
        if unknown:
            raise SpecError(f"unknown configuration part(s): {', '.join(unknown)}")
        return cls.of(**{k: v for part in data.values() for k, v in part.items()})

    def resume_diff(self, saved: Mapping[str, Any]) -> list[str]:
        """Options that differ from ``saved`` (a :meth:`to_dict`) and must not for ``--resume``.

        Returns ``"part.option: saved -> ours"`` lines; empty when the run may continue.
        """
        ours = self.to_dict()
        out = []
        for part, kind in PARTS.items():
            theirs = saved.get(part, {}) if isinstance(saved.get(part), Mapping) else {}
            for f in dataclasses.fields(kind):
                if f.metadata.get("resume", True) and theirs.get(f.name) != ours[part][f.name]:
                    out.append(f"{part}.{f.name}: {theirs.get(f.name)!r} -> {ours[part][f.name]!r}")
        return out
