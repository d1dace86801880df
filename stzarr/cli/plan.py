"""``stzarr plan``: how a store's training windows are partitioned across DDP ranks."""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings

from stzarr.partition import PartitionPlan, SharedChunksWarning, store_partitions
from stzarr.store import open_store
from stzarr.windows import WindowSpec, make_plan


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``plan`` sub-command."""
    parser = subparsers.add_parser(
        "plan",
        help="show each rank's chunk-aligned partition of the training windows",
        description="Partition the training windows of STORE across W ranks (mode "
        "'partitioned'): contiguous ranges of starts whose boundaries fall on the store's time "
        "chunks. For each rank: its starts, the time range it reads (own range plus the "
        "input_steps + horizon - 1 halo), the chunks it touches, the bytes it decodes and the "
        "memory its standardised range takes. Nothing is read but metadata.",
    )
    parser.add_argument("store", metavar="STORE", help="store (path or URL)")
    parser.add_argument(
        "--workers", "-w", type=int, required=True, metavar="W", help="number of ranks"
    )
    parser.add_argument(
        "--input-steps", type=int, default=12, metavar="N", help="steps a sample sees (default 12)"
    )
    parser.add_argument(
        "--horizon", type=int, default=12, metavar="N", help="steps to predict (default 12)"
    )
    parser.add_argument(
        "--stride", type=int, default=1, metavar="N", help="distance between starts (default 1)"
    )
    parser.add_argument("--train", type=float, default=0.7, help="train fraction (default 0.7)")
    parser.add_argument("--val", type=float, default=0.1, help="validation fraction (default 0.1)")
    parser.add_argument(
        "--exclude-gaps", action="store_true", help="drop windows that read across a gap in time"
    )
    parser.add_argument(
        "--batch-size", type=int, metavar="B", help="also show the steps every rank runs per epoch"
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(func=run)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    exp = min(3, int(math.log(n, 1024)))
    return f"{n / 1024**exp:.2f} {('KiB', 'MiB', 'GiB')[exp - 1]}"


def format_plan(plan: PartitionPlan, batch_size: int | None = None) -> str:
    """Human-readable table of a partition plan, one line per rank."""
    t, n, f = plan.n_time, plan.n_node, plan.n_feature
    s = plan.spec
    lines = [
        f"{t} steps x {n} nodes x {f} feature(s), {plan.chunk_time}-step chunks; windows "
        f"input_steps={s.input_steps} horizon={s.horizon} stride={s.stride} (halo {s.halo}); "
        f"{plan.starts.size} {plan.split} windows over {plan.world_size} rank(s)",
        f"{'rank':>4} {'starts':>17} {'windows':>8} {'time range':>17} {'chunks':>13} "
        f"{'read':>11} {'memory':>11}",
    ]
    for p in plan.partitions:
        lines.append(
            f"{p.rank:>4} {f'{p.first_start}..{p.last_start}':>17} {p.count:>8} "
            f"{f'[{p.time_range[0]}, {p.time_range[1]})':>17} "
            f"{f'{p.chunk_range[0]}..{p.chunk_range[1] - 1} ({p.n_chunks})':>13} "
            f"{_size(p.read_bytes):>11} {_size(p.memory_bytes):>11}"
        )
    lines.append(f"mode 'full' would hold {_size(plan.full_memory_bytes)} per rank")
    if batch_size is not None:
        lines.append(
            f"{plan.steps_per_epoch(batch_size)} steps per epoch on every rank "
            f"(batch size {batch_size})"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Execute ``stzarr plan``."""
    store = open_store(args.store)
    spec = WindowSpec(args.input_steps, args.horizon, args.stride)
    windows = make_plan(
        store.shape[0],
        spec,
        train=args.train,
        val=args.val,
        time=store.time if args.exclude_gaps else None,
        exclude_gaps=args.exclude_gaps,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedChunksWarning)  # printed below as one line
        plan = store_partitions(store, windows, args.workers)
    if plan.warning is not None:
        print(f"stzarr plan: warning: {plan.warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(plan.to_dict(batch_size=args.batch_size), indent=2))
    else:
        print(format_plan(plan, args.batch_size))
    return 0
