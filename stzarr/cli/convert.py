"""``stzarr convert``: turn a source file into a store."""

from __future__ import annotations

import argparse
import json
import sys

from stzarr.converters import CONVERTERS, convert


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``convert`` sub-command."""
    parser = subparsers.add_parser(
        "convert",
        help="convert a source file (pandas HDF5, PGT JSON) into a store",
        description="Convert SRC into the Zarr store DST, streaming in time blocks. The store "
        "is written to a hidden sibling and renamed at the end, so an interrupted run leaves "
        f"nothing that opens as a store. Source families: {', '.join(CONVERTERS)}.",
    )
    parser.add_argument("src", metavar="SRC", help="source file (.h5 or .json)")
    parser.add_argument("dst", metavar="DST", help="store to create (e.g. metr-la.zarr)")
    parser.add_argument("--adjacency", metavar="PKL", help="DCRNN adj_mx.pkl (HDF5 sources)")
    parser.add_argument("--key", help="pandas key (default: the only DataFrame in the file)")
    parser.add_argument("--chunk-time", type=int, metavar="N", help="steps per chunk")
    parser.add_argument(
        "--shard-time",
        type=int,
        metavar="N",
        help="steps per shard file (a multiple of --chunk-time; default: none)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store")
    parser.add_argument(
        "--allow-gaps",
        action="store_true",
        help="convert a time index with irregular spacing (recorded)",
    )
    parser.add_argument(
        "--no-checksum",
        action="store_true",
        help="skip the source SHA-256 (saves a read of the file)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``stzarr convert``."""
    result = convert(
        args.src,
        args.dst,
        adjacency=args.adjacency,
        key=args.key,
        chunk_time=args.chunk_time,
        shard_time=args.shard_time,
        overwrite=args.overwrite,
        allow_gaps=args.allow_gaps,
        checksum=not args.no_checksum,
        progress=not args.quiet,
    )
    for note in result.warnings:
        print(f"stzarr convert: warning: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        t, n, f = result.shape
        print(
            f"wrote {result.path}: {t} steps x {n} nodes x {f} feature(s), {result.n_edges} "
            f"edges, {result.missing['fraction']:.2%} missing ({result.family})"
        )
    return 0
