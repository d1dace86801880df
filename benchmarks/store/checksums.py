"""What per-chunk CRC-32C checksums cost: conversion, the loader's read and statistics.

Every array of a store ends its codec chain with Zarr v3's ``crc32c`` codec and every read goes
through :class:`stzarr.store.chunks.ChunkCheckedStore`, which verifies each chunk before it is
decoded. This benchmark measures the cost against the same store written without checksums
(``codec_chain`` without ``crc32c``, as stzarr wrote stores before), on a METR-LA-shaped series
(34,272 x 207 x 1 float32, 28 MiB, ~4 MiB chunks by default), interleaved over ``--rounds``
rounds in one process (medians; the machine is shared, so ratios within a run are what counts):

* ``convert``: :func:`stzarr.converters.convert` of the generated pandas HDF5 file (no source
  SHA-256, no progress bar), source in the page cache;
* ``loader_read``: :func:`stzarr.open_store` and a read of the whole series into memory (what
  the loaders do before batching: ``Store.read`` / one zarr call);
* ``stats``: :func:`stzarr.store.stats.compute_stats` over the train split, uncached (dask reads
  every chunk);
* ``crc32c_only``: google-crc32c over the series' bytes once (the floor of the added work).

Writes ``docs/results/checksums.json``.

Run: ``nice -n 10 .venv/bin/python -m benchmarks.store.checksums``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import google_crc32c
import numpy as np

import stzarr.store.format as store_mod
from benchmarks.harness import machine, write_report
from stzarr.converters import convert
from stzarr.converters.synth import synth_traffic
from stzarr.errors import StzarrWarning
from stzarr.store.format import open_store
from stzarr.store.stats import compute_stats

ROOT = Path(__file__).resolve().parents[2]
WITH_CRC = store_mod.codec_chain


def without_crc(compressor: object) -> tuple:
    """The codec chain of stores written before checksums: the compressor alone."""
    return () if compressor is None else (compressor,)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=34_272)
    parser.add_argument("--nodes", type=int, default=207)
    parser.add_argument("--chunk-time", type=int, help="steps per chunk (default ~4 MiB)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "checksums.json")
    args = parser.parse_args()
    warnings.simplefilter("ignore", StzarrWarning)  # the no-checksum store warns on every open
    scratch = Path(tempfile.mkdtemp(prefix="stzarr-crc-"))
    try:
        h5 = synth_traffic(
            scratch / "x.h5", nodes=args.nodes, steps=args.steps, progress=False
        ).path
        Path(h5).read_bytes()  # into the page cache
        variants = {"crc32c": WITH_CRC, "none": without_crc}
        times: dict[str, dict[str, list[float]]] = {
            k: {"convert": [], "loader_read": [], "stats": []} for k in variants
        }
        train = (0, int(args.steps * 0.7))
        for _ in range(args.rounds):
            for name, chain in variants.items():
                dst = scratch / name
                shutil.rmtree(dst, ignore_errors=True)
                store_mod.codec_chain = chain
                try:
                    times[name]["convert"].append(
                        timed(
                            lambda dst=dst: convert(
                                h5, dst, chunk_time=args.chunk_time, checksum=False, progress=False
                            )
                        )
                    )
                finally:
                    store_mod.codec_chain = WITH_CRC
                times[name]["loader_read"].append(
                    timed(lambda dst=dst: open_store(dst).read(0, args.steps))
                )
                times[name]["stats"].append(
                    timed(lambda dst=dst: compute_stats(open_store(dst), bounds=train))
                )
        series = open_store(scratch / "crc32c").read(0, args.steps)
        crc_s = statistics.median(timed(lambda: google_crc32c.value(series)) for _ in range(5))
        chunk_time = open_store(scratch / "crc32c").chunk_time
        sizes = {
            name: sum(f.stat().st_size for f in (scratch / name).rglob("*") if f.is_file())
            for name in variants
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    medians = {k: {m: statistics.median(v) for m, v in t.items()} for k, t in times.items()}
    result = {
        "benchmark": "checksums",
        "shape": [args.steps, args.nodes, 1],
        "series_bytes": int(series.nbytes),
        "chunk_time": chunk_time,
        "rounds": args.rounds,
        "median_s": medians,
        "overhead": {m: medians["crc32c"][m] / medians["none"][m] - 1 for m in medians["crc32c"]},
        "min_s": {k: {m: min(v) for m, v in t.items()} for k, t in times.items()},
        "crc32c_only_s": crc_s,
        "crc32c_GBps": series.nbytes / crc_s / 1e9,
        "store_bytes": sizes,
        "all_s": times,
        "machine": {
            **machine("shared 2-core machine: compare ratios within this run"),
            "load_average_at_end": os.getloadavg(),
        },
    }
    write_report(args.out, result)
    for m in ("convert", "loader_read", "stats"):
        print(
            f"{m:12s} crc32c {medians['crc32c'][m]:.3f}s  none {medians['none'][m]:.3f}s  "
            f"overhead {result['overhead'][m]:+.1%} (fastest rounds: "
            f"{result['min_s']['crc32c'][m]:.3f}s vs {result['min_s']['none'][m]:.3f}s)"
        )
    print(f"crc32c alone {crc_s * 1e3:.1f} ms for {series.nbytes / 2**20:.0f} MiB")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
