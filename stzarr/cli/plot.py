"""``stzarr plot``: memory over time and learning curves from a training log, or one sensor's
forecast against the truth from a forecast store."""

from __future__ import annotations

import argparse
from pathlib import Path

from stzarr.errors import StzarrError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``plot`` sub-command."""
    parser = subparsers.add_parser(
        "plot",
        help="learning curves and memory from a training log, or a sensor's forecasts (PNG)",
        description="Given a log written by `stzarr train --log LOG.json`: draw host memory "
        "per rank over time and the learning curves (training loss, train and validation "
        "masked MAE per epoch). Given a store written by `stzarr predict`: draw one sensor's "
        "forecast at one horizon against the truth over time, with the historical average.",
    )
    parser.add_argument(
        "log", metavar="LOG.json|FORECASTS.zarr", help="training log or forecast store"
    )
    parser.add_argument(
        "-o", "--output", metavar="DIR", help="output directory (default: the input's directory)"
    )
    parser.add_argument("--node", metavar="ID", help="sensor id (forecast stores)")
    parser.add_argument("--horizon", type=int, metavar="H", help="horizon step (default: the last)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``stzarr plot``."""
    if Path(args.log).is_dir():
        from stzarr.inference.forecasts import plot_forecast

        if args.node is None:
            raise StzarrError("--node ID is needed to plot a forecast store")
        print(plot_forecast(args.log, args.node, horizon=args.horizon, out_dir=args.output))
        return 0
    from stzarr.plot import plot_log

    if args.node is not None or args.horizon is not None:
        raise StzarrError("--node and --horizon apply to forecast stores, not training logs")
    for path in plot_log(args.log, args.output):
        print(path)
    return 0
