"""``stzarr synth``: generate a METR-LA / PeMS-layout pandas HDF5 traffic file."""

from __future__ import annotations

import argparse
import json

from stzarr.synth import FORMATS, LABEL_KINDS, synth_traffic


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synth`` sub-command."""
    parser = subparsers.add_parser(
        "synth",
        help="generate a realistic METR-LA/PeMS-layout traffic HDF5 file",
        description="Generate a traffic speed file in exactly the METR-LA/PeMS pandas HDF5 "
        "layout (5-minute DatetimeIndex x sensor columns, mph, 0 = missing), streamed to disk "
        "in time blocks. Without --graph a random sensor graph is made and written next to "
        "the output as <stem>_adj_mx.pkl (DCRNN format).",
    )
    parser.add_argument("dst", metavar="DST.h5", help="output file")
    parser.add_argument("--nodes", type=int, help="number of sensors (default: the graph's)")
    parser.add_argument("--steps", type=int, required=True, help="number of time steps")
    parser.add_argument("--graph", metavar="PKL", help="DCRNN adj_mx.pkl giving ids and structure")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--key", default="df", help="pandas key (df; PeMS-BAY: speed)")
    parser.add_argument("--format", choices=FORMATS, default="fixed", help="pandas format")
    parser.add_argument("--labels", choices=LABEL_KINDS, default="str", help="column label type")
    parser.add_argument("--start", default="2012-03-01", help="first timestamp")
    parser.add_argument("--freq-minutes", type=int, default=5, help="sampling interval")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``stzarr synth``."""
    result = synth_traffic(
        args.dst,
        steps=args.steps,
        nodes=args.nodes,
        graph=args.graph,
        seed=args.seed,
        key=args.key,
        format=args.format,
        labels=args.labels,
        start=args.start,
        freq_minutes=args.freq_minutes,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(
            f"wrote {result.path}: {result.n_steps} steps x {result.n_nodes} sensors, key "
            f"{result.key!r}, {result.format} format, {result.missing_fraction:.1%} missing zeros"
        )
        if result.adjacency:
            print(f"wrote {result.adjacency} (DCRNN adjacency pickle)")
    return 0
