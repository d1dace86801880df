"""The ``stzarr`` command line. Each sub-command lives in its own module of this package and
exposes ``register(subparsers)``, which adds its parser and sets ``func`` (args -> exit code).

User mistakes (any :class:`stzarr.errors.StzarrError`) print one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from stzarr import __version__
from stzarr.errors import StzarrError
from stzarr.io_config import PIPELINES, active_pipeline, configure_io

COMMANDS = ("synth", "convert", "info", "stats", "plan", "rechunk", "train", "plot")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="stzarr", description="Zarr-backed data engine for spatiotemporal GNN training."
    )
    parser.add_argument("--version", action="version", version=f"stzarr {__version__}")
    parser.add_argument(
        "--codec-pipeline",
        choices=PIPELINES,
        default=None,
        help="chunk codec pipeline (default: $STZARR_CODEC_PIPELINE or auto: zarrs if installed)",
    )
    parser.add_argument(
        "--io-threads",
        type=int,
        default=None,
        help="codec threads (default: $STZARR_IO_THREADS or one per CPU)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log the I/O set-up (codec pipeline) on stderr"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"stzarr.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"stzarr.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args = build_parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        if args.codec_pipeline is not None or args.io_threads is not None:
            configure_io(args.codec_pipeline, args.io_threads)
        else:
            logging.getLogger("stzarr.io").info(active_pipeline().describe())
        return int(args.func(args) or 0)
    except StzarrError as exc:
        print(f"stzarr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stzarr {args.command}: interrupted", file=sys.stderr)
        return 130
