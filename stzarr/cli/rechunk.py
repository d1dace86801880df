"""``stzarr rechunk``: advise a chunk/shard layout for the access pattern, or copy to one."""

from __future__ import annotations

import argparse
import json

from dask.utils import format_bytes, parse_bytes

from stzarr.errors import SpecError
from stzarr.store.format import COMPRESSORS, DEFAULT_COMPRESSOR, open_store
from stzarr.store.rechunk import advise_store, layout_problems, layout_summary, rechunk_store


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``rechunk`` sub-command."""
    parser = subparsers.add_parser(
        "rechunk",
        help="advise a chunk/shard layout, or copy a store to a new one",
        description="Without DST: print the store's layout and the one advised for its access "
        "pattern (--world-size ranks, --max-memory streaming budget): ~4 MiB chunks, enough "
        "chunks per partition and streaming block, and shard files when there would be many "
        "chunk files. With DST: copy the store to DST (path or URL) with --chunk-time/"
        "--shard-time, or with the advised layout when they are not given. The copy is "
        "streamed with dask (bounded memory) and atomic.",
    )
    parser.add_argument("src", metavar="SRC", help="stzarr store (path or URL)")
    parser.add_argument("dst", metavar="DST", nargs="?", help="new store (path or URL)")
    parser.add_argument("--chunk-time", type=int, metavar="N", help="steps per chunk")
    parser.add_argument(
        "--shard-time",
        type=int,
        metavar="N",
        help="steps per shard file, a multiple of --chunk-time (0: unsharded)",
    )
    parser.add_argument(
        "--world-size",
        type=int,
        default=1,
        metavar="W",
        help="ranks the train split is partitioned over (default 1)",
    )
    parser.add_argument(
        "--max-memory", metavar="BYTES", help="streaming budget per rank, e.g. 2GB (advice only)"
    )
    parser.add_argument(
        "--compressor",
        choices=sorted(COMPRESSORS),
        default=DEFAULT_COMPRESSOR,
        help=f"codec of DST (default {DEFAULT_COMPRESSOR}; zstd: smallest files; lz4: fastest "
        "to decode; see docs/codecs.md)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``stzarr rechunk``."""
    store = open_store(args.src)
    max_memory = None
    if args.max_memory is not None:
        try:
            max_memory = parse_bytes(args.max_memory)
        except ValueError:
            raise SpecError(f"cannot parse --max-memory {args.max_memory!r} (try 2GB)") from None
    if args.world_size < 1:
        raise SpecError(f"--world-size must be >= 1, got {args.world_size}")
    advice = advise_store(store, world_size=args.world_size, max_memory=max_memory)
    current = layout_summary(store)
    if args.dst is None:
        if args.chunk_time is not None or args.shard_time is not None:
            raise SpecError("--chunk-time/--shard-time need a destination DST")
        problems = layout_problems(store, world_size=args.world_size, max_memory=max_memory)
        if args.json:
            report = {
                "store": store.path,
                "current": current,
                "problems": problems,
                "advice": advice.to_dict(),
            }
            print(json.dumps(report, indent=2))
            return 0
        print(f"{store.path}: {_describe(current)}")
        if problems:
            print("  to improve: " + "; ".join(problems))
        else:
            print("  fine for this access pattern: no need to rechunk")
        print(f"advised: {_describe(advice.to_dict())}")
        for reason in advice.reasons:
            print(f"  - {reason}")
        return 0
    chunk_time = args.chunk_time if args.chunk_time is not None else advice.chunk_time
    if args.shard_time is not None:
        shard_time = args.shard_time or None
    else:
        shard_time = advice.shard_time if args.chunk_time is None else None
    out = rechunk_store(
        store,
        args.dst,
        chunk_time=chunk_time,
        shard_time=shard_time,
        compressor=args.compressor,
        overwrite=args.overwrite,
    )
    result = layout_summary(out)
    if args.json:
        print(json.dumps({"store": out.path, "from": current, "layout": result}, indent=2))
    else:
        print(f"wrote {out.path}: {_describe(result)}")
    return 0


def _describe(layout: dict) -> str:
    shard = layout["shard_time"]
    files = f"{layout['n_files']} {'shard' if shard else 'chunk'} files"
    text = (
        f"chunk_time {layout['chunk_time']} ({format_bytes(layout['chunk_bytes'])}), "
        f"{layout['n_chunks']} chunks"
    )
    if shard:
        text += f", shard_time {shard} ({format_bytes(layout['shard_bytes'])})"
    return f"{text}, {files}"
