"""``stzarr append``: extend a store in time with new source files, atomically."""

from __future__ import annotations

import argparse
import json
import sys

from stzarr.converters.append import append_sources


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``append`` sub-command."""
    parser = subparsers.add_parser(
        "append",
        help="extend a store in time with new source files (atomic)",
        description="Append the steps of SRC... (in time order; the first must start one "
        "sampling interval after STORE ends) to STORE. The new version is built beside the "
        "store, sharing its unchanged chunk files by hard link, and swapped in at the end: "
        "a failure leaves STORE exactly as it was. Cached statistics are dropped; every "
        "source is recorded with its SHA-256.",
    )
    parser.add_argument("store", metavar="STORE", help="the store to extend")
    parser.add_argument("srcs", nargs="+", metavar="SRC", help="source files, in time order")
    parser.add_argument("--key", help="pandas key (default: the only DataFrame in each file)")
    parser.add_argument("--time-column", metavar="NAME", help="CSV/Parquet time column")
    parser.add_argument(
        "--freq",
        metavar="DUR",
        help="interval of sources without a time column (default: the store's)",
    )
    parser.add_argument(
        "--allow-gaps",
        action="store_true",
        help="accept a gap after the store's end or irregular spacing (recorded)",
    )
    parser.add_argument("--no-checksum", action="store_true", help="skip the sources' SHA-256")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``stzarr append``."""
    result = append_sources(
        args.store,
        args.srcs,
        key=args.key,
        time_column=args.time_column,
        freq=args.freq,
        allow_gaps=args.allow_gaps,
        checksum=not args.no_checksum,
        progress=not args.quiet,
    )
    for note in result.warnings:
        print(f"stzarr append: note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        t, n, f = result.shape
        print(
            f"appended {result.new_steps} steps from {len(result.files)} file(s) to "
            f"{result.path}: now {t} steps x {n} nodes x {f} feature(s)"
        )
    return 0
