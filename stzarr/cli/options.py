"""The command-line flags of the configuration parts, shared by ``plan``, ``stats`` and ``train``.

Each ``add_*`` adds one part's flags to a parser; each builder turns the parsed arguments into
that part (:mod:`stzarr.training.config`). Defaults are those of the dataclasses, so a flag means
the same and defaults to the same in every sub-command.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import TypeVar

from stzarr.errors import SpecError
from stzarr.plan.partition import SHUFFLES
from stzarr.plan.rank import MODES
from stzarr.plan.windows import WindowSpec
from stzarr.training.config import (
    DEVICES,
    MODELS,
    TEST_ON,
    BatchOptions,
    RunOptions,
    SplitSpec,
    TrainConfig,
)
from stzarr.units import parse_bytes

WINDOW = WindowSpec()
SPLIT = SplitSpec()
RUN = RunOptions()
T = TypeVar("T")


def positive_int(text: str) -> int:
    """``argparse`` type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def size(text: str) -> int:
    """``argparse`` type: a size in bytes such as ``500MB`` or ``2GiB``."""
    try:
        return parse_bytes(text)
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _epochs(text: str) -> tuple[int, ...]:
    """``argparse`` type: comma-separated epochs >= 0, e.g. ``20,30,40,50``."""
    try:
        return tuple(int(e) for e in _names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of epochs: {text!r}") from None


def add_window_args(parser: argparse.ArgumentParser) -> None:
    """``--input-steps``, ``--horizon``, ``--stride``."""
    group = parser.add_argument_group("windows")
    group.add_argument(
        "--input-steps",
        type=positive_int,
        default=WINDOW.input_steps,
        metavar="N",
        help=f"steps a sample sees (default {WINDOW.input_steps})",
    )
    group.add_argument(
        "--horizon",
        type=positive_int,
        default=WINDOW.horizon,
        metavar="N",
        help=f"steps to predict (default {WINDOW.horizon})",
    )
    group.add_argument(
        "--stride",
        type=positive_int,
        default=WINDOW.stride,
        metavar="N",
        help=f"distance between consecutive starts (default {WINDOW.stride})",
    )


def window_spec(args: argparse.Namespace) -> WindowSpec:
    """The :class:`WindowSpec` of parsed arguments."""
    return WindowSpec(args.input_steps, args.horizon, args.stride)


def add_split_args(parser: argparse.ArgumentParser) -> None:
    """``--train``, ``--val``, ``--val-start``, ``--test-start``, ``--exclude-gaps``,
    ``--cross-splits``."""
    group = parser.add_argument_group("splits")
    group.add_argument(
        "--train", type=float, default=SPLIT.train, help=f"train fraction (default {SPLIT.train})"
    )
    group.add_argument(
        "--val", type=float, default=SPLIT.val, help=f"validation fraction (default {SPLIT.val})"
    )
    group.add_argument("--val-start", metavar="TIME", help="first validation timestamp")
    group.add_argument("--test-start", metavar="TIME", help="first test timestamp")
    group.add_argument(
        "--exclude-gaps", action="store_true", help="drop windows that read across a gap in time"
    )
    group.add_argument(
        "--cross-splits",
        action="store_true",
        help="let windows read past their split's end (PGT's convention)",
    )


def _same_names(cls: type[T], args: argparse.Namespace) -> T:
    """``cls`` built from the parsed arguments named as its fields (one flag per field)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def split_spec(args: argparse.Namespace) -> SplitSpec:
    """The :class:`SplitSpec` of parsed arguments."""
    return _same_names(SplitSpec, args)


def add_batch_args(parser: argparse.ArgumentParser) -> None:
    """Features, calendar channels and missing fill."""
    group = parser.add_argument_group("batches")
    group.add_argument(
        "--input-features", type=_names, metavar="A,B", help="data features in x (default all)"
    )
    group.add_argument(
        "--target-features", type=_names, metavar="A,B", help="features to forecast (default all)"
    )
    group.add_argument(
        "--time-of-day",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time-of-day channel in x (default: when sampled more often than daily)",
    )
    group.add_argument("--day-of-week", action="store_true", help="day-of-week channels in x")
    group.add_argument(
        "--fill-missing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="missing inputs as 0, the train mean (default: for NaN-missing stores)",
    )


def batch_options(args: argparse.Namespace) -> BatchOptions:
    """The :class:`BatchOptions` of parsed arguments."""
    return _same_names(BatchOptions, args)


def add_workers_args(parser: argparse.ArgumentParser) -> None:
    """``--workers`` and ``--batch-size``, which the partition plan needs too."""
    parser.add_argument(
        "--workers",
        "-w",
        type=positive_int,
        default=RUN.workers,
        metavar="W",
        help=f"DDP ranks, modes full and partitioned (default {RUN.workers})",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=RUN.batch_size,
        metavar="B",
        help=f"samples per batch per worker (default {RUN.batch_size})",
    )


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """Model, mode, epochs, optimiser and schedule, checkpoints, cluster, measurement."""
    add_workers_args(parser)
    parser.add_argument(
        "--model",
        choices=MODELS,
        default=RUN.model,
        help=f"model (default {RUN.model}): dcrnn, the released DCRNN's encoder-decoder; "
        "pgt-batched-dcrnn, PGT's BatchedDCRNN as PGT-I runs it (output step h after h inputs); "
        "a3tgcn, PGT's A3TGCN2",
    )
    parser.add_argument("--hidden", type=positive_int, help="hidden units (model default)")
    parser.add_argument(
        "--recompute",
        action="store_true",
        help="dcrnn: recompute each cell step in the backward pass, keeping only hidden states "
        "(a tenth of the memory per sample on wide graphs, 1.6x the time or more; "
        "docs/models.md)",
    )
    parser.add_argument(
        "--mode", choices=MODES, default=RUN.mode, help=f"execution mode (default {RUN.mode})"
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=RUN.epochs, help=f"epochs (default {RUN.epochs})"
    )
    parser.add_argument(
        "--lr", type=float, default=RUN.lr, help=f"Adam learning rate (default {RUN.lr})"
    )
    parser.add_argument(
        "--lr-scaling",
        action="store_true",
        help="scale lr linearly with the number of workers, with warm-up",
    )
    parser.add_argument(
        "--warmup-epochs",
        type=float,
        default=RUN.warmup_epochs,
        help=f"warm-up length with --lr-scaling (default {RUN.warmup_epochs} epoch)",
    )
    add_protocol_args(parser)
    parser.add_argument("--seed", type=int, default=RUN.seed, help=f"seed (default {RUN.seed})")
    parser.add_argument(
        "--shuffle",
        choices=SHUFFLES,
        default=RUN.shuffle,
        help="partitioned: 'window' permutes each rank's windows every epoch, 'batch' shuffles "
        f"the order of fixed batches as in the paper (default {RUN.shuffle})",
    )
    parser.add_argument("--max-batches", type=positive_int, help="training batches per epoch")
    parser.add_argument(
        "--eval-batches",
        type=positive_int,
        help="evaluation batches per worker and split (default: all)",
    )
    parser.add_argument(
        "--checkpoint", metavar="DIR", help="write DIR/last.pt every epoch, DIR/best.pt when best"
    )
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument("--log", metavar="LOG.json", help="JSON log, rewritten every epoch")
    parser.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="write TensorBoard event files to DIR (needs the tensorboard extra)",
    )
    parser.add_argument("--scheduler-file", metavar="F", help="existing Dask cluster's file")
    parser.add_argument("--scheduler-address", metavar="A", help="existing Dask scheduler")
    parser.add_argument("--threads", type=positive_int, help="torch threads per worker")
    parser.add_argument(
        "--max-memory",
        type=size,
        metavar="SIZE",
        help="bytes of series and batch buffers a worker may hold, e.g. 2GB; a worker whose "
        "data needs more streams it in blocks (default: no limit)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (epoch lines still print)"
    )
    parser.add_argument(
        "--device",
        choices=DEVICES,
        help="mode device: cuda (default) refuses to run without CUDA; auto falls back to the CPU",
    )
    parser.add_argument(
        "--oversubscribe",
        action="store_true",
        help="allow more workers than CPU cores on the embedded cluster",
    )


def add_protocol_args(parser: argparse.ArgumentParser) -> None:
    """Learning-rate milestones, gradient clipping, early stopping, tested parameters."""
    group = parser.add_argument_group("training protocol")
    group.add_argument(
        "--lr-milestones",
        type=_epochs,
        default=RUN.lr_milestones,
        metavar="E1,E2",
        help="epochs (0-based) from which lr is multiplied by --lr-decay, e.g. 20,30,40,50",
    )
    group.add_argument(
        "--lr-decay",
        type=float,
        default=RUN.lr_decay,
        help=f"factor applied at each milestone (default {RUN.lr_decay})",
    )
    group.add_argument(
        "--clip-grad-norm",
        type=float,
        metavar="MAX",
        help="clip the gradients' total 2-norm to MAX before each step (DCRNN: 5)",
    )
    group.add_argument(
        "--patience",
        type=positive_int,
        metavar="N",
        help="stop when validation MAE has not improved for N epochs in a row",
    )
    group.add_argument(
        "--test-on",
        choices=TEST_ON,
        default=RUN.test_on,
        help=f"score test with the best-on-validation or the last parameters (default "
        f"{RUN.test_on})",
    )


def run_options(args: argparse.Namespace) -> RunOptions:
    """The :class:`RunOptions` of parsed arguments."""
    return RunOptions(
        model=args.model,
        model_options={} if args.hidden is None else {"hidden": args.hidden},
        mode=args.mode,
        workers=args.workers,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_scaling=args.lr_scaling,
        warmup_epochs=args.warmup_epochs,
        lr_milestones=args.lr_milestones,
        lr_decay=args.lr_decay,
        clip_grad_norm=args.clip_grad_norm,
        patience=args.patience,
        test_on=args.test_on,
        seed=args.seed,
        shuffle=args.shuffle,
        max_batches=args.max_batches,
        eval_batches=args.eval_batches,
        checkpoint_dir=args.checkpoint,
        resume=args.resume,
        log_path=args.log,
        tensorboard_dir=args.tensorboard,
        scheduler_file=args.scheduler_file,
        scheduler_address=args.scheduler_address,
        threads=args.threads,
        progress=not args.no_progress,
        max_memory=args.max_memory,
        recompute=args.recompute,
        device=args.device,
        oversubscribe=args.oversubscribe,
    )


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The whole :class:`TrainConfig` of parsed ``train`` arguments."""
    return TrainConfig(window_spec(args), split_spec(args), batch_options(args), run_options(args))
