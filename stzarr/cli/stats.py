"""``stzarr stats``: compute (once, then cached in the store) and print train-split statistics."""

from __future__ import annotations

import argparse
import json

import numpy as np

from stzarr.errors import SpecError
from stzarr.stats import CACHE_ATTR, compute_stats, stats_key
from stzarr.store import open_store
from stzarr.windows import split_bounds, split_bounds_at


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
    parser.add_argument("--train", type=float, default=0.7, help="train fraction (default 0.7)")
    parser.add_argument("--val", type=float, default=0.1, help="validation fraction (0.1)")
    parser.add_argument("--val-start", metavar="TIME", help="first validation timestamp")
    parser.add_argument("--test-start", metavar="TIME", help="first test timestamp")
    parser.add_argument("--per-node", action="store_true", help="per node and feature")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``stzarr stats``."""
    store = open_store(args.store)
    n_time = store.shape[0]
    if (args.val_start is None) != (args.test_start is None):
        raise SpecError("give both --val-start and --test-start, or neither")
    if args.val_start is not None:
        try:
            bounds = split_bounds_at(store.time, args.val_start, args.test_start)
        except ValueError as exc:
            raise SpecError(f"cannot parse timestamp ({exc})") from None
    else:
        bounds = split_bounds(n_time, args.train, args.val)
    train = bounds["train"]
    cached = stats_key(train, args.per_node) in store.attrs.get(CACHE_ATTR, {})
    stats = compute_stats(store, bounds=train, per_node=args.per_node, cache=not args.no_cache)
    first, last = (np.datetime_as_string(store.time[i], unit="s") for i in (train[0], train[1] - 1))
    if args.json:
        out = {
            "store": store.path,
            "bounds": {k: list(v) for k, v in bounds.items()},
            "train_time": [str(first), str(last)],
            "features": store.feature_names,
            "cached": bool(cached and not args.no_cache),
            **stats.to_dict(),
        }
        print(json.dumps(out, indent=2))
        return 0
    source = "cache" if cached and not args.no_cache else "computed"
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
