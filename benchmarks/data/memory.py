"""Peak memory: index-batching vs the standard materialised pipeline.

For generated series in the METR-LA (34,272 x 207) and PeMS-BAY (52,116 x 325) shapes, each
variant runs in a fresh process (:func:`benchmarks.harness.measure`, so peaks never mix) and is
sampled every 5 ms while it prepares the data and makes one pass over every
training batch (batch 64, input_steps = horizon = 12, speed + time-of-day in, speed out):

* ``index``: train statistics lazily from the store (not cached), one standardised copy read
  from the store, time-of-day at batch time, :func:`stzarr.make_loaders`-style loader;
* ``index_cached_stats``: the same with the statistics already cached in the store (as after
  ``stzarr stats``: the usual training run), so the process does no chunked statistics pass;
* ``index_arena1``: ``index`` under ``MALLOC_ARENA_MAX=1`` (glibc keeps no per-thread arenas,
  so memory freed by the chunk-reading threads goes back to the process heap);
* ``materialised``: Algorithm 1 (:mod:`stzarr.testing.reference`): read the series, train statistics
  in NumPy, time-of-day as a dense channel, every window of x and y materialised, z-scored.

Memory is the peak RSS above the process's baseline (measured after importing everything and
running the same pipeline once on a tiny store, so library imports and thread pools are not
counted), reported as a ratio to the raw float32 series. Goal: index-batching <= 1.2x raw.
Projected memory is checked against available memory first; a configuration that would not fit
is skipped and reported as projected. Writes ``docs/results/memory.json`` and
``docs/memory.png``.

Run: ``nice -n 10 .venv/bin/python -m benchmarks.data.memory``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from benchmarks.harness import machine, measure, plot_panels, write_report

ROOT = Path(__file__).resolve().parents[2]
DATASETS = {
    "metr-la": (34_272, 207),
    "pems-bay": (52_116, 325),
    "pems-all-la": (105_120, 2_716),  # one year, 1.1 GB raw: the fixed overheads fade
}
STREAM_STEPS = 4096  # generate large stores block by block
SPEC = (12, 12)
BATCH = 64
INTERVAL_S = 0.005


def projected_bytes(variant: str, n_time: int, n_node: int) -> int:
    """Rough peak above baseline: series copies plus materialised windows (x: 2 channels)."""
    raw = n_time * n_node * 4
    if variant.startswith("index"):
        return raw
    steps_in, horizon = SPEC
    return raw * (1 + 2 + steps_in * 2 + horizon)  # raw + dense stage + x + y


VARIANTS = {  # name: (pipeline, statistics computed before the baseline, extra environment)
    "index": ("index", False, {}),
    "index_cached_stats": ("index", True, {}),
    "index_arena1": ("index", False, {"MALLOC_ARENA_MAX": "1"}),
    "materialised": ("materialised", False, {}),
}


def thin(trace: list[tuple[float, int]], points: int = 1000) -> list[tuple[float, int]]:
    """At most ``points`` samples: the largest of each run of consecutive samples (peaks kept)."""
    step = -(-len(trace) // points)
    return [max(trace[i : i + step], key=lambda s: s[1]) for i in range(0, len(trace), step)]


_CACHED_STATS: dict = {}  # the child's statistics computed before the baseline, by store path


def _pipeline(variant: str, path: str) -> dict:
    """Prepare one variant's data from ``path`` and make one pass over every training batch."""
    import torch

    from stzarr import WindowSpec, compute_stats, make_plan, open_store
    from stzarr.data.loaders import IndexBatchDataset, SeriesBatcher, batch_loader
    from stzarr.testing.reference import MaterialisedDataset, materialise_windows

    torch.set_num_threads(1)
    mode, _, _ = VARIANTS[variant]
    spec = WindowSpec(*SPEC)
    t0 = time.perf_counter()
    phases: dict[str, float] = {}
    store = open_store(path)
    plan = make_plan(store.shape[0], spec)
    if mode == "index":
        stats = _CACHED_STATS.get(path) or compute_stats(store, bounds=plan.bounds["train"])
        phases["statistics"] = round(time.perf_counter() - t0, 3)
        batcher = SeriesBatcher.from_store(
            store, stats, spec, device="cpu", time_of_day=True, target_features=[0]
        )
        dataset = IndexBatchDataset(batcher, plan.starts["train"])
    else:
        raw = store.read(0, store.shape[0])
        phases["statistics"] = round(time.perf_counter() - t0, 3)
        windows = materialise_windows(  # statistics, windows, z-score: all in NumPy
            raw,
            store.time,
            store.missing_value,
            input_steps=spec.input_steps,
            horizon=spec.horizon,
            target_features=[0],
            time_of_day=True,
            with_missing=False,
        )
        dataset = MaterialisedDataset(windows["train"])
    phases["prepared"] = round(time.perf_counter() - t0, 3)
    n = 0
    for x, _ in batch_loader(dataset, BATCH, shuffle=True, seed=0):
        n += x.shape[0]
    phases["epoch"] = round(time.perf_counter() - t0, 3)
    return {"train_samples": n, "phases_s": phases}


def warm_up(variant: str, store_path: str, small_path: str) -> None:
    """Before the baseline: the variant's pipeline once on a tiny store (imports, thread pools,
    codec buffers), and for ``*_cached_stats`` the statistics of both stores, as a store
    prepared by ``stzarr stats`` has them."""
    from stzarr import WindowSpec, compute_stats, make_plan, open_store

    if VARIANTS[variant][1]:
        for path in (small_path, store_path):
            store = open_store(path)
            train = make_plan(store.shape[0], WindowSpec(*SPEC)).bounds["train"]
            _CACHED_STATS[path] = compute_stats(store, bounds=train)
    _pipeline(variant, small_path)


def one_epoch(variant: str, store_path: str, small_path: str) -> dict:
    """The measured work: one variant's preparation and epoch on the benchmark store."""
    return _pipeline(variant, store_path)


def run_variant(variant: str, store: Path, small: Path) -> dict:
    """One variant in a fresh process (warmed up first), its RSS sampled every 5 ms."""
    run = measure(
        one_epoch,
        variant,
        str(store),
        str(small),
        warmup=warm_up,
        env=VARIANTS[variant][2],
        interval=INTERVAL_S,
    )
    baseline = run.baseline_rss_bytes
    return {
        "variant": variant,
        "baseline_bytes": baseline,
        "peak_above_baseline_bytes": run.sampled_peak_rss_bytes - baseline,
        **run.result,
        "trace": thin([(round(t, 4), rss - baseline) for t, rss in run.rss_trace]),
    }


def ensure_store(path: Path, n_time: int, n_node: int) -> None:
    """Write the generated benchmark store if it is not there yet (in blocks of time, so a
    large one never needs its float64 generation temporaries all at once)."""
    from stzarr.store.format import StoreWriter
    from stzarr.testing.validators import make_series, make_store

    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if n_time * n_node * 4 < 2**28:
        make_store(path, n_time=n_time, n_node=n_node, chunk_time=None, missing_fraction=0.08)
        return
    time = np.datetime64("2017-01-01", "ns") + np.arange(n_time) * np.timedelta64(5, "m")
    with StoreWriter(
        path,
        time=time,
        node_ids=[str(i) for i in range(n_node)],
        feature_names=["speed"],
        edge_index=np.zeros((2, 0)),
        edge_weight=np.zeros(0),
        attrs={"missing_value": "zero", "sampling_interval_s": 300},
    ) as writer:
        step = max(writer.block_time, STREAM_STEPS // writer.block_time * writer.block_time)
        for i, start in enumerate(range(0, n_time, step)):
            block = make_series(min(step, n_time - start), n_node, missing_fraction=0.08, seed=i)
            writer.write(start, block)


def plot(results: dict, path: Path) -> None:
    """Memory over time, one panel per dataset, every variant."""
    panels = []
    for name, entry in results["datasets"].items():
        runs = {v: r for v, r in entry["variants"].items() if "trace" in r}
        if not runs:
            continue
        raw_mb = entry["raw_bytes"] / 1e6
        lines = {}
        for variant, run in runs.items():
            t, rss = np.array(run["trace"]).T
            lines[f"{variant} (peak {run['ratio_to_raw']:.2f}x raw)"] = (t, rss / 1e6)
        panels.append(
            {
                "lines": lines,
                "hlines": {f"raw series {raw_mb:.0f} MB": raw_mb, "goal 1.2x raw": 1.2 * raw_mb},
                "title": f"{name} shape {entry['shape'][0]:,} x {entry['shape'][1]}",
                "xlabel": "seconds",
                "ylabel": "RSS above baseline (MB = 1e6 B, log)",
                "yscale": "log",
            }
        )
    plot_panels(path, panels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "benchmarks/generated")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/memory.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs/memory.png")
    parser.add_argument("--replot", action="store_true", help="redraw the plot from --out")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads(args.out.read_text()), args.plot)
        return

    from tqdm import tqdm

    results: dict = {
        "benchmark": "memory",
        "spec": list(SPEC),
        "batch_size": BATCH,
        "sample_interval_s": INTERVAL_S,
        "goal_index_ratio": 1.2,
        "machine": machine(),
        "datasets": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "small.zarr"
        ensure_store(small, 600, 7)
        jobs = [(d, v) for d in args.datasets for v in VARIANTS]
        for name, variant in tqdm(jobs, desc="memory"):
            n_time, n_node = DATASETS[name]
            entry = results["datasets"].setdefault(
                name, {"shape": [n_time, n_node], "raw_bytes": n_time * n_node * 4, "variants": {}}
            )
            store = args.data_dir / f"memory-{name}.zarr"
            ensure_store(store, n_time, n_node)
            projected = projected_bytes(variant, n_time, n_node)
            available = psutil.virtual_memory().available
            if projected > available / 3:
                entry["variants"][variant] = {
                    "skipped": f"projected {projected / 1e9:.1f} GB "
                    f"> a third of available {available / 1e9:.1f} GB",
                    "projected_bytes": projected,
                }
                continue
            run = run_variant(variant, store, small)
            run["projected_bytes"] = projected
            run["ratio_to_raw"] = round(run["peak_above_baseline_bytes"] / entry["raw_bytes"], 3)
            entry["variants"][variant] = run
    for entry in results["datasets"].values():
        v = entry["variants"]
        if "ratio_to_raw" in v.get("index", {}) and "ratio_to_raw" in v.get("materialised", {}):
            entry["materialised_over_index"] = round(
                v["materialised"]["peak_above_baseline_bytes"]
                / v["index"]["peak_above_baseline_bytes"],
                2,
            )
    results["load_average_at_end"] = os.getloadavg()
    write_report(args.out, results, indent=None)
    plot(results, args.plot)
    summary = {
        n: {
            "raw_MB": round(e["raw_bytes"] / 1e6, 1),
            **{v: r.get("ratio_to_raw", r.get("skipped")) for v, r in e["variants"].items()},
        }
        for n, e in results["datasets"].items()
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
