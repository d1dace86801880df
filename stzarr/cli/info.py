"""``stzarr info``: describe a store (shape, chunking, time range, missing data, graph, source)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from stzarr.store.format import Store, compressor_name, is_local, open_store, valid_mask
from stzarr.store.reader import READ_BLOCK_BYTES
from stzarr.units import format_bytes


def _stored_bytes(path: str) -> tuple[int, int] | None:
    """(bytes, files) under a local store directory; None for remote stores."""
    if not is_local(path):
        return None
    total = files = 0
    for root, _, names in os.walk(Path(path.removeprefix("file://"))):
        for name in names:
            total += os.path.getsize(os.path.join(root, name))
            files += 1
    return total, files


def _missing(store: Store, full: bool = False) -> dict:
    """Missing-reading counts: recorded at conversion, else (or with ``full``) counted now,
    reading (and checking) every chunk in blocks of whole files."""
    recorded = store.attrs.get("missing")
    if isinstance(recorded, dict) and "fraction" in recorded and not full:
        return {**recorded, "computed": "at conversion"}
    n_time = store.shape[0]
    block = store.file_block(READ_BLOCK_BYTES)
    missing = 0
    for start in range(0, n_time, block):
        data = store.read(start, min(start + block, n_time))
        missing += int(np.count_nonzero(~valid_mask(data, store.missing_value)))
    total = int(np.prod(store.shape))
    return {
        "missing_value": store.missing_value,
        "total": total,
        "missing": missing,
        "fraction": missing / total if total else 0.0,
        "computed": "now",
    }


def describe_store(store: Store, full: bool = False) -> dict:
    """Plain-data description of an opened store (what ``stzarr info --json`` prints); with
    ``full`` the missing counts are computed from every chunk rather than read from the
    record."""
    n_time, n_node, n_feature = store.shape
    step_bytes = n_node * n_feature * store.array.dtype.itemsize
    time = store.time
    edge_index = store.edge_index
    on_disk = _stored_bytes(store.path)
    info = {
        "path": store.path,
        "format_version": store.attrs.get("stzarr_format_version"),
        "created_by": store.attrs.get("created_by"),
        "shape": list(store.shape),
        "dims": list(store.array.metadata.dimension_names),
        "dtype": str(store.array.dtype),
        "features": store.feature_names,
        "nodes": {"count": n_node, "first": store.node_ids[:3]},
        "chunking": {
            "chunk_time": store.chunk_time,
            "chunk_bytes": store.chunk_time * step_bytes,
            "shard_time": store.shard_time,
            "shard_bytes": None if store.shard_time is None else store.shard_time * step_bytes,
            "compressor": compressor_name(store.array),
        },
        "time": {
            "start": str(time[0].astype("datetime64[s]")),
            "end": str(time[-1].astype("datetime64[s]")),
            "steps": n_time,
            "sampling_interval_s": store.attrs.get("sampling_interval_s"),
            "regular": store.attrs.get("time_regular"),
            "synthesised": bool(store.attrs.get("time_synthesised", False)),
        },
        "missing": _missing(store, full),
        "graph": {
            "edges": int(edge_index.shape[1]),
            "self_loops": int((edge_index[0] == edge_index[1]).sum()),
            "source": store.attrs.get("graph_source"),
        },
        "source": store.attrs.get("source"),
    }
    if on_disk is not None:
        raw = n_time * step_bytes
        info["storage"] = {
            "bytes": on_disk[0],
            "files": on_disk[1],
            "compression_ratio": raw / on_disk[0] if on_disk[0] else None,
        }
    return info


def _text(info: dict) -> str:
    c, t, m, g, s = info["chunking"], info["time"], info["missing"], info["graph"], info["source"]
    shard = (
        "none"
        if c["shard_time"] is None
        else f"{c['shard_time']} steps ({format_bytes(c['shard_bytes'])})"
    )
    lines = [
        f"store       {info['path']}  (format v{info['format_version']}, {info['created_by']})",
        f"shape       {' x '.join(map(str, info['shape']))}  ({', '.join(info['dims'])}), "
        f"{info['dtype']}",
        f"features    {', '.join(info['features'])}",
        f"nodes       {info['nodes']['count']} (first: {', '.join(info['nodes']['first'])})",
        f"chunks      {c['chunk_time']} steps ({format_bytes(c['chunk_bytes'])}), shards {shard}, "
        f"{c['compressor']}",
        f"time        {t['start']} .. {t['end']}, {t['steps']} steps every "
        f"{t['sampling_interval_s']} s"
        + (" (synthesised)" if t["synthesised"] else "")
        + ("" if t["regular"] in (True, None) else " (irregular)"),
        f"missing     {m['missing']} of {m['total']} ({m['fraction']:.2%}; convention "
        f"{m['missing_value']!r}, counted {m['computed']})",
        f"graph       {g['edges']} edges ({g['self_loops']} self-loops)"
        + (f" from {g['source']['file']}" if g.get("source") else ""),
    ]
    if s:
        sha = (s.get("sha256") or "not recorded")[:16]
        lines.append(
            f"source      {s.get('file')} key={s.get('key')} format={s.get('format')} sha256={sha}"
        )
    if "storage" in info:
        st = info["storage"]
        lines.append(
            f"on disk     {format_bytes(st['bytes'])} in {st['files']} files "
            f"(compression {st['compression_ratio']:.2f}x)"
        )
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``info`` sub-command."""
    parser = subparsers.add_parser(
        "info",
        help="describe a store",
        description="Print a store's shape, dims, chunking, time range, missing fraction, "
        "edge count and source provenance.",
    )
    parser.add_argument("store", metavar="STORE", help="store path or URL")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--full", action="store_true", help="count missing readings from every chunk (checked)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``stzarr info``."""
    info = describe_store(open_store(args.store), full=args.full)
    print(json.dumps(info, indent=2) if args.json else _text(info))
    return 0
