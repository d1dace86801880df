"""``stzarr plot``: memory over time and learning curves from a training log."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``plot`` sub-command."""
    parser = subparsers.add_parser(
        "plot",
        help="memory over time and learning curves from a training log (PNG)",
        description="Draw host memory per rank over time and the learning curves (training "
        "loss, train and validation masked MAE per epoch) from a log written by "
        "`stzarr train --log LOG.json`.",
    )
    parser.add_argument("log", metavar="LOG.json", help="training log")
    parser.add_argument(
        "-o", "--output", metavar="DIR", help="output directory (default: the log's directory)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``stzarr plot``."""
    from stzarr.plot import plot_log

    for path in plot_log(args.log, args.output):
        print(path)
    return 0
