"""The configuration of a training run, composed of typed parts: plain frozen dataclasses.

* :class:`~stzarr.plan.windows.WindowSpec`: the shape of a sample (input steps, horizon, stride);
* :class:`SplitSpec`: where train, validation and test lie (fractions or timestamps), gaps,
  cross-split windows;
* :class:`BatchOptions`: what a batch holds (features, calendar channels, missing fill);
* :class:`RunOptions`: how the run executes (model, mode, workers, epochs, optimiser and
  schedule, checkpoints, memory).

:class:`TrainConfig` holds one of each. Every option is declared once, here: each field's
metadata (:func:`option`) holds its help and how the command line spells it, and the CLI
generates its flags from the fields (:mod:`stzarr.cli.options`); values are checked only by the
dataclasses. :func:`stzarr.training.train.train` takes a :class:`TrainConfig`; a run's log and
checkpoints hold it as data (:meth:`TrainConfig.to_dict`), which :func:`read_config` reads back
as it reads a TOML, YAML or JSON configuration file. ``--resume`` starts from the checkpoint's
configuration with the options given changed (:meth:`TrainConfig.resumed`) and compares the two
as data (:meth:`TrainConfig.resume_diff`). Fields that may change between a run and its
resumption carry ``metadata={"resume": False}`` (``option(..., free=True)``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stzarr.data.contract import BatchContract
from stzarr.errors import SpecError
from stzarr.plan.partition import SHUFFLES
from stzarr.plan.rank import DISTRIBUTED_MODES, MODES
from stzarr.plan.windows import WindowPlan, WindowSpec, make_plan, split_bounds, split_bounds_at
from stzarr.units import parse_bytes

MODELS = ("dcrnn", "pgt-batched-dcrnn", "a3tgcn")
"""The model names :func:`stzarr.training.models.build_model` builds; the first is the default."""
DEFAULT_HORIZONS = (3, 6, 12)
"""Horizon steps whose metrics are reported by default (15, 30, 60 min at 5-minute steps)."""

DEVICES = ("cuda", "auto")
"""Values of :attr:`RunOptions.device`."""


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    default_factory: Any = dataclasses.MISSING,
    free: bool = False,
    **cli: Any,
) -> Any:
    """A configuration field whose metadata declares its command-line flag.

    Parameters
    ----------
    default, default_factory
        As for :func:`dataclasses.field`.
    help : str
        The flag's help (the default is added to it).
    free : bool
        The option may differ between a run and its ``--resume`` (continuation stays
        bit-exact); metadata ``"resume": False``.
    **cli
        Further metadata for :mod:`stzarr.cli.options`: ``flag`` (its name when not the
        field's), ``short``, ``metavar``, ``choices`` (shown in the help; checked here),
        ``parse`` (text to value, e.g. sizes) and ``keys`` (flags for single keys of a mapping).
    """
    metadata = {"help": help, **cli, **({"resume": False} if free else {})}
    return field(default=default, default_factory=default_factory, metadata=metadata)


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

    train: float = option(0.7, "train fraction")
    val: float = option(0.1, "validation fraction")
    val_start: str | None = option(None, "first validation timestamp", metavar="TIME")
    test_start: str | None = option(None, "first test timestamp", metavar="TIME")
    exclude_gaps: bool = option(False, "drop windows that read across a gap in time")
    cross_splits: bool = option(False, "let windows read past their split's end (PGT's convention)")

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

    input_features: tuple[str, ...] | None = option(
        None, "data features in x (default all)", metavar="A,B"
    )
    target_features: tuple[str, ...] | None = option(
        None, "features to forecast (default all)", metavar="A,B"
    )
    time_of_day: bool | None = option(
        None, "time-of-day channel in x (default: when sampled more often than daily)"
    )
    day_of_week: bool = option(False, "day-of-week channels in x")
    fill_missing: bool | None = option(
        None, "missing inputs as 0, the train mean (default: for NaN-missing stores)"
    )

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
        Continue from ``checkpoint_dir``: options other than the free ones (``epochs``,
        ``patience``, where logs go, ...) must equal the checkpoint's.
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

    model: str = option(
        MODELS[0],
        "dcrnn, the released DCRNN's encoder-decoder; pgt-batched-dcrnn, PGT's BatchedDCRNN as "
        "PGT-I runs it (output step h after h inputs); a3tgcn, PGT's A3TGCN2",
        choices=MODELS,
    )
    model_options: Mapping[str, Any] = option(
        help="model hyper-parameters as a JSON object, e.g. '{\"hidden\": 32}'",
        default_factory=dict,
        metavar="JSON",
        keys={"hidden": (int, "hidden units (model default)")},
    )
    mode: str = option("single", "execution mode", choices=MODES)
    workers: int = option(
        1,
        "worker processes (in training: the DDP ranks of modes full and partitioned)",
        short="-w",
        metavar="W",
    )
    epochs: int = option(1, "epochs in total (a resumed run continues up to it)", free=True)
    batch_size: int = option(64, "samples per batch per worker", metavar="B")
    lr: float = option(0.01, "Adam learning rate")
    lr_scaling: bool = option(False, "scale lr linearly with the number of workers, with warm-up")
    warmup_epochs: float = option(1.0, "warm-up length in epochs with --lr-scaling")
    lr_milestones: tuple[int, ...] = option(
        (),
        "epochs (0-based) from which lr is multiplied by --lr-decay, e.g. 20,30,40,50",
        metavar="E1,E2",
    )
    lr_decay: float = option(0.1, "factor applied at each milestone")
    clip_grad_norm: float | None = option(
        None, "clip the gradients' total 2-norm to MAX before each step (DCRNN: 5)", metavar="MAX"
    )
    patience: int | None = option(
        None,
        "stop when validation MAE has not improved for N epochs in a row",
        metavar="N",
        free=True,
    )
    test_on: str = option(
        "best",
        "score test with the best-on-validation or the last parameters",
        choices=TEST_ON,
        free=True,
    )
    seed: int = option(0, "seeds model initialisation and the samplers")
    shuffle: str = option(
        "window",
        "partitioned: 'window' permutes each rank's windows every epoch, 'batch' shuffles the "
        "order of fixed batches as in the paper",
        choices=SHUFFLES,
    )
    max_batches: int | None = option(None, "training batches per epoch", metavar="N")
    eval_batches: int | None = option(
        None, "evaluation batches per worker and split (default: all)", metavar="N", free=True
    )
    max_memory: int | None = option(
        None,
        "bytes of series and batch buffers a worker may hold, e.g. 2GB; a worker whose data "
        "needs more streams it in blocks (default: no limit)",
        metavar="SIZE",
        parse=parse_bytes,
    )
    checkpoint_dir: str | None = option(
        None,
        "write DIR/last.pt every epoch, DIR/best.pt when best",
        flag="checkpoint",
        metavar="DIR",
        free=True,
    )
    resume: bool = option(
        False,
        "continue from --checkpoint, with its configuration and the options given",
        free=True,
    )
    log_path: str | None = option(
        None, "JSON log, rewritten every epoch", flag="log", metavar="LOG.json", free=True
    )
    tensorboard_dir: str | None = option(
        None,
        "write TensorBoard event files to DIR (needs the tensorboard extra)",
        flag="tensorboard",
        metavar="DIR",
        free=True,
    )
    scheduler_file: str | None = option(
        None, "existing Dask cluster's file", metavar="F", free=True
    )
    scheduler_address: str | None = option(None, "existing Dask scheduler", metavar="A", free=True)
    threads: int | None = option(None, "torch threads per worker", metavar="N", free=True)
    progress: bool = option(True, "progress bar (epoch lines print either way)", free=True)
    device: str | None = option(
        None,
        "mode device: cuda (default) refuses to run without CUDA; auto falls back to the CPU",
        choices=DEVICES,
        free=True,
    )
    oversubscribe: bool = option(
        False, "allow more workers than CPU cores on the embedded cluster", free=True
    )
    memory_interval: float = option(0.2, "seconds between host-RSS samples", metavar="S", free=True)
    horizons: tuple[int, ...] = option(
        DEFAULT_HORIZONS, "horizon steps reported separately", metavar="H1,H2", free=True
    )
    recompute: bool = option(
        False,
        "dcrnn: recompute each cell step in the backward pass, keeping only hidden states (a "
        "tenth of the memory per sample on wide graphs, 1.6x the time or more; docs/models.md)",
        free=True,
    )

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
        for h in self.horizons:
            _positive("run", "horizons", h)
        for name in ("lr", "memory_interval"):
            if not getattr(self, name) > 0:
                raise SpecError(f"{name} must be positive, got {getattr(self, name)}")
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

    @classmethod
    def resumed(cls, saved: Mapping[str, Any], given: Mapping[str, Any]) -> TrainConfig:
        """The configuration of a ``--resume`` of the run ``saved`` (its checkpoint's
        :meth:`to_dict`) with the options ``given`` changed (``resume`` set).

        Changes that keep the continuation bit-exact, such as ``epochs``, are allowed
        (:meth:`resume_changes` lists them; :func:`stzarr.training.train.train` warns of them
        once the store is checked).

        Raises
        ------
        SpecError
            Naming, in one line, every change that would break bit-exact continuation.
        """
        if not saved:
            raise SpecError("--resume: the checkpoint records no configuration")
        base = cls.from_dict(saved)
        config = base.replace(**merge_options(base.options(), {**given, "resume": True}))
        breaking = config.resume_diff(saved)
        if breaking:
            raise SpecError(
                "--resume: changing " + "; ".join(breaking) + " would break bit-exact "
                "continuation (start a new run, or resume with the checkpoint's values)"
            )
        return config

    def resume_changes(self, saved: Mapping[str, Any]) -> list[str]:
        """Options that differ from ``saved`` (a :meth:`to_dict`) and may for ``--resume``
        (``"part.option: saved -> ours"``; not ``resume`` itself, nor where the checkpoint
        was read from)."""
        ours, theirs = self.to_dict(), TrainConfig.from_dict(saved).to_dict()
        return [
            f"{part}.{f.name}: {theirs[part][f.name]!r} -> {ours[part][f.name]!r}"
            for part, kind in PARTS.items()
            for f in dataclasses.fields(kind)
            if not f.metadata.get("resume", True)
            and ours[part][f.name] != theirs[part][f.name]
            and f.name not in UNREPORTED
        ]

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


UNREPORTED = frozenset({"resume", "checkpoint_dir"})
"""Options whose change on ``--resume`` goes without a warning (the resume itself, and where the
checkpoint was read from)."""

MAPPINGS = frozenset({"model_options"})
"""Options that are mappings: given ones update a configuration's key by key."""


def merge_options(base: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` options with ``given`` ones replacing them (mappings updated key by key)."""
    out = dict(base)
    for name, value in given.items():
        if name in MAPPINGS and isinstance(out.get(name), Mapping) and isinstance(value, Mapping):
            value = {**out[name], **value}
        out[name] = value
    return out


def option_fields() -> dict[str, tuple[str, dataclasses.Field, Any]]:
    """Every option: its name -> (its part, its field, its resolved type)."""
    out = {}
    for part, kind in PARTS.items():
        hints = typing.get_type_hints(kind)
        for f in dataclasses.fields(kind):
            out[f.name] = (part, f, hints[f.name])
    return out


def unwrap_optional(kind: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, ``(kind, False)`` otherwise."""
    args = typing.get_args(kind)
    if type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        return inner, True
    return kind, False


def _typed(name: str, f: dataclasses.Field, kind: Any, value: Any) -> Any:
    """``value`` of option ``name`` if it has the field's type (sizes may be text)."""
    kind, optional = unwrap_optional(kind)
    origin = typing.get_origin(kind) or kind
    if value is None and optional:
        return None
    if isinstance(value, str) and "parse" in f.metadata:
        return f.metadata["parse"](value)
    if origin is bool:
        ok, what = isinstance(value, bool), "true or false"
    elif origin is int:
        ok, what = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif origin is float:
        ok, what = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    elif origin is str:
        ok, what = isinstance(value, str), "a string"
    elif origin is tuple:
        (item, _) = typing.get_args(kind)
        ok = isinstance(value, list | tuple) and all(
            isinstance(v, item) and not isinstance(v, bool) for v in value
        )
        what = f"a list of {'integers' if item is int else 'strings'}"
        value = tuple(value) if ok else value
    else:  # a mapping
        ok, what = isinstance(value, Mapping), "a table of key = value"
    if not ok:
        raise SpecError(f"{name} must be {what}, got {value!r}")
    return float(value) if origin is float else value


def config_options(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The options of a configuration file's content: option names at the top, or in tables
    named for the parts (as :meth:`TrainConfig.to_dict` writes them).

    Raises
    ------
    SpecError
        In one line naming ``source`` and the key: a key that is no option (or an option in
        another part's table), or a value of the wrong type.
    """
    fields = option_fields()
    flat: dict[str, tuple[str, Any]] = {}
    for key, value in data.items():
        if key in PARTS and isinstance(value, Mapping):
            flat.update({k: (f"{key}.{k}", v) for k, v in value.items()})
            for k in value:
                if k in fields and fields[k][0] != key:
                    raise SpecError(f"{source}: {key}.{k}: {k} belongs to [{fields[k][0]}]")
        else:
            flat[key] = (key, value)
    out = {}
    for name, (where, value) in flat.items():
        if name not in fields:
            near = difflib.get_close_matches(name, fields, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise SpecError(f"{source}: {where} is not a training option{hint}")
        _, f, kind = fields[name]
        try:
            out[name] = _typed(name, f, kind, value)
        except SpecError as exc:
            raise SpecError(f"{source}: {exc}") from None
    return out


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The options of a configuration file, by name (see :func:`config_options`).

    ``.toml`` (stdlib ``tomllib``), ``.yaml``/``.yml`` (PyYAML, which Dask brings), ``.json``: a
    configuration, or a training log (its ``config``). A run's log holds its whole
    configuration, so it can be fed back (a checkpoint's: :func:`config_options` of
    ``load_checkpoint(...).config``).

    Raises
    ------
    SpecError
        An unreadable file, or one whose content is no configuration.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        text = path.read_text()
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml  # PyYAML comes with Dask

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ValueError(str(exc)) from None
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise SpecError(f"--config {path}: expected a .toml, .yaml, .json or .pt file")
    except OSError as exc:
        raise SpecError(f"--config {path}: cannot read it ({exc.strerror})") from None
    except (ValueError, ImportError) as exc:  # tomllib, json and yaml errors are ValueErrors
        raise SpecError(f"--config {path}: not valid {suffix[1:]} ({_first_line(exc)})") from None
    if isinstance(data, Mapping) and "epochs" in data and "config" in data:
        data = data["config"]  # a training log
    if not isinstance(data, Mapping):
        raise SpecError(f"--config {path}: expected a table of options")
    return config_options(data, str(path))


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
