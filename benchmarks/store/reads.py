"""Store.read against np.load, cold, on the default layout and a sharded one.

Data (generated once under ``benchmarks/generated/reads/``): a 60,000-step x 2,000-node float32
series
(480 MB; ``stzarr.testing.validators.make_series`` in 5,000-step blocks), written as a store in the
default
codec and layout (4 MiB chunks, unsharded), a sharded copy (131-step chunks in 1,048-step shards,
as the issue measured) and an uncompressed ``.npy``. Every timed read starts after
``posix_fadvise(DONTNEED)`` on every file it reads (the guest's page cache; a VM host may still
cache the disk: ``docs/codecs.md``).

Rounds alternate the variants, each run right after an ``np.load``; a variant's figure is its
best of ``--rounds`` (default 3) and its share is over the best of the ``np.load`` runs paired
with it (``share_of_fastest_np_load``: over the fastest ``np.load`` of the whole run), with its
CPU seconds (every thread of this process) so decoded GB per CPU-second is
reported too:

* ``npy``: ``np.load`` of the uncompressed array (the reference);
* ``read:LAYOUT``: ``Store.read`` of the whole store (stzarr's read path);
* ``zarr:LAYOUT``, ``zarrs:LAYOUT``: the pipelines it was chosen against: one zarr call through
  the checked store (zarr's pipeline), and one unchecked ``zarrs`` call on the plain files;
* ``partition:LAYOUT``: rank 0 of 4's partition load (``SeriesBatcher.from_store``);
* ``stream:LAYOUT``: a streaming epoch's block reads (``StreamingLoader`` over the whole store,
  1 GB budget: each planned block read with ``Store.read`` in turn);
* ``stats:LAYOUT``: the statistics pass over the whole store (goal: <= 1.2x ``read:LAYOUT``).

Writes ``docs/results/reads.json``. Run:
``flock /tmp/stzarr-bench.lock .venv/bin/python -m benchmarks.store.reads`` (a few minutes; the
data takes about a minute more the first time).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import zarr
from zarr.storage import LocalStore

from benchmarks.harness import machine, write_report
from stzarr import open_store
from stzarr.monitor import drop_page_cache
from stzarr.plan.partition import plan_partitions
from stzarr.store.format import StoreWriter
from stzarr.store.io_config import configure_io, zarrs_available
from stzarr.store.rechunk import rechunk_store
from stzarr.store.stats import compute_stats
from stzarr.testing.validators import make_series

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "benchmarks" / "generated" / "reads"
GB = 10**9
N_TIME, N_NODE, BLOCK = 60_000, 2_000, 5_000


def cpu_seconds() -> float:
    """CPU time (user + system, every thread) of this process so far."""
    t = psutil.Process().cpu_times()
    return t.user + t.system


def files(path: Path) -> list[Path]:
    """Every file under ``path`` (a store directory, or one file)."""
    return [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]


def make_data(n_time: int) -> dict[str, Path]:
    """The store (default layout), its sharded copy and the ``.npy``, made once."""
    DATA.mkdir(parents=True, exist_ok=True)
    paths = {
        "default": DATA / f"default-{n_time}.zarr",
        "sharded": DATA / f"sharded-{n_time}.zarr",
        "npy": DATA / f"series-{n_time}.npy",
    }
    blocks = (
        (lo, make_series(min(BLOCK, n_time - lo), N_NODE, seed=lo))
        for lo in range(0, n_time, BLOCK)
    )
    if not paths["default"].exists() or not paths["npy"].exists():
        npy = np.lib.format.open_memmap(paths["npy"], "w+", np.float32, (n_time, N_NODE, 1))
        with StoreWriter(
            paths["default"],
            time=np.datetime64("2020-01-01", "ns") + np.arange(n_time) * np.timedelta64(5, "m"),
            node_ids=[str(i) for i in range(N_NODE)],
            feature_names=["speed"],
            edge_index=np.zeros((2, 0)),
            edge_weight=np.zeros(0),
            attrs={"missing_value": "zero"},
            overwrite=True,
        ) as writer:
            for lo, block in blocks:
                npy[lo : lo + len(block)] = block
                writer.write(lo, block)  # StoreWriter buffers nothing: whole chunks per block
        npy.flush()
        del npy
    if not paths["sharded"].exists():
        rechunk_store(
            open_store(paths["default"]),
            paths["sharded"],
            chunk_time=131,
            shard_time=1048,
            progress=False,
        )
    return paths


def timed(fn: Callable[[], Any], cold: list[Path]) -> dict[str, float]:
    """Run ``fn`` after dropping the page cache of ``cold``; wall and CPU seconds."""
    drop_page_cache(cold)
    c0, t0 = cpu_seconds(), time.perf_counter()
    fn()
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": cpu_seconds() - c0}


def variants(paths: dict[str, Path], pipelines: bool) -> dict[str, tuple[Callable, int, Path]]:
    """name -> (function, decoded bytes, files to drop)."""
    from stzarr import SeriesBatcher, StreamingLoader, WindowSpec, make_plan

    nbytes = N_NODE * 4
    out: dict[str, tuple[Callable, int, Path]] = {}
    npy = paths["npy"]
    out["npy"] = (lambda: np.load(npy), np.load(npy, mmap_mode="r").nbytes, npy)
    for layout in ("default", "sharded"):
        path = paths[layout]
        store = open_store(path)
        n_time = store.shape[0]
        out[f"read:{layout}"] = (lambda s=store: s.read(0, s.shape[0]), n_time * nbytes, path)
        spec = WindowSpec(12, 12)
        plan = make_plan(n_time, spec)
        stats = compute_stats(store, bounds=plan.bounds["train"])
        parts = plan_partitions(
            plan, chunk_time=store.chunk_time, world_size=4, n_node=N_NODE, n_feature=1
        )
        lo, hi = parts.partitions[0].time_range
        out[f"partition:{layout}"] = (
            lambda s=store, r=(lo, hi), st=stats, sp=spec: SeriesBatcher.from_store(
                s, st, sp, time_range=r
            ),
            (hi - lo) * nbytes,
            path,
        )
        starts = np.arange(0, n_time - spec.span + 1)
        loader = StreamingLoader(store, stats, spec, starts, batch_size=64, max_memory=GB)
        ranges = [(int(a), int(b)) for a, b in loader.plan.read_ranges]

        def blocks(s=store, rr=ranges) -> None:
            for a, b in rr:
                s.read(a, b)

        out[f"stream:{layout}"] = (blocks, sum(b - a for a, b in ranges) * nbytes, path)
        out[f"stats:{layout}"] = (
            lambda s=store: compute_stats(s, bounds=(0, s.shape[0])),
            n_time * nbytes,
            path,
        )
        if pipelines:
            out[f"zarr:{layout}"] = (lambda s=store: s.array[:], n_time * nbytes, path)
            if zarrs_available():
                out[f"zarrs:{layout}"] = (lambda p=path: zarrs_read(p), n_time * nbytes, path)
    return out


def zarrs_read(path: Path) -> np.ndarray:
    """One unchecked ``zarrs`` call on the plain local files (a reference, not a stzarr path)."""
    configure_io("zarrs")
    try:
        array = zarr.open_array(LocalStore(path, read_only=True), path="data", mode="r")
        return array[:]
    finally:
        configure_io("auto")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-time", type=int, default=N_TIME)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated variant names")
    parser.add_argument("--no-pipelines", dest="pipelines", action="store_false")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "reads.json")
    args = parser.parse_args()
    configure_io("auto")
    paths = make_data(args.n_time)
    table = variants(paths, args.pipelines)
    if args.only:
        keep = set(args.only.split(",")) | {"npy"}
        table = {k: v for k, v in table.items() if k in keep}
    load = [list(os.getloadavg())]
    runs: dict[str, list[dict]] = {name: [] for name in table}
    paired: dict[str, list[dict]] = {name: [] for name in table}  # np.load right before each
    for _ in range(args.rounds):
        for name, (fn, _, path) in table.items():
            if name != "npy":
                paired[name].append(timed(table["npy"][0], files(paths["npy"])))
            runs[name].append(timed(fn, files(path)))
        load.append(list(os.getloadavg()))
    paired["npy"] = runs["npy"]
    npy_bytes = table["npy"][1]
    npy_fastest = min(r["seconds"] for rr in paired.values() for r in rr)
    summary = {}
    for name, rr in runs.items():
        nbytes = table[name][1]
        b = min(rr, key=lambda x: x["seconds"])
        npy_best = min(r["seconds"] for r in paired[name])
        summary[name] = {
            "decoded_bytes": nbytes,
            "best_seconds": b["seconds"],
            "decoded_gb_per_s": nbytes / b["seconds"] / GB,
            "np_load_gb_per_s": npy_bytes / npy_best / GB,
            "share_of_np_load": (nbytes / b["seconds"]) / (npy_bytes / npy_best),
            "share_of_fastest_np_load": (nbytes / b["seconds"]) / (npy_bytes / npy_fastest),
            "decoded_gb_per_cpu_s": nbytes / b["cpu_seconds"] / GB,
            "all_seconds": [r["seconds"] for r in rr],
            "np_load_seconds": [r["seconds"] for r in paired[name]],
        }
    for layout in ("default", "sharded"):
        if f"stats:{layout}" in runs and f"read:{layout}" in runs:
            summary[f"stats:{layout}"]["over_one_read"] = (
                summary[f"stats:{layout}"]["best_seconds"]
                / summary[f"read:{layout}"]["best_seconds"]
            )
    report = {
        "benchmark": "reads",
        "machine": {**machine(), "load_average_after_each_round": load},
        "data": {k: str(v.relative_to(ROOT)) for k, v in paths.items()},
        "shape": [args.n_time, N_NODE, 1],
        "goals": {"share_of_np_load_min": 0.5, "stats_over_one_read_max": 1.2},
        "variants": summary,
    }
    write_report(args.out, report)
    for name, s in summary.items():
        extra = f"  stats/read {s['over_one_read']:.2f}" if "over_one_read" in s else ""
        print(
            f"{name:20s} {s['decoded_gb_per_s']:6.2f} GB/s  share {s['share_of_np_load']:5.2f}  "
            f"{s['decoded_gb_per_cpu_s']:5.2f} GB/CPU-s{extra}"
        )
    print("load", load)


if __name__ == "__main__":
    main()
