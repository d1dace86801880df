"""Conversion benchmark: pandas HDF5 (PeMS scale) -> store, next to a plain sequential read.

Measures, in one run, each in a fresh process (as ``stzarr convert`` runs; peak RSS includes
the ~0.4 GB of imports, torch among them):

* ``plain_read``: h5py reads ``KEY/block0_values`` front to back in the converter's block size
  and does nothing else (the I/O floor);
* ``convert``: ``stzarr.converters.convert`` with the graph and the source checksum (what
  ``stzarr convert`` does), peak RSS sampled every 50 ms by ``stzarr.monitor.MemorySampler``;
* ``convert_stream_only``: the same without graph and checksum, isolating the streaming path;
* ``convert_stream_only_small_file``: the same on a second, smaller file (>= 2 GB): peak RSS
  should not depend on the file size.

Page cache: before each "cold" measurement the file's pages are dropped from this machine's
page cache with ``posix_fadvise(DONTNEED)`` (a virtual machine's host may still cache them);
"warm" measurements follow a full read, when the file fits in free memory. Goals: peak RSS
<= 1 GB whatever the file size; throughput >= 50% of the plain read.

Usage::

    nice -n 10 .venv/bin/python -m benchmarks.converters.convert      # generates the file if absent
    nice -n 10 .venv/bin/python -m benchmarks.converters.convert --steps 23000  # a 2 GB file
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import psutil

from benchmarks.harness import machine, measure, write_report
from stzarr.converters import convert
from stzarr.converters.pandas_hdf5 import FixedFrameReader
from stzarr.converters.streaming import block_steps
from stzarr.converters.synth import adjacency_path_for, synth_traffic
from stzarr.monitor import MemorySampler, current_rss, drop_page_cache
from stzarr.store.format import StoreWriter
from stzarr.store.io_config import pipeline_list

ROOT = Path(__file__).resolve().parents[2]
GB = 1e9


def _cpu_seconds() -> float:
    """CPU time (user + system, all threads) used by this process so far."""
    times = psutil.Process().cpu_times()
    return times.user + times.system


def plain_read(src: Path, key: str, steps: int) -> dict:
    """Sequential h5py read of the values, ``steps`` rows at a time, nothing else."""
    cpu0 = _cpu_seconds()
    with MemorySampler() as mem:
        t0 = time.perf_counter()
        with h5py.File(Path(src), "r") as h5:
            values = h5[f"{key}/block0_values"]
            n = values.shape[0]
            for start in range(0, n, steps):
                values[start : start + steps]
            nbytes = values.size * values.dtype.itemsize
        seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "gb_per_s": nbytes / seconds / GB,
        "cpu_seconds": _cpu_seconds() - cpu0,
        "bytes": nbytes,
        "peak_rss_mb": mem.peak_bytes / 2**20,
    }


def in_fresh_process(func: Callable[..., dict], *args: object, **kwargs: object) -> dict:
    """Run one measurement in a new process (as ``stzarr convert`` would run), so that its
    peak RSS is its own and not what earlier measurements left in this process's heap."""
    quiet = {"PYTHONWARNINGS": "ignore:Consolidated metadata:UserWarning"}
    return measure(func, *args, env=quiet, **kwargs).result


def convert_cold(args: argparse.Namespace, target: Path, payload: int, adjacency: Path) -> dict:
    """``stzarr convert`` (graph + checksum) of ``--src`` into ``target`` in a fresh process,
    the source's pages dropped first."""
    drop_page_cache([args.src])
    return in_fresh_process(
        run_convert,
        args.src,
        target,
        payload,
        adjacency=adjacency if adjacency.exists() else None,
        chunk_time=args.chunk_time,
        shard_time=args.shard_time,
    )


def run_convert(src: Path, dst: Path, payload: int, **options: object) -> dict:
    """One conversion under the memory sampler (the process's RSS, imports included)."""
    dst = Path(dst)
    cpu0 = _cpu_seconds()
    with MemorySampler() as mem:
        t0 = time.perf_counter()
        result = convert(src, dst, overwrite=True, progress=False, **options)
        seconds = time.perf_counter() - t0
    stored = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
    trace = mem.trace[:: max(1, len(mem.trace) // 200)]
    return {
        "seconds": seconds,
        "gb_per_s": payload / seconds / GB,
        "cpu_seconds": _cpu_seconds() - cpu0,
        "peak_rss_mb": mem.peak_bytes / 2**20,
        "store_bytes": stored,
        "store_files": sum(1 for f in dst.rglob("*") if f.is_file()),
        "missing_fraction": result.missing["fraction"],
        "n_edges": result.n_edges,
        "rss_trace_mb": [[round(t, 2), round(r / 2**20, 1)] for t, r in trace],
        "rss_before_mb": mem.trace[0][1] / 2**20,
    }


LABELS = {
    "plain_read_cold": "plain h5py read, cold",
    "convert_cold": "`stzarr convert` (graph + SHA-256), cold",
    "plain_read_warm": "plain h5py read, warm",
    "convert_stream_only_warm": "convert, streaming only, warm",
    "plain_read_warm_again": "plain h5py read, warm (again)",
    "convert_stream_only_small_file": "convert, streaming only, smaller file",
}


def markdown_table(report: dict) -> str:
    """The results table of docs/benchmarks.md, from a saved report."""
    lines = [
        "| run | source GB | wall s | CPU s | GB/s | peak RSS GB |",
        "|---|---|---|---|---|---|",
    ]
    payload = report["source"]["payload_bytes"]
    for name, label in LABELS.items():
        run = report["runs"].get(name)
        if run is None:
            continue
        size = run.get("bytes") or payload
        if name.endswith("small_file"):
            size = run["gb_per_s"] * run["seconds"] * GB
        cpu = run.get("cpu_seconds")
        lines.append(
            f"| {label} | {size / GB:.2f} | {run['seconds']:.1f} | "
            f"{'-' if cpu is None else f'{cpu:.1f}'} | "
            f"{run['gb_per_s']:.2f} | {run['peak_rss_mb'] * 2**20 / GB:.2f} |"
        )
    return "\n".join(lines)


def io_suite(args: argparse.Namespace, payload: int, steps: int, adjacency: Path) -> None:
    """The I/O suite: ``stzarr convert`` through each codec pipeline, each right after a cold plain
    read of the same file (the pair's ratio is the goal), with CPU seconds per GB."""
    from stzarr.store.io_config import ENV_PIPELINE

    runs: dict[str, dict] = {}
    target = args.dst.with_name(f".{args.dst.name}.bench-io")
    for pipe in args.pipelines:
        os.environ[ENV_PIPELINE] = pipe  # the measuring child configures itself from it
        drop_page_cache([args.src])
        runs[f"plain_read_cold@{pipe}"] = in_fresh_process(plain_read, args.src, args.key, steps)
        runs[f"convert_cold@{pipe}"] = convert_cold(args, target, payload, adjacency)
        runs[f"convert_cold@{pipe}"].pop("rss_trace_mb")
        shutil.rmtree(target, ignore_errors=True)
    goals = {}
    for pipe in args.pipelines:
        read, conv = runs[f"plain_read_cold@{pipe}"], runs[f"convert_cold@{pipe}"]
        ratio = conv["gb_per_s"] / read["gb_per_s"]
        goals[pipe] = {
            "convert_over_cold_plain_read": ratio,
            "target_min": 0.5,
            "met": ratio >= 0.5,
            "convert_gb_per_cpu_second": payload / GB / conv["cpu_seconds"],
            "plain_read_gb_per_cpu_second": payload / GB / read["cpu_seconds"],
        }
    from stzarr.store.format import DEFAULT_COMPRESSOR

    report = {
        "benchmark": "convert --io",
        "machine": {
            **machine("each ratio is a pair of back-to-back runs; load average at the start"),
            "ram_gb": psutil.virtual_memory().total / GB,
        },
        "source": {"file": args.src.name, "payload_bytes": payload, "block_steps": steps},
        "store": {
            "chunk_time": args.chunk_time,
            "shard_time": args.shard_time,
            "compressor": DEFAULT_COMPRESSOR,
        },
        "runs": runs,
        "goals": goals,
    }
    write_report(args.out, report)
    print(json.dumps(goals, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=ROOT / "benchmarks/generated/pems-scale.h5")
    parser.add_argument("--dst", type=Path, default=ROOT / "benchmarks/generated/pems-scale.zarr")
    parser.add_argument("--key", default="df")
    parser.add_argument("--nodes", type=int, default=11_160, help="when generating")
    parser.add_argument("--steps", type=int, default=105_120, help="when generating")
    parser.add_argument("--chunk-time", type=int, default=96)
    parser.add_argument("--shard-time", type=int, default=768)
    parser.add_argument("--out", type=Path, default=None, help="JSON results")
    parser.add_argument(
        "--io",
        action="store_true",
        help="only the codec-pipeline comparison (default --out docs/results/convert_io.json)",
    )
    parser.add_argument(
        "--pipelines",
        type=pipeline_list,
        default=["zarr", "zarrs"],
        help="codec pipelines compared by --io",
    )
    parser.add_argument(
        "--small-steps",
        type=int,
        default=23_000,
        help="steps of a second, smaller file (>= 2 GB at 11,160 nodes) converted "
        "to show that peak RSS does not grow with the file; 0 skips it",
    )
    parser.add_argument(
        "--table",
        action="store_true",
        help="print the docs table from --out and exit (no measurement)",
    )
    args = parser.parse_args()
    if args.out is None:
        args.out = ROOT / "docs/results" / ("convert_io.json" if args.io else "convert.json")
    if args.table:
        print(markdown_table(json.loads(args.out.read_text())))
        return
    warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)

    if not args.src.exists():
        projected = args.nodes * args.steps * 8
        free = shutil.disk_usage(args.src.parent).free
        if projected * 1.8 > free:
            raise SystemExit(f"not enough disk for {projected / GB:.1f} GB source + store")
        args.src.parent.mkdir(parents=True, exist_ok=True)
        synth_traffic(
            args.src, nodes=args.nodes, steps=args.steps, key=args.key, seed=0, start="2018-01-01"
        )
    adjacency = adjacency_path_for(args.src)
    size = args.src.stat().st_size
    reader = FixedFrameReader(args.src, args.key)
    n_time, n_node = len(reader.layout.index_ns), len(reader.layout.columns)
    reader.close()
    payload = n_time * n_node * 8
    baseline_rss = current_rss()
    probe = StoreWriter(
        args.dst.with_name(args.dst.name + ".probe"),
        time=np.zeros(n_time, "datetime64[ns]"),
        node_ids=[str(i) for i in range(n_node)],
        feature_names=["speed"],
        edge_index=np.zeros((2, 0)),
        edge_weight=np.zeros(0),
        attrs={"missing_value": "zero"},
        chunk_time=args.chunk_time,
        shard_time=args.shard_time,
    )
    steps = block_steps(probe, n_node * 4)
    probe.abort()
    if args.io:
        io_suite(args, payload, steps, adjacency)
        return
    available = psutil.virtual_memory().available
    runs: dict[str, dict] = {"load_average_start": list(os.getloadavg())}

    drop_page_cache([args.src])
    runs["plain_read_cold"] = in_fresh_process(plain_read, args.src, args.key, steps)
    # Never replace an existing --dst (others may be reading it): measure into a scratch store.
    target = args.dst if not args.dst.exists() else args.dst.with_name(f".{args.dst.name}.bench")
    runs["convert_cold"] = convert_cold(args, target, payload, adjacency)
    if target != args.dst:
        shutil.rmtree(target)
    runs["plain_read_warm"] = in_fresh_process(plain_read, args.src, args.key, steps)
    scratch = args.dst.with_name(f".{args.dst.name}.bench-stream-only")
    runs["convert_stream_only_warm"] = in_fresh_process(
        run_convert,
        args.src,
        scratch,
        payload,
        chunk_time=args.chunk_time,
        shard_time=args.shard_time,
        checksum=False,
    )
    shutil.rmtree(scratch, ignore_errors=True)
    runs["plain_read_warm_again"] = in_fresh_process(plain_read, args.src, args.key, steps)
    if args.small_steps:
        small = args.src.with_name(f"{args.src.stem}-{args.small_steps}.h5")
        if not small.exists():
            synth_traffic(
                small,
                nodes=n_node,
                steps=args.small_steps,
                key=args.key,
                seed=1,
                progress=False,
                overwrite=True,
            )
            adjacency_path_for(small).unlink()  # not used: this run measures streaming only
        scratch = args.dst.with_name(f".{args.dst.name}.bench-small")
        runs["convert_stream_only_small_file"] = in_fresh_process(
            run_convert,
            small,
            scratch,
            args.small_steps * n_node * 8,
            chunk_time=args.chunk_time,
            shard_time=args.shard_time,
            checksum=False,
        )
        runs["convert_stream_only_small_file"]["source_bytes"] = small.stat().st_size
        shutil.rmtree(scratch, ignore_errors=True)
    runs["load_average_end"] = list(os.getloadavg())

    warm_read = max(runs["plain_read_warm"]["gb_per_s"], runs["plain_read_warm_again"]["gb_per_s"])
    ratios = {
        "convert_cold_vs_plain_read_cold": runs["convert_cold"]["gb_per_s"]
        / runs["plain_read_cold"]["gb_per_s"],
        "stream_only_warm_vs_plain_read_warm": runs["convert_stream_only_warm"]["gb_per_s"]
        / warm_read,
    }
    cpu_per_gb = {
        name: run["cpu_seconds"] / (payload / GB)
        for name, run in runs.items()
        if isinstance(run, dict) and name != "convert_stream_only_small_file"
    }
    peak = max(run["peak_rss_mb"] for name, run in runs.items() if name.startswith("convert"))
    report = {
        "benchmark": "convert",
        "machine": {**machine(), "ram_gb": psutil.virtual_memory().total / GB},
        "source": {
            "file": args.src.name,
            "bytes": size,
            "payload_bytes": payload,
            "shape": [n_time, n_node],
            "key": args.key,
            "adjacency": adjacency.name if adjacency.exists() else None,
        },
        "store": {
            "chunk_time": args.chunk_time,
            "shard_time": args.shard_time,
            "block_steps": steps,
            "compressor": "blosc zstd clevel 3 shuffle",
        },
        "page_cache": {
            "file_fits_in_available_memory": size < available,
            "available_gb_at_start": available / GB,
            "note": "cold = pages dropped with posix_fadvise(DONTNEED) on this VM (the host "
            "may still cache the disk); warm = right after a full read",
        },
        "baseline_rss_mb": baseline_rss / 2**20,
        "runs": runs,
        "ratios": ratios,
        "cpu_seconds_per_gb_of_source": cpu_per_gb,
        "goals": {
            "peak_rss_le_1gb": {"value_mb": peak, "met": peak <= 1024},
            "throughput_ge_50pct_of_plain_read": {
                "cold": ratios["convert_cold_vs_plain_read_cold"],
                "warm": ratios["stream_only_warm_vs_plain_read_warm"],
                "met_cold": ratios["convert_cold_vs_plain_read_cold"] >= 0.5,
                "met_warm": ratios["stream_only_warm_vs_plain_read_warm"] >= 0.5,
            },
        },
    }
    write_report(args.out, report)
    summary = {k: v for k, v in report.items() if k not in ("runs",)}
    print(json.dumps(summary, indent=2))
    for name, run in runs.items():
        if isinstance(run, dict):
            print(
                f"{name:32s} {run['seconds']:7.1f} s  cpu {run['cpu_seconds']:6.1f} s  "
                f"{run['gb_per_s']:6.2f} GB/s  "
                f"peak RSS {run['peak_rss_mb']:7.0f} MB"
            )


if __name__ == "__main__":
    main()
