"""``stzarr plan``: how a store's training windows are partitioned across DDP ranks."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

from stzarr.cli.options import (
    add_split_args,
    add_window_args,
    add_workers_args,
    size,
    split_spec,
    window_spec,
)
from stzarr.data.calendar import is_subdaily
from stzarr.plan.partition import PartitionPlan, SharedChunksWarning, store_partitions
from stzarr.plan.stream import (
    BATCH_RESERVE,
    StreamPlan,
    batch_nbytes,
    plan_stream,
    read_reserve,
)
from stzarr.store.format import Store, open_store
from stzarr.store.io_config import active_pipeline
from stzarr.store.reader import files_in_flight, read_threads
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
    add_window_args(parser)
    add_split_args(parser)
    add_workers_args(parser)
    parser.add_argument(
        "--max-memory",
        type=size,
        metavar="SIZE",
        help="bytes of series and batches a rank may hold (e.g. 2GB): a rank whose range needs "
        "more streams it, and its blocks are shown (as 'stzarr train --max-memory' plans them: "
        "every input and target feature, the time-of-day channel when sampled more often than "
        "daily)",
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(func=run)


def rank_streams(
    store: Store, plan: PartitionPlan, batch_size: int, max_memory: int
) -> list[StreamPlan | None]:
    """Each rank's streaming plan under ``max_memory`` (None for a rank that holds its range),
    with the batch layout and read buffers the training loader uses."""
    n_node, n_feature = plan.n_node, plan.n_feature
    n_cal = int(is_subdaily(store.attrs.get("sampling_interval_s")))
    batch = batch_nbytes(
        plan.spec,
        batch_size,
        n_node,
        n_input=n_feature,
        n_target=n_feature,
        n_calendar=n_cal,
        with_mask=True,
    )
    step = n_node * n_feature * 4
    outer = (store.shard_time or store.chunk_time) * step
    reserve = read_reserve(outer, files_in_flight(read_threads(active_pipeline().threads)))
    out: list[StreamPlan | None] = []
    for p in plan.partitions:
        needs = (p.time_range[1] - p.time_range[0]) * step + BATCH_RESERVE * batch
        if needs <= max_memory or not p.count:
            out.append(None)
            continue
        out.append(
            plan_stream(
                plan.rank_starts(p.rank),
                plan.spec,
                chunk_time=plan.chunk_time,
                step_bytes=step + n_cal * 4,
                batch_size=batch_size,
                batch_bytes=batch,
                max_memory=max_memory,
                read_reserve=reserve,
            )
        )
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
    store = open_store(args.store)
    windows = split_spec(args).plan(window_spec(args), store.time)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedChunksWarning)  # printed below as one line
        plan = store_partitions(store, windows, args.workers)
    for line in (plan.warning, plan.skipped_line(args.batch_size)):
        if line is not None:
            print(f"stzarr plan: warning: {line}", file=sys.stderr)
    streams = (
        None
        if args.max_memory is None
        else rank_streams(store, plan, args.batch_size, args.max_memory)
    )
    if args.json:
        out = plan.to_dict(batch_size=args.batch_size)
        if streams is not None:
            out["max_memory"] = args.max_memory
            for part, stream in zip(out["partitions"], streams, strict=True):
                part["stream"] = stream_summary(stream)
        print(json.dumps(out, indent=2))
    else:
        print(format_plan(plan, args.batch_size, streams))
    return 0
