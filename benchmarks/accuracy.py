"""Training accuracy on a generated METR-LA-shape store (207 sensors x 34,272 five-minute steps,
the real METR-LA graph when ``../shared/data/adj_mx.pkl`` exists).

Parts (``--part``, results merged into ``docs/results/accuracy.json``):

``baseline``
    the historical average (per node, per day-of-week x time-of-day slot of the train split)
    scored with the masked metrics on every validation and test window;
``single``
    DCRNN (PGT ``BatchedDCRNN``, K=3) trained on the CPU (mode ``single``, one thread) for a
    bounded number of batches, then scored on every validation and test window;
``ddp``
    ``partitioned`` (chunk-aligned partitions, batch-level shuffle) versus ``full`` (global
    shuffle) with 2 DDP workers on a LocalCluster, equal epochs and batches, validation MAE over
    every validation window after each epoch.

Run with ``nice -n 10`` (the machine is shared); sizes are bounded by the options.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from stzarr.config import TrainConfig
from stzarr.converters import convert
from stzarr.metrics import evaluate_historical_average
from stzarr.store import Store, open_store
from stzarr.synth import synth_traffic
from stzarr.train import train
from stzarr.windows import WindowSpec, make_plan

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"
RESULT = ROOT / "docs" / "results" / "accuracy.json"
GRAPH = ROOT.parent / "shared" / "data" / "adj_mx.pkl"


def metr_la_store(steps: int = 34_272) -> Store:
    """The generated METR-LA-shape store used by the training benchmarks (made once)."""
    path = DATA / f"train-metr-la-{steps}.zarr"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        graph = GRAPH if GRAPH.is_file() else None
        h5 = DATA / f"train-metr-la-{steps}.h5"
        synth = synth_traffic(
            h5,
            steps=steps,
            nodes=None if graph else 207,
            graph=graph,
            overwrite=True,
            progress=False,
        )
        convert(h5, path, adjacency=graph or synth.adjacency, progress=False)
    return open_store(path)


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "mae": m["mae"],
        "rmse": m["rmse"],
        "mape": m["mape"],
        "horizons": {h: v["mae"] for h, v in m["horizons"].items()},
    }


def part_baseline(store: Store) -> dict[str, Any]:
    plan = make_plan(store.shape[0], WindowSpec(12, 12))
    t0 = time.perf_counter()
    out = {s: _summary(evaluate_historical_average(store, plan, s)) for s in ("val", "test")}
    out["seconds"] = time.perf_counter() - t0
    return out


def part_single(store: Store, args: argparse.Namespace) -> dict[str, Any]:
    result = train(
        store,
        TrainConfig.of(
            model="dcrnn",
            mode="single",
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            max_batches=args.batches,
            threads=1,
            progress=True,
            model_options={"hidden": args.hidden},
            log_path=DATA / "accuracy-single-log.json",
        ),
    )
    return {
        "config": {
            "epochs": args.epochs,
            "batches_per_epoch": args.batches,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "hidden": args.hidden,
            "samples_seen": sum(r["samples"] for r in result.history),
        },
        "train_loss": result.losses,
        "val_mae": [r["val"]["mae"] for r in result.history],
        "val": _summary(result.val),
        "test": _summary(result.test),
        "train_s": sum(r["train_s"] for r in result.history),
        "wall_s": result.wall_s,
    }


def part_ddp(store: Store, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "config": {
            "workers": 2,
            "epochs": args.epochs,
            "batches_per_epoch_per_worker": args.ddp_batches,
            "batch_size_per_worker": args.batch_size // 2,
            "lr": args.lr,
            "hidden": args.hidden,
        }
    }
    for mode in ("full", "partitioned"):
        result = train(
            store,
            TrainConfig.of(
                model="dcrnn",
                mode=mode,
                workers=2,
                epochs=args.epochs,
                batch_size=args.batch_size // 2,
                lr=args.lr,
                max_batches=args.ddp_batches,
                threads=1,
                progress=True,
                model_options={"hidden": args.hidden},
                log_path=DATA / f"accuracy-{mode}-log.json",
            ),
        )
        out[mode] = {
            "val_mae": [r["val"]["mae"] for r in result.history],
            "train_loss": result.losses,
            "val": _summary(result.val),
            "train_s": sum(r["train_s"] for r in result.history),
            "peak_rss_bytes": result.history[-1]["peak_rss_bytes"],
            "series_bytes": result.log["preprocess"]["series_bytes"],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("baseline", "single", "ddp", "all"), default="all")
    parser.add_argument("--steps", type=int, default=34_272)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batches", type=int, default=100, help="batches per epoch (single)")
    parser.add_argument("--ddp-batches", type=int, default=50, help="per worker per epoch")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args()
    store = metr_la_store(args.steps)
    results = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    results["store"] = {
        "shape": list(store.shape),
        "edges": int(store.edge_index.shape[1]),
        "graph": "METR-LA adj_mx.pkl" if GRAPH.is_file() else "random",
    }
    parts = ("baseline", "single", "ddp") if args.part == "all" else (args.part,)
    for part in parts:
        load = os.getloadavg()[0]
        if part == "baseline":
            results["baseline"] = part_baseline(store)
        elif part == "single":
            results["single"] = part_single(store, args)
        else:
            results["ddp"] = part_ddp(store, args)
        results[part]["load_average_at_start"] = load
        RESULT.parent.mkdir(parents=True, exist_ok=True)
        RESULT.write_text(json.dumps(results, indent=1))
        print(json.dumps({part: results[part]}, indent=1)[:2000])


if __name__ == "__main__":
    main()
