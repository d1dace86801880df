"""``stzarr synth``: generate a METR-LA / PeMS-layout traffic file or a LargeST-layout dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stzarr.converters.synth import (
    FORMATS,
    LABEL_KINDS,
    LARGEST_NODES,
    synth_largest,
    synth_traffic,
)
from stzarr.errors import StzarrError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synth`` sub-command."""
    parser = subparsers.add_parser(
        "synth",
        help="generate a realistic METR-LA/PeMS-layout traffic HDF5 file",
        description="Generate a traffic speed file in exactly the METR-LA/PeMS pandas HDF5 "
        "layout (5-minute DatetimeIndex x sensor columns, mph, 0 = missing), streamed to disk "
        "in time blocks. Without --graph a random sensor graph is made and written next to "
        "the output as <stem>_adj_mx.pkl (DCRNN format). With --layout largest, DST is a "
        "directory that receives LargeST's files: ca_his_raw_<year>.h5 per year (key 't'), "
        "ca_meta.csv and the dense adjacency ca_rn_adj.npy.",
    )
    parser.add_argument("dst", metavar="DST", help="output file (.h5), or directory (largest)")
    parser.add_argument(
        "--layout",
        choices=("pems", "largest"),
        default="pems",
        help="pems: one METR-LA/PeMS file (default); largest: LargeST's yearly files",
    )
    parser.add_argument("--nodes", type=int, help="number of sensors (default: the graph's)")
    parser.add_argument("--steps", type=int, help="number of time steps (pems layout)")
    parser.add_argument(
        "--years",
        type=int,
        nargs="+",
        metavar="YEAR",
        help="consecutive years (largest layout, e.g. 2019 2020)",
    )
    parser.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        help="stored value type (largest layout; default float64)",
    )
    parser.add_argument("--graph", metavar="PKL", help="DCRNN adj_mx.pkl giving ids and structure")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--key", help="pandas key (pems layout; default df, PeMS-BAY: speed)")
    parser.add_argument("--format", choices=FORMATS, help="pandas format (pems layout; fixed)")
    parser.add_argument("--labels", choices=LABEL_KINDS, help="column label type (pems; str)")
    parser.add_argument("--start", help="first timestamp (pems layout; default 2012-03-01)")
    parser.add_argument(
        "--freq-minutes", type=int, default=5, help="sampling interval in minutes (default 5)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``stzarr synth``."""
    if args.layout == "largest":
        return _run_largest(args)
    if args.steps is None or args.years is not None:
        raise StzarrError("the pems layout takes --steps (and no --years)")
    _refuse(args, "pems", ("dtype",))
    result = synth_traffic(
        args.dst,
        steps=args.steps,
        nodes=args.nodes,
        graph=args.graph,
        seed=args.seed,
        key=args.key or "df",
        format=args.format or "fixed",
        labels=args.labels or "str",
        start=args.start or "2012-03-01",
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


def _refuse(args: argparse.Namespace, layout: str, names: tuple[str, ...]) -> None:
    """One line for options given that ``layout`` does not use (never silently ignored)."""
    given = [f"--{name}" for name in names if getattr(args, name) is not None]
    if given:
        raise StzarrError(f"the {layout} layout does not use {', '.join(given)}")


def _run_largest(args: argparse.Namespace) -> int:
    if args.steps is not None or args.graph is not None or not args.years:
        raise StzarrError("--layout largest takes --years (and neither --steps nor --graph)")
    _refuse(args, "largest", ("key", "format", "labels", "start"))
    directory = Path(args.dst)
    if not directory.exists() and directory.parent.is_dir():
        directory.mkdir()
    result = synth_largest(
        directory,
        years=args.years,
        nodes=args.nodes or LARGEST_NODES,
        seed=args.seed,
        dtype=args.dtype or "float64",
        freq_minutes=args.freq_minutes,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for path, steps in zip(result.his, result.steps, strict=True):
            print(f"wrote {path}: {steps} steps x {result.n_nodes} sensors")
        print(f"wrote {result.meta} and {result.adjacency}")
    return 0
