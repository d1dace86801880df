"""What the store manifest costs: convert, append, verify, and a read that would check it.

Every commit records the size and CRC-32C of every file of the store (:mod:`stzarr.store.manifest`).
This benchmark measures each writer with the manifest against the same writer with
``manifest.write`` replaced by a no-op (how stzarr wrote stores before), on a METR-LA-shaped
series (34,272 x 207 x 1 float32, 28 MiB, ~4 MiB chunks), interleaved over ``--rounds`` rounds
in one process (medians; the machine is shared, so ratios within a run are what counts):

* ``convert``: :func:`stzarr.converters.convert` of the generated pandas HDF5 file;
* ``append``: :func:`stzarr.converters.append.append_sources` of the last 10 % onto the first 90 %
  (its check of the store before writing included in the "with" side);
* ``verify`` and ``verify_full``: :func:`stzarr.store.verify.verify_store` with and without the
  manifest file present (without: the store is checked as an older one);
* ``read_all`` against ``manifest_crc_of_read_bytes``: a read of the whole series
  (``Store.read``) against the extra work a read would do to check the manifest too: one
  CRC-32C over every chunk file's bytes, which the read has in memory already.

Writes ``docs/results/manifest.json``.

Run: ``flock /tmp/stzarr-bench.lock nice -n 10 .venv/bin/python -m benchmarks.store.manifest``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import google_crc32c
import pandas as pd

from benchmarks.harness import machine, write_report
from stzarr.converters import convert
from stzarr.converters.append import append_sources
from stzarr.converters.synth import synth_traffic
from stzarr.store import manifest
from stzarr.store.format import open_store
from stzarr.store.verify import verify_store

ROOT = Path(__file__).resolve().parents[2]
WRITE = manifest.write


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def crc_of_files(store: Path) -> None:
    """One CRC-32C over every chunk file's bytes (files in the page cache, as after a read)."""
    for key in manifest.store_files(store):
        google_crc32c.value((store / key).read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=34_272)
    parser.add_argument("--nodes", type=int, default=207)
    args = parser.parse_args()
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="stzarr-manifest-"))
    try:
        made = synth_traffic(tmp / "all.h5", nodes=args.nodes, steps=args.steps, progress=False)
        df = pd.read_hdf(made.path)
        cut = int(args.steps * 0.9)
        df.iloc[:cut].to_hdf(tmp / "head.h5", key="df")
        df.iloc[cut:].to_hdf(tmp / "tail.h5", key="df")
        times: dict[str, dict[str, list[float]]] = {}

        def record(name: str, side: str, seconds: float) -> None:
            times.setdefault(name, {"with": [], "without": []})[side].append(seconds)

        for _ in range(args.rounds):
            for side in ("with", "without"):
                manifest.write = WRITE if side == "with" else (lambda *a, **k: {})
                try:
                    dst = tmp / f"s-{side}.zarr"
                    shutil.rmtree(dst, ignore_errors=True)
                    record(
                        "convert",
                        side,
                        timed(
                            lambda dst=dst: convert(made.path, dst, checksum=False, progress=False)
                        ),
                    )
                    head = tmp / f"h-{side}.zarr"
                    shutil.rmtree(head, ignore_errors=True)
                    convert(tmp / "head.h5", head, checksum=False, progress=False)
                    record(
                        "append",
                        side,
                        timed(
                            lambda head=head: append_sources(
                                head, [tmp / "tail.h5"], checksum=False, progress=False
                            )
                        ),
                    )
                finally:
                    manifest.write = WRITE
            store = tmp / "s-with.zarr"
            bare = tmp / "s-bare.zarr"
            shutil.rmtree(bare, ignore_errors=True)
            shutil.copytree(store, bare)
            (bare / manifest.MANIFEST_NAME).unlink()
            for side, path in (("with", store), ("without", bare)):
                record("verify", side, timed(lambda path=path: verify_store(path)))
                record("verify_full", side, timed(lambda path=path: verify_store(path, full=True)))
            opened = open_store(store)
            record("read_all", "with", timed(lambda s=opened: s.read(0, s.shape[0])))
            record("read_all", "without", timed(lambda s=store: crc_of_files(s)))
        medians = {
            name: {side: statistics.median(v) for side, v in sides.items()}
            for name, sides in times.items()
        }
        result = {
            "description": __doc__.split("\n\n")[0],
            "shape": [args.steps, args.nodes, 1],
            "rounds": args.rounds,
            "loadavg_before_after": None,
            "median_seconds": medians,
            "overhead": {
                name: m["with"] / m["without"] - 1
                for name, m in medians.items()
                if name != "read_all"
            },
            "read_check_fraction_of_read": medians["read_all"]["without"]
            / medians["read_all"]["with"],
            "note": "read_all: 'with' is Store.read of the whole series, 'without' is the CRC-32C "
            "a read would add to check the manifest (so the fraction is the added cost)",
            "cpu_count": os.cpu_count(),
        }
        result["loadavg_before_after"] = [load_before, os.getloadavg()]
        result["machine"] = machine()
        write_report(ROOT / "docs" / "results" / "manifest.json", result)
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
