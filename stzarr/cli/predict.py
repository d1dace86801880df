"""``stzarr predict``: write a trained model's forecasts as a Zarr store."""

from __future__ import annotations

import argparse

from stzarr.cli.evaluate import add_selection_args, selection


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` sub-command."""
    parser = subparsers.add_parser(
        "predict",
        help="write a trained model's forecasts (data units) as a Zarr store",
        description="Forecast every selected window of a store with a checkpoint and write "
        "the forecasts in the data's units to a Zarr store (variables forecast, target, "
        "missing and historical_average, dims time x horizon x node x feature; time is the "
        "issue time, the last input step), atomically, streamed and split across workers.",
    )
    add_selection_args(parser)
    parser.add_argument("--out", required=True, metavar="FORECASTS.zarr", help="store to write")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace --out if it is a forecast store"
    )
    parser.add_argument(
        "--future",
        action="store_true",
        help="also forecast from each of the last HORIZON steps, past the store's end (targets "
        "there missing); with the test split or --start",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``stzarr predict``."""
    from stzarr.inference.forecasts import predict

    ds = predict(
        args.store,
        args.checkpoint,
        args.out,
        overwrite=args.overwrite,
        future=args.future,
        **selection(args),
    )
    sizes = ", ".join(f"{k} {v}" for k, v in ds["forecast"].sizes.items())
    print(f"{args.out}: forecast ({sizes}) from {ds.attrs['checkpoint']['path']}")
    return 0
