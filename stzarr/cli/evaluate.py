"""``stzarr evaluate``: score a trained model on a store, next to the historical average."""

from __future__ import annotations

import argparse
import json
from typing import Any

from stzarr.cli.options import add_options, option_value
from stzarr.plan.windows import SPLITS
from stzarr.training.config import RunOptions

SHARED = ("workers", "max_memory", "batch_size")
"""The training options that select how evaluation and prediction run (same flags, same
defaults)."""


def add_selection_args(parser: argparse.ArgumentParser) -> None:
    """``STORE``, ``--checkpoint``, the window selection, ``--workers``, ``--max-memory``,
    ``--batch-size``: the flags ``evaluate`` and ``predict`` share."""
    parser.add_argument("store", metavar="STORE", help="stzarr store (path or URL)")
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="CKPT",
        help="checkpoint file, or a directory (best.pt when present, else last.pt)",
    )
    parser.add_argument(
        "--split",
        choices=SPLITS,
        help="windows of this split, cut as the training run cut it (default test)",
    )
    parser.add_argument("--start", metavar="T0", help="every window from this timestamp on")
    parser.add_argument("--stop", metavar="T1", help="... ending before this timestamp")
    add_options(parser, RunOptions, SHARED)


def selection(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`stzarr.evaluate` and :func:`stzarr.predict`."""
    return {
        "split": args.split,
        "start": args.start,
        "stop": args.stop,
        **{name: option_value(args, name) for name in SHARED},
    }


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` sub-command."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score a trained model (masked MAE/RMSE/MAPE per horizon) against the historical "
        "average",
        description="Score a checkpoint on a store: masked MAE, RMSE and MAPE overall and at "
        "every horizon step, next to the historical average on the same windows. The store "
        "may be the one trained on or another with the same sensors, graph and features; "
        "inputs are standardised with the checkpoint's statistics.",
    )
    add_selection_args(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def _cells(m: dict[str, Any]) -> str:
    return f"{m['mae']:9.4f} {m['rmse']:9.4f} {m['mape']:8.2f}%"


def run(args: argparse.Namespace) -> int:
    """Execute ``stzarr evaluate``."""
    from stzarr.inference.evaluation import evaluate

    result = evaluate(args.store, args.checkpoint, **selection(args))
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    ckpt = result["checkpoint"]
    print(
        f"{result['store']}: {result['selection']}, {result['windows']} windows issued "
        f"{result['time'][0]} .. {result['time'][1]}"
    )
    print(
        f"checkpoint {ckpt['path']} ({ckpt['model']['name']}, epoch {ckpt['epoch']}, "
        f"sha256 {ckpt['sha256'][:12]}); historical average fitted on "
        f"{result['historical_average_fit'][0]} .. {result['historical_average_fit'][1]}"
    )
    model, base = result["model"], result["historical_average"]
    header = f"{'MAE':>9} {'RMSE':>9} {'MAPE':>9}"
    print(f"{'horizon':>8}  {'model':^29}  {'historical average':^29}")
    print(f"{'':>8}  {header}  {header}")
    for h, m in model["horizons"].items():
        print(f"{h:>8}  {_cells(m)}  {_cells(base['horizons'][h])}")
    print(f"{'all':>8}  {_cells(model)}  {_cells(base)}")
    return 0
