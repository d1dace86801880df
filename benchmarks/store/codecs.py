"""Codec choice by measurement: compression ratio and per-core encode/decode speed.

Candidates (Blosc, the store's codec, typesize 4): zstd at levels 1 and 3, lz4, each with byte
shuffle and bitshuffle; and no compression. Data, each cut into the chunks a store would use:

* ``pems_slice``: three 768-step slices (train start, middle, end) of the PeMS-scale store
  (``benchmarks/generated/pems-scale.zarr``; 11,160 synthetic sensors; chunks of 96 steps);
* ``metr_la_synth``: a METR-LA-shape synthetic series (34,272 steps x 207 sensors, seed 0,
  ``stzarr.converters.synth.synth_traffic``; chunks of ~4 MiB);
* ``metr_la_week``: the real METR-LA first week (``../shared/data/los_speed.csv``, 2016 x 207;
  one chunk).

Per core: Blosc runs single-threaded and speed is bytes (uncompressed) over the **CPU time** of
the encoding/decoding thread (best of ``--repeat``), which other processes on a shared machine
do not inflate; wall-clock speed is reported next to it. A store's read rate, in uncompressed
bytes, is bounded by ``min(disk / ratio, I/O cores x decode per core)``; the report projects it
with 1 I/O core (this 2-core machine: the other core builds batches and trains) and with 4 (a
quarter of a 16-core node), with the disk rate given by ``--disk-gbps`` (default: this machine's
cold sequential read measured by ``benchmarks/scale/pems_scale_loading.py``). The winner is
the codec with the highest projected read rate on the PeMS-scale slice; within 5 % of it, the
smaller files.

Writes ``docs/results/codecs.json``; ``--table`` prints the docs table from it.
Run: ``nice -n 10 .venv/bin/python -m benchmarks.store.codecs``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numcodecs
import numpy as np
from numcodecs import Blosc

from benchmarks.harness import machine, write_report

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "benchmarks" / "generated"
SHARED = ROOT.parent / "shared" / "data"
GB = 1e9
IO_CORES_HERE = 1
"""Cores given to decoding on this 2-core machine (the other builds batches and trains)."""
IO_CORES_NODE = 4
"""Cores given to decoding on a 16-core GPU node (a quarter)."""
CANDIDATES: dict[str, tuple[str, int, int] | None] = {
    "zstd1-shuffle": ("zstd", 1, Blosc.SHUFFLE),
    "zstd1-bitshuffle": ("zstd", 1, Blosc.BITSHUFFLE),
    "zstd3-shuffle": ("zstd", 3, Blosc.SHUFFLE),  # stzarr's default before this benchmark
    "zstd3-bitshuffle": ("zstd", 3, Blosc.BITSHUFFLE),
    "lz4-shuffle": ("lz4", 5, Blosc.SHUFFLE),
    "lz4-bitshuffle": ("lz4", 5, Blosc.BITSHUFFLE),
    "none": None,
}


def pems_slice(store_path: Path, steps: int = 768) -> list[np.ndarray]:
    """Three ``steps``-long slices of the PeMS-scale store, cut into its chunks."""
    import zarr

    array = zarr.open_array(store_path / "data", mode="r")
    n = array.shape[0]
    chunk = int(array.chunks[0])
    chunks = []
    for start in (0, (n // 2) // chunk * chunk, (n - steps) // chunk * chunk):
        block = np.asarray(array[start : start + steps], dtype=np.float32)
        chunks += [block[i : i + chunk] for i in range(0, steps, chunk)]
    return chunks


def _chunked(values: np.ndarray) -> list[np.ndarray]:
    """``(t, n)`` values as ``(t, n, 1)`` float32 chunks of about 4 MiB (the store default)."""
    from stzarr.store.format import default_chunk_time

    values = np.ascontiguousarray(values, dtype=np.float32)[:, :, None]
    step = default_chunk_time(values.shape[1], 1)
    return [values[i : i + step] for i in range(0, values.shape[0], step)]


def metr_la_synth(steps: int = 34_272, nodes: int = 207) -> list[np.ndarray]:
    """A METR-LA-shape synthetic series (``synth_traffic``, seed 0), chunked."""
    import h5py

    from stzarr.converters.synth import synth_traffic

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "metr-la-synth.h5"
        synth_traffic(path, steps=steps, nodes=nodes, seed=0, progress=False)
        with h5py.File(path, "r") as h5:
            values = h5["df/block0_values"][:]
    return _chunked(values)


def metr_la_week(path: Path) -> list[np.ndarray]:
    """The real METR-LA first week (``los_speed.csv``: header of sensor ids, 2016 rows)."""
    values = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    return _chunked(values)


def _best(func: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best CPU seconds (this thread) and best wall seconds of ``repeat`` calls."""
    cpu, wall = [], []
    for _ in range(repeat):
        c0, w0 = time.thread_time(), time.perf_counter()
        func()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    return min(cpu), min(wall)


def measure(chunks: list[np.ndarray], spec: tuple[str, int, int] | None, repeat: int) -> dict:
    """Ratio and single-core encode/decode speed of one codec over a list of chunks."""
    raw = sum(c.nbytes for c in chunks)
    if spec is None:  # no compression: what remains is a copy into the output buffer
        outs = [np.empty_like(c) for c in chunks]

        def copy() -> None:
            for c, o in zip(chunks, outs, strict=True):
                np.copyto(o, c)

        cpu, wall = _best(copy, repeat)
        return {
            "ratio": 1.0,
            "encoded_bytes": raw,
            "encode_gbps_per_core": raw / cpu / GB,
            "decode_gbps_per_core": raw / cpu / GB,
            "encode_gbps_wall": raw / wall / GB,
            "decode_gbps_wall": raw / wall / GB,
        }
    cname, clevel, shuffle = spec
    codec = Blosc(cname=cname, clevel=clevel, shuffle=shuffle)
    encoded = [codec.encode(c) for c in chunks]
    for c, e in zip(chunks, encoded, strict=True):  # lossless, or the row is worthless
        back = np.frombuffer(codec.decode(e), dtype=np.float32).reshape(c.shape)
        if not np.array_equal(back, c, equal_nan=True):
            raise SystemExit(f"{cname}/{clevel}/{shuffle} did not round-trip")
    outs = [np.empty_like(c) for c in chunks]

    def encode() -> None:
        for c in chunks:
            codec.encode(c)

    def decode() -> None:
        for e, o in zip(encoded, outs, strict=True):
            codec.decode(e, out=o)

    enc_cpu, enc_wall = _best(encode, repeat)
    dec_cpu, dec_wall = _best(decode, repeat)
    size = sum(len(e) for e in encoded)
    return {
        "ratio": size / raw,
        "encoded_bytes": size,
        "encode_gbps_per_core": raw / enc_cpu / GB,
        "decode_gbps_per_core": raw / dec_cpu / GB,
        "encode_gbps_wall": raw / enc_wall / GB,
        "decode_gbps_wall": raw / dec_wall / GB,
    }


def projected_read_gbps(row: dict, disk_gbps: float, cores: int) -> float:
    """Uncompressed GB/s a streamed read can reach: the disk or the decoders, whichever binds."""
    return min(disk_gbps / row["ratio"], cores * row["decode_gbps_per_core"])


def choose(results: dict, disk_gbps: float, cores: int) -> dict:
    """The codec with the highest projected read rate on the stand-in (``pems_slice``; the
    first dataset when it is absent) when ``cores`` cores decode, ties within 5 % broken by the
    smaller files. ``cores`` is the share of a node's cores left to I/O: the rest build batches
    and train."""
    data = "pems_slice" if "pems_slice" in results else next(iter(results))
    rows = results[data]
    rate = {name: projected_read_gbps(row, disk_gbps, cores) for name, row in rows.items()}
    best = max(rate.values())
    close = [name for name in rows if rate[name] >= 0.95 * best]
    winner = min(close, key=lambda name: rows[name]["ratio"])
    return {
        "dataset": data,
        "cores": cores,
        "disk_gbps": disk_gbps,
        "projected_read_gbps": rate,
        "winner": winner,
        "rule": "max of min(disk / ratio, I/O cores x decode per core); within 5 % of the best, "
        "the smallest ratio",
    }


def markdown_table(report: dict) -> str:
    """One table: a row per codec and dataset."""
    lines = [
        "| data | codec | ratio | encode GB/s/core | decode GB/s/core | read GB/s, "
        f"{IO_CORES_HERE} I/O core | read GB/s, {IO_CORES_NODE} I/O cores |",
        "|---|---|---|---|---|---|---|",
    ]
    disk = report["disk_gbps"]
    for data, rows in report["results"].items():
        for name, row in rows.items():
            here = projected_read_gbps(row, disk, IO_CORES_HERE)
            node = projected_read_gbps(row, disk, IO_CORES_NODE)
            lines.append(
                f"| {data} | {name} | {row['ratio']:.3f} | {row['encode_gbps_per_core']:.2f} | "
                f"{row['decode_gbps_per_core']:.2f} | {here:.2f} | {node:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=DATA / "pems-scale.zarr")
    parser.add_argument("--csv", type=Path, default=SHARED / "los_speed.csv")
    parser.add_argument("--repeat", type=int, default=5, help="best of this many passes")
    parser.add_argument(
        "--disk-gbps",
        type=float,
        default=None,
        help="disk sequential read (GB/s) for the projection; default: from "
        "docs/results/pems_scale_io.json (or pems_scale.json)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/codecs.json")
    parser.add_argument("--table", action="store_true", help="print the docs table and exit")
    args = parser.parse_args()
    if args.table:
        print(markdown_table(json.loads(args.out.read_text())))
        return
    numcodecs.blosc.set_nthreads(1)
    numcodecs.blosc.use_threads = False
    disk = args.disk_gbps
    if disk is None:
        for name in ("pems_scale_io.json", "pems_scale.json"):
            path = ROOT / "docs" / "results" / name
            if path.exists():
                disk = json.loads(path.read_text())["goals"]["disk_sequential_bytes_per_s"] / GB
                break
        else:
            raise SystemExit("give --disk-gbps (no pems_scale results to take it from)")
    datasets: dict[str, Callable[[], list[np.ndarray]]] = {}
    if args.store.exists():
        datasets["pems_slice"] = lambda: pems_slice(args.store)
    datasets["metr_la_synth"] = metr_la_synth
    if args.csv.exists():
        datasets["metr_la_week"] = lambda: metr_la_week(args.csv)
    results: dict[str, dict] = {}
    shapes: dict[str, dict] = {}
    for data, load in datasets.items():
        chunks = load()
        shapes[data] = {
            "chunks": len(chunks),
            "chunk_shape": list(chunks[0].shape),
            "bytes": sum(c.nbytes for c in chunks),
        }
        results[data] = {}
        for name, spec in CANDIDATES.items():
            row = measure(chunks, spec, args.repeat)
            results[data][name] = row
            print(
                f"{data:14s} {name:17s} ratio {row['ratio']:.3f}  "
                f"enc {row['encode_gbps_per_core']:6.2f}  dec {row['decode_gbps_per_core']:6.2f}"
                " GB/s/core",
                flush=True,
            )
    report = {
        "benchmark": "codecs",
        "machine": {
            **machine("up to 6 helpers share these 2 cores; per-core speeds use thread CPU time"),
            "numcodecs": numcodecs.__version__,
            "load_average_at_end": os.getloadavg(),
        },
        "disk_gbps": disk,
        "datasets": shapes,
        "results": results,
        "choice": {
            "here_1_of_2_cores": choose(results, disk, IO_CORES_HERE),
            "node_4_of_16_cores": choose(results, disk, IO_CORES_NODE),
        },
    }
    write_report(args.out, report)
    print(markdown_table(report))
    print(json.dumps(report["choice"], indent=2))


if __name__ == "__main__":
    main()
