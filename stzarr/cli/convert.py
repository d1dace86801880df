"""``stzarr convert``: turn source files (several in time order) into a store."""

from __future__ import annotations

import argparse
import json
import sys

from stzarr.converters import CONVERTERS, convert
from stzarr.errors import StzarrError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``convert`` sub-command."""
    parser = subparsers.add_parser(
        "convert",
        help="convert source files (pandas HDF5, CSV, Parquet, PGT JSON) into a store",
        description="Convert SRC (several files: concatenated along time, in the order given; "
        "they must follow each other at the source frequency) into the Zarr store DST, "
        "streaming in time blocks. The store is written to a hidden sibling and renamed at the "
        "end, so an interrupted run leaves nothing that opens as a store. Source families: "
        f"{', '.join(CONVERTERS)}.",
    )
    parser.add_argument(
        "paths", nargs="+", metavar="SRC... DST", help="source files, then the store to create"
    )
    parser.add_argument(
        "--adjacency",
        "--graph",
        dest="adjacency",
        metavar="FILE",
        help="graph: DCRNN adj_mx.pkl, dense .npy/.npz (with --graph-ids) or distance CSV "
        "from,to,cost",
    )
    parser.add_argument(
        "--graph-ids",
        metavar="FILE",
        help="sensor ids of a dense adjacency or distance CSV: metadata CSV with an ID / "
        "sensor_id column (LargeST ca_meta.csv) or an id list (graph_sensor_ids.txt)",
    )
    parser.add_argument(
        "--graph-threshold",
        type=float,
        metavar="K",
        help="distance CSV: drop Gaussian-kernel weights below K (default 0.1, as DCRNN)",
    )
    parser.add_argument("--key", help="pandas key (default: the only DataFrame in the file)")
    parser.add_argument("--time-column", metavar="NAME", help="CSV/Parquet time column")
    parser.add_argument(
        "--start", metavar="TIME", help="first timestamp of sources without a time column"
    )
    parser.add_argument(
        "--freq", metavar="DUR", help="sampling interval of sources without one (e.g. 5min)"
    )
    parser.add_argument(
        "--missing-value",
        choices=("zero", "nan"),
        help="missing-reading convention (default: zero for HDF5 traffic files, else nan)",
    )
    parser.add_argument("--feature", metavar="NAME", help="feature name (default: speed)")
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
    if len(args.paths) < 2:
        raise StzarrError("give at least one source file and the store to create (SRC... DST)")
    *srcs, dst = args.paths
    result = convert(
        srcs,
        dst,
        adjacency=args.adjacency,
        graph_ids=args.graph_ids,
        graph_threshold=args.graph_threshold,
        key=args.key,
        time_column=args.time_column,
        start=args.start,
        freq=args.freq,
        missing_value=args.missing_value,
        feature=args.feature,
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
