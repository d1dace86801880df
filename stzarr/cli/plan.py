"""``stzarr plan``: how a store's training windows are partitioned across DDP ranks."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from typing import Any

from stzarr.cli.options import add_config_arg, add_options, option_value, split_spec, window_spec
from stzarr.plan.partition import PartitionPlan, SharedChunksWarning, store_partitions
from stzarr.plan.rank import plan_rank
from stzarr.plan.stream import StreamPlan
from stzarr.plan.windows import WindowPlan, WindowSpec
from stzarr.store.format import Store, open_store
from stzarr.training.config import RunOptions, SplitSpec
from stzarr.units import format_bytes


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
    add_config_arg(parser)
    add_options(parser, WindowSpec)
    add_options(parser, SplitSpec)
    add_options(parser, RunOptions, ("workers", "batch_size", "max_memory"))
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(func=run)


def rank_streams(
    store: Store, windows: WindowPlan, plan: PartitionPlan, batch_size: int, max_memory: int
) -> list[StreamPlan | None]:
    """Each rank's streaming plan under ``max_memory`` (None for a rank that holds its range):
    the rank plan's own load-or-stream decision and the stream plan its training loader makes,
    under the default batch contract."""
    from stzarr.data.contract import BatchContract

    contract = BatchContract().for_store(store)
    first = plan_rank(
        windows,
        store,
        mode="partitioned",
        rank=0,
        world_size=plan.world_size,
        batch_size=batch_size,
        max_memory=max_memory,
        batch_bytes=contract.batch_bytes(store, plan.spec, batch_size),
    )
    out: list[StreamPlan | None] = []
    for p in plan.partitions:
        rank = dataclasses.replace(first, rank=p.rank, train_range=p.time_range)
        if not (p.count and rank.train_streamed):
            out.append(None)
            continue
        from stzarr.data.rank import stream_plan  # imports torch: only once a rank streams

        out.append(stream_plan(store, rank, rank.train_starts, contract))
    return out


def stream_summary(stream: StreamPlan | None) -> dict[str, Any] | None:
    """A rank's streaming plan in a few numbers (None: the rank holds its range)."""
    if stream is None:
        return None
    steps = stream.read_ranges[:, 1] - stream.read_ranges[:, 0]
    return {
        "blocks": stream.n_blocks,
        "chunks_per_block": stream.chunks_per_block,
        "block_steps_max": int(steps.max()),
        "halo_steps": stream.spec.halo,
        "pool": stream.pool,
        "prefetch": stream.prefetch,
        "memory_bound": stream.memory_bound,
        "bytes_read_per_epoch": stream.bytes_read,
    }


def format_plan(
    plan: PartitionPlan,
    batch_size: int | None = None,
    streams: list[StreamPlan | None] | None = None,
) -> str:
    """Human-readable table of a partition plan, one line per rank."""
    t, n, f = plan.n_time, plan.n_node, plan.n_feature
    s = plan.spec
    lines = [
        f"{t} steps x {n} nodes x {f} feature(s), {plan.chunk_time}-step chunks; windows "
        f"input_steps={s.input_steps} horizon={s.horizon} stride={s.stride} (halo {s.halo}); "
        f"{plan.starts.size} {plan.split} windows over {plan.world_size} rank(s)",
        f"{'rank':>4} {'starts':>17} {'windows':>8} {'time range':>17} {'chunks':>13} "
        f"{'read':>11} {'memory':>11}" + (f" {'stream':>24}" if streams else ""),
    ]
    for p in plan.partitions:
        lines.append(
            f"{p.rank:>4} {f'{p.first_start}..{p.last_start}':>17} {p.count:>8} "
            f"{f'[{p.time_range[0]}, {p.time_range[1]})':>17} "
            f"{f'{p.chunk_range[0]}..{p.chunk_range[1] - 1} ({p.n_chunks})':>13} "
            f"{format_bytes(p.read_bytes):>11} {format_bytes(p.memory_bytes):>11}"
            + (f" {_stream_cell(streams[p.rank]):>24}" if streams else "")
        )
    lines.append(f"mode 'full' would hold {format_bytes(plan.full_memory_bytes)} per rank")
    if batch_size is not None:
        lines.append(
            f"{plan.steps_per_epoch(batch_size)} steps per epoch on every rank "
            f"(batch size {batch_size})"
        )
    return "\n".join(lines)


def _stream_cell(stream: StreamPlan | None) -> str:
    if stream is None:
        return "loaded"
    blocks = stream_summary(stream)
    assert blocks is not None
    return (
        f"{blocks['blocks']} x {blocks['block_steps_max']} steps, "
        f"<= {format_bytes(blocks['memory_bound'])}"
    )


def run(args: argparse.Namespace) -> int:
    """Execute ``stzarr plan``."""
    window, split = window_spec(args), split_spec(args)
    run = RunOptions(  # checks the values as training would
        mode="partitioned",
        workers=option_value(args, "workers"),
        batch_size=option_value(args, "batch_size"),
        max_memory=option_value(args, "max_memory"),
    )
    store = open_store(args.store)
    windows = split.plan(window, store.time)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedChunksWarning)  # printed below as one line
        plan = store_partitions(store, windows, run.workers)
        streams = (
            None
            if run.max_memory is None
            else rank_streams(store, windows, plan, run.batch_size, run.max_memory)
        )
    for line in (plan.warning, plan.skipped_line(run.batch_size)):
        if line is not None:
            print(f"stzarr plan: warning: {line}", file=sys.stderr)
    if args.json:
        out = plan.to_dict(batch_size=run.batch_size)
        if streams is not None:
            out["max_memory"] = run.max_memory
            for part, stream in zip(out["partitions"], streams, strict=True):
                part["stream"] = stream_summary(stream)
        print(json.dumps(out, indent=2))
    else:
        print(format_plan(plan, run.batch_size, streams))
    return 0
