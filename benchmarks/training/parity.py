"""Accuracy parity of generalized-distributed-index-batching with a global shuffle.

Does ``partitioned`` (each rank trains only on its own contiguous range of time) train as good a
model as ``full`` (every rank holds everything, seeded global shuffle)? Four runs per dataset,
W = 2 DDP workers on a LocalCluster, the same model, seed, batch size, epochs and samples per
epoch; validation masked MAE over every validation window after every epoch:

``full``
    global shuffle (distributed-index-batching);
``window``
    ``partitioned``, each epoch a seeded permutation of the rank's own windows (the default);
``batch``
    ``partitioned``, the paper's batch-order shuffle (fixed batches of consecutive windows);
``streamed``
    ``partitioned`` under a ``max_memory`` smaller than a rank's share, so each rank streams its
    range in chunk-aligned blocks (windows shuffled across the pool of resident blocks).

Datasets (stores written under ``--data-dir``, never into the shared ``benchmarks/generated``):

``metr-la-shape``
    ``stzarr synth`` traffic on the real METR-LA graph (207 sensors, ``../shared/data/adj_mx.pkl``),
    ``--synth-steps`` five-minute steps;
``metr-la-week``
    the real first week of METR-LA speeds (``../shared/data/los_speed.csv``, 207 x 2,016) with the
    real graph, written as a METR-LA pandas HDF5 file and converted with ``stzarr convert``.

Goal: the best validation MAE of ``window`` and ``streamed`` within 3 % of ``full``'s. Results
in ``docs/results/parity.json`` (merged per dataset and run, so runs can be done in parts),
plot of validation MAE per epoch in ``docs/parity.png``. Run with ``nice -n 10``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.harness import machine, plot_panels, write_report
from stzarr.converters import convert
from stzarr.converters.synth import synth_traffic
from stzarr.data.rank import check_budget
from stzarr.errors import SpecError
from stzarr.plan.partition import store_partitions
from stzarr.plan.windows import WindowPlan, WindowSpec, make_plan
from stzarr.store.format import Store, open_store
from stzarr.training.config import TrainConfig
from stzarr.training.loop import plan_rank_of
from stzarr.training.models import MODELS
from stzarr.training.train import train, train_statistics

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
GRAPH = SHARED / "adj_mx.pkl"
WEEK_CSV = SHARED / "los_speed.csv"
RESULT = ROOT / "docs" / "results" / "parity.json"
FIGURE = ROOT / "docs" / "parity.png"
DATASETS = ("metr-la-shape", "metr-la-week")
RUNS = ("full", "window", "batch", "streamed")
WORKERS = 2
CHUNK_TIME = 144  # half a day of five-minute steps: balanced chunk-aligned halves, blocks to stream


def synth_store(data_dir: Path, steps: int) -> Store:
    """The METR-LA-shape store: generated traffic on the real graph (made once)."""
    path = data_dir / f"metr-la-shape-{steps}.zarr"
    if not path.exists():
        h5 = data_dir / f"metr-la-shape-{steps}.h5"
        synth_traffic(h5, steps=steps, graph=GRAPH, overwrite=True, progress=False)
        convert(h5, path, adjacency=GRAPH, chunk_time=CHUNK_TIME, progress=False)
    return open_store(path)


def week_store(data_dir: Path) -> Store:
    """The real METR-LA week (T-GCN's ``los_speed.csv``, no timestamps: it starts where METR-LA
    starts, 2012-03-01 00:00, every five minutes), via a METR-LA-layout pandas HDF5 file."""
    path = data_dir / "metr-la-week.zarr"
    if not path.exists():
        frame = pd.read_csv(WEEK_CSV)
        frame.index = pd.date_range("2012-03-01", periods=len(frame), freq="5min")
        h5 = data_dir / "metr-la-week.h5"
        frame.astype("float64").to_hdf(h5, key="df", format="fixed", mode="w")
        convert(h5, path, adjacency=GRAPH, chunk_time=CHUNK_TIME, progress=False)
    return open_store(path)


def window_plan(store: Store, args: argparse.Namespace) -> WindowPlan:
    """The runs' window plan (70/10/20 split)."""
    spec = WindowSpec(args.input_steps, args.horizon, args.stride)
    return make_plan(store.shape[0], spec, train=0.7, val=0.1)


def steps_per_epoch(store: Store, args: argparse.Namespace) -> int:
    """Batches per worker per epoch of the partitioned runs (the fewest over ranks); every run
    uses this many, so all runs see the same number of samples."""
    return store_partitions(store, window_plan(store, args), WORKERS).steps_per_epoch(
        args.batch_size
    )


def stream_budget(store: Store, config: TrainConfig) -> int:
    """A ``max_memory`` under which both ranks stream: halfway between the smallest budget a
    stream can run in and what the smaller rank needs to hold its share (series and batches)."""
    windows = config.split.plan(config.window, store.time)
    stats, _ = train_statistics(store, windows)
    plans = [
        plan_rank_of(store, windows, config, rank=r, world_size=WORKERS) for r in range(WORKERS)
    ]
    need = min(plan.needs_bytes(plan.train_range) for plan, _ in plans)

    def streams(budget: int) -> bool:
        try:
            for plan, options in plans:
                check_budget(store, replace(plan, max_memory=budget), stats, options)
        except SpecError:
            return False
        return True

    lo, hi = 1, need  # smallest budget that streams, by bisection
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if streams(mid) else (mid + 1, hi)
    if lo >= need:  # the batch and read buffers alone exceed a rank's share: nothing to stream
        raise SystemExit(
            f"{store.path}: streaming needs {lo} bytes, more than a rank's whole share with its "
            f"batches ({need}): use a longer series or smaller batches"
        )
    return (lo + need) // 2


def run_one(store: Store, run: str, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """Train one run and summarise it."""
    steps = steps_per_epoch(store, args)
    options: dict[str, Any] = {
        "model": args.model,
        "mode": "full" if run == "full" else "partitioned",
        "workers": WORKERS,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "input_steps": args.input_steps,
        "horizon": args.horizon,
        "stride": args.stride,
        "seed": args.seed,
        "max_batches": steps,
        "threads": 1,
        "progress": True,
        "model_options": {"hidden": args.hidden},
        "log_path": log_dir / f"{Path(store.path).stem}-{run}.json",
    }
    if run != "full":
        options["shuffle"] = "batch" if run == "batch" else "window"
    if run == "streamed":
        options["max_memory"] = stream_budget(store, TrainConfig.of(**options))
    result = train(store, TrainConfig.of(**options))
    held = [r["train"] for r in result.log["ranks"]]
    if held != (["streamed"] * WORKERS if run == "streamed" else ["loaded"] * WORKERS):
        raise SystemExit(f"{run}: the ranks {held} their data")
    val_mae = [r["val"]["mae"] for r in result.history]
    best = int(np.argmin(val_mae))
    out = {
        "val_mae": val_mae,
        "train_loss": result.losses,
        "best_val_mae": val_mae[best],
        "best_epoch": best + 1,
        "still_improving": best == len(val_mae) - 1,
        "samples_per_epoch": [r["samples"] for r in result.history],
        "batches_per_epoch": steps,
        "test_mae": result.test["mae"],
        "train_s": sum(r["train_s"] for r in result.history),
        "wall_s": result.wall_s,
        "peak_rss_bytes": result.log.get("peak_rss_bytes"),
    }
    out["ranks"] = [
        {k: r.get(k) for k in ("train", "shuffle", "blocks_planned", "peak_series_bytes", "wait_s")}
        for r in result.log["ranks"]
    ]
    if run == "streamed":
        out["max_memory"] = options["max_memory"]
    return out


def gaps(runs: dict[str, Any]) -> dict[str, float]:
    """Best validation MAE of each run relative to ``full``'s (0.03 = 3 % worse)."""
    if "full" not in runs:
        return {}
    ref = runs["full"]["best_val_mae"]
    return {k: v["best_val_mae"] / ref - 1 for k, v in runs.items() if k != "full"}


def plot(results: dict[str, Any], path: Path) -> None:
    """Validation MAE per epoch, one panel per dataset."""
    panels = [
        {
            "lines": {
                run: (
                    range(1, len(entry["runs"][run]["val_mae"]) + 1),
                    entry["runs"][run]["val_mae"],
                )
                for run in RUNS
                if run in entry["runs"]
            },
            "title": name,
            "xlabel": "epoch",
            "ylabel": "validation masked MAE",
        }
        for name, entry in results.get("datasets", {}).items()
        if entry.get("runs")
    ]
    if panels:
        plot_panels(path, panels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--synth-steps", type=int, default=2016, help="steps of metr-la-shape")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16, help="per worker")
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--input-steps", type=int, default=12)
    parser.add_argument("--horizon", type=int, default=12)
    parser.add_argument("--stride", type=int, default=4, help="steps between window starts")
    parser.add_argument(
        "--model", choices=MODELS, default="a3tgcn" if "a3tgcn" in MODELS else MODELS[0]
    )
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/stzarr-parity"))
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--replot", action="store_true", help="redraw the plot from --out")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads(args.out.read_text()), FIGURE)
        return
    args.data_dir.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results.setdefault("datasets", {})
    for name in args.datasets:
        store = week_store(args.data_dir) if name == "metr-la-week" else None
        if store is None:
            store = synth_store(args.data_dir, args.synth_steps)
        entry = results["datasets"].setdefault(name, {"runs": {}})
        for run in args.runs:
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            summary = run_one(store, run, args, args.data_dir)
            summary["load_average_at_start"] = load
            summary["seconds"] = time.perf_counter() - t0
            entry["runs"][run] = summary
            entry["store"] = {"shape": list(store.shape), "chunk_time": store.chunk_time}
            entry["config"] = {
                "workers": WORKERS,
                "model": args.model,
                "hidden": args.hidden,
                "epochs": args.epochs,
                "batch_size_per_worker": args.batch_size,
                "lr": args.lr,
                "seed": args.seed,
                "input_steps": args.input_steps,
                "horizon": args.horizon,
                "stride": args.stride,
                "windows": {k: int(v.size) for k, v in window_plan(store, args).starts.items()},
            }
            entry["gap_to_full"] = gaps(entry["runs"])
            entry["goal_met"] = {
                k: v <= 0.03 for k, v in entry["gap_to_full"].items() if k in ("window", "streamed")
            }
            results["machine"] = machine()
            write_report(args.out, results, indent=1)
            plot(results, FIGURE)
            best = summary["best_val_mae"]
            print(f"{name} {run}: best val MAE {best:.4f} at epoch {summary['best_epoch']}")
    print(json.dumps({d: results["datasets"][d].get("gap_to_full") for d in args.datasets}))


if __name__ == "__main__":
    main()
