"""``stzarr stats``: compute (once, then cached in the store) and print train-split statistics."""

from __future__ import annotations

import argparse
import json

import numpy as np

from stzarr.cli.options import add_config_arg, add_options, split_spec
from stzarr.store.format import open_store
from stzarr.store.stats import cache_stats, cached_stats, compute_stats
from stzarr.training.config import SplitSpec


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``stats`` sub-command."""
    parser = subparsers.add_parser(
        "stats",
        help="train-split mean/std per feature (cached in the store)",
        description="Compute the mean and standard deviation of the valid readings of the "
        "training split, lazily over the store's chunks (float64, missing readings excluded), "
        "cache them in the store's attributes and print them. The split is given by fractions "
        "(--train/--val) or by timestamps (--val-start/--test-start).",
    )
    parser.add_argument("store", metavar="STORE", help="stzarr store (path or URL)")
    add_config_arg(parser)
    add_options(parser, SplitSpec)
    parser.add_argument("--per-node", action="store_true", help="per node and feature")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``stzarr stats``."""
    split = split_spec(args)
    store = open_store(args.store)
    bounds = split.bounds(store.time)
    train = bounds["train"]
    stats = None if args.no_cache else cached_stats(store, bounds=train, per_node=args.per_node)
    cached = stats is not None
    if stats is None:
        stats = compute_stats(store, bounds=train, per_node=args.per_node)
        if not args.no_cache:
            cache_stats(store, stats)
    first, last = (np.datetime_as_string(store.time[i], unit="s") for i in (train[0], train[1] - 1))
    if args.json:
        out = {
            "store": store.path,
            "bounds": {k: list(v) for k, v in bounds.items()},
            "train_time": [str(first), str(last)],
            "features": store.feature_names,
            "cached": cached,
            **stats.to_dict(),
        }
        print(json.dumps(out, indent=2))
        return 0
    source = "cache" if cached else "computed"
    print(f"{store.path}: train steps [{train[0]}, {train[1]}) = {first} .. {last} ({source})")
    if stats.per_node:
        print(f"per node-feature statistics, shape {stats.mean.shape}; use --json for values")
        for j, name in enumerate(store.feature_names):
            m, s = stats.mean[:, j], stats.std[:, j]
            print(f"  {name}: mean {m.min():.6g}..{m.max():.6g}, std {s.min():.6g}..{s.max():.6g}")
        return 0
    width = max(len(n) for n in store.feature_names)
    print(f"  {'feature':<{width}}  {'mean':>14}  {'std':>14}  {'valid':>12}")
    for j, name in enumerate(store.feature_names):
        print(
            f"  {name:<{width}}  {stats.mean[j]:>14.8g}  {stats.std[j]:>14.8g}  "
            f"{int(stats.count[j]):>12,}"
        )
    return 0
