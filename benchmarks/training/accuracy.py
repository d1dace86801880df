"""Training accuracy on a generated METR-LA-shape store (207 sensors x 34,272 five-minute steps,
the real METR-LA graph when ``../shared/data/adj_mx.pkl`` exists) and on the real METR-LA week.

Parts (``--part``, results merged into ``docs/results/accuracy.json``):

``baseline``
    the historical average (per node, per day-of-week x time-of-day slot of the train split)
    scored with the masked metrics on every validation and test window;
``single``
    PGT's ``BatchedDCRNN`` (``pgt-batched-dcrnn``, K=3) trained on the CPU (mode ``single``, one
    thread) for a bounded number of batches, then scored on every validation and test window;
``dcrnn``
    ``dcrnn`` (the DCRNN paper's encoder-decoder) and ``pgt-batched-dcrnn`` (PGT-I's
    ``BatchedDCRNN``) with the same hidden size, batches and learning rate, against the
    historical average, masked MAE overall and at horizons 3, 6 and 12 (15, 30, 60 minutes) on
    the same test windows (every ``k``-th, at most ``--dcrnn-eval-windows``: the encoder-decoder
    scores about 5 windows per CPU-second), on two stores: the METR-LA-shape store above and
    the real METR-LA week
    (``../shared/data/los_speed.csv``: 207 x 2,016, no timestamps; written here with stzarr's
    store writer on a 5-minute index from 2012-03-01 00:00, with the real graph ``adj_mx.pkl``);
``ddp``
    ``partitioned`` (chunk-aligned partitions, batch-level shuffle) versus ``full`` (global
    shuffle) with 2 DDP workers on a LocalCluster, equal epochs and batches, validation MAE over
    every validation window after each epoch.

Run with ``nice -n 10`` (the machine is shared); sizes are bounded by the options.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmarks.harness import machine, write_report
from stzarr.converters import convert
from stzarr.converters.adjacency import adjacency_to_coo, load_adjacency
from stzarr.converters.synth import synth_traffic
from stzarr.data.loaders import SeriesBatcher
from stzarr.plan.windows import WindowSpec, make_plan
from stzarr.store.format import Store, open_store, write_store
from stzarr.store.stats import compute_stats
from stzarr.training.config import TrainConfig
from stzarr.training.loop import evaluate
from stzarr.training.metrics import evaluate_historical_average
from stzarr.training.models import load_trained
from stzarr.training.train import train

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "benchmarks" / "generated"
RESULT = ROOT / "docs" / "results" / "accuracy.json"
GRAPH = ROOT.parent / "shared" / "data" / "adj_mx.pkl"
LOS_WEEK = ROOT.parent / "shared" / "data" / "los_speed.csv"
HORIZONS = (3, 6, 12)


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


def los_week_store() -> Store:
    """The real METR-LA week (T-GCN's ``los_speed.csv``) as a store on the real graph."""
    path = DATA / "los-week.zarr"
    if not path.exists():
        frame = pd.read_csv(LOS_WEEK)
        node_ids = [str(c) for c in frame.columns]
        adj_ids, adj = load_adjacency(GRAPH)
        edge_index, edge_weight = adjacency_to_coo(adj, adj_ids, node_ids, source=str(GRAPH))
        time = pd.date_range("2012-03-01", periods=len(frame), freq="5min").to_numpy()
        DATA.mkdir(parents=True, exist_ok=True)
        write_store(
            path,
            frame.to_numpy(np.float32)[:, :, None],
            time=time,
            node_ids=node_ids,
            feature_names=["speed"],
            edge_index=edge_index,
            edge_weight=edge_weight,
            attrs={
                "missing_value": "zero",
                "sampling_interval_s": 300,
                "source": {"file": LOS_WEEK.name, "sha256": None, "key": None, "format": "csv"},
            },
        )
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
            model="pgt-batched-dcrnn",
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
                model="pgt-batched-dcrnn",
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


def _horizon_maes(m: dict[str, Any]) -> dict[str, Any]:
    """MAE, RMSE and MAPE, overall and at each of :data:`HORIZONS`."""
    out: dict[str, Any] = {}
    for metric in ("mae", "rmse", "mape"):
        out[metric] = m[metric]
        out.update({f"{metric}@{h}": m["horizons"][str(h)][metric] for h in HORIZONS})
    return out


def score(
    store: Store, name: str, state: dict[str, torch.Tensor], hidden: int, starts: np.ndarray
) -> dict[str, Any]:
    """Masked metrics of a trained model on the test windows ``starts`` (batches of 64)."""
    spec = WindowSpec(12, 12)
    stats = compute_stats(store, bounds=make_plan(store.shape[0], spec).bounds["train"])
    batcher = SeriesBatcher.from_store(store, stats, spec, time_of_day=True)
    model = load_trained(name, store, batcher, state, hidden=hidden)
    batches = (batcher.batch_masked(s) for s in np.array_split(starts, -(-starts.size // 64)))
    return evaluate(model, batches, batcher, spec.horizon).result(HORIZONS)


def part_dcrnn(args: argparse.Namespace) -> dict[str, Any]:
    """Both DCRNN variants against the historical average on both stores."""
    config = {
        "epochs": args.dcrnn_epochs,
        "batches_per_epoch": args.dcrnn_batches,
        "batch_size": args.dcrnn_batch_size,
        "lr": args.lr,
        "hidden": args.dcrnn_hidden,
        "threads": 1,
    }
    out: dict[str, Any] = {}
    stores = {}
    if "metr-la-shape" in args.dcrnn_stores:
        stores["metr-la-shape"] = metr_la_store(args.steps)
    if "los-week" in args.dcrnn_stores and LOS_WEEK.is_file() and GRAPH.is_file():
        stores["los-week"] = los_week_store()
    for label, store in stores.items():
        plan = make_plan(store.shape[0], WindowSpec(12, 12))
        every = max(1, -(-plan.count("test") // args.dcrnn_eval_windows))
        starts = plan.starts["test"][::every]
        scored = dataclasses.replace(plan, starts={**plan.starts, "test": starts})
        row: dict[str, Any] = {
            "config": config,
            "load_average_at_start": os.getloadavg()[0],
            "shape": list(store.shape),
            "test_windows": plan.count("test"),
            "scored_windows": int(starts.size),
            "every": every,
            "historical_average": _horizon_maes(
                evaluate_historical_average(store, scored, "test", horizons=HORIZONS)
            ),
        }
        for name in ("dcrnn", "pgt-batched-dcrnn"):
            result = train(
                store,
                TrainConfig.of(
                    model=name,
                    mode="single",
                    epochs=args.dcrnn_epochs,
                    batch_size=args.dcrnn_batch_size,
                    lr=args.lr,
                    max_batches=args.dcrnn_batches,
                    eval_batches=1,  # scored below on the same windows as the baseline
                    threads=1,
                    progress=True,
                    horizons=HORIZONS,
                    model_options={"hidden": args.dcrnn_hidden},
                ),
            )
            t0 = time.perf_counter()
            test = score(store, name, result.state_dict, args.dcrnn_hidden, starts)
            row[name] = {
                **_horizon_maes(test),
                "score_s": time.perf_counter() - t0,
                "train_loss": result.losses,
                "samples_seen": sum(r["samples"] for r in result.history),
                "train_s": sum(r["train_s"] for r in result.history),
            }
            print(label, name, json.dumps(row[name])[:300], flush=True)
        out[label] = row
    return out


def dcrnn_table(part: dict[str, Any]) -> str:
    """Markdown table of the ``dcrnn`` part: test MAE overall and at horizons 3, 6, 12."""
    lines = [
        "| store | model | samples seen | test MAE | @3 (15 min) | @6 (30 min) | @12 (60 min) "
        "| RMSE | MAPE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, row in part.items():
        if not isinstance(row, dict) or "historical_average" not in row:
            continue
        for name in ("historical_average", "dcrnn", "pgt-batched-dcrnn"):
            m = row[name]
            seen = f"{m['samples_seen']:,}" if "samples_seen" in m else "-"
            lines.append(
                f"| {label} | {name.replace('_', ' ')} | {seen} | {m['mae']:.3f} | "
                + " | ".join(f"{m[f'mae@{h}']:.3f}" for h in HORIZONS)
                + (f" | {m['rmse']:.3f} | {m['mape']:.4f} |" if "rmse" in m else " | - | - |")
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part", choices=("baseline", "single", "ddp", "dcrnn", "all"), default="all"
    )
    parser.add_argument("--steps", type=int, default=34_272)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batches", type=int, default=100, help="batches per epoch (single)")
    parser.add_argument("--ddp-batches", type=int, default=50, help="per worker per epoch")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--dcrnn-epochs", type=int, default=1, help="part dcrnn")
    parser.add_argument("--dcrnn-batches", type=int, default=40, help="part dcrnn, per epoch")
    parser.add_argument("--dcrnn-batch-size", type=int, default=32, help="part dcrnn")
    parser.add_argument("--dcrnn-hidden", type=int, default=32, help="part dcrnn")
    parser.add_argument("--dcrnn-eval-windows", type=int, default=600, help="part dcrnn")
    parser.add_argument(
        "--dcrnn-stores",
        nargs="+",
        choices=("metr-la-shape", "los-week"),
        default=["metr-la-shape", "los-week"],
        help="part dcrnn",
    )
    parser.add_argument("--table", action="store_true", help="print the dcrnn table and exit")
    args = parser.parse_args()
    if args.table:
        print(dcrnn_table(json.loads(RESULT.read_text())["dcrnn"]))
        return
    store = metr_la_store(args.steps)
    results = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    results["store"] = {
        "shape": list(store.shape),
        "edges": int(store.edge_index.shape[1]),
        "graph": "METR-LA adj_mx.pkl" if GRAPH.is_file() else "random",
    }
    parts = ("baseline", "single", "ddp", "dcrnn") if args.part == "all" else (args.part,)
    for part in parts:
        load = os.getloadavg()[0]
        if part == "baseline":
            results["baseline"] = part_baseline(store)
        elif part == "single":
            results["single"] = part_single(store, args)
        elif part == "dcrnn":  # merged per store (one process per store may run at once)
            rows = part_dcrnn(args)
            results = json.loads(RESULT.read_text()) if RESULT.exists() else results
            kept = {
                k: v
                for k, v in results.get("dcrnn", {}).items()
                if isinstance(v, dict) and "shape" in v
            }
            results["dcrnn"] = {**kept, **rows}
        else:
            results["ddp"] = part_ddp(store, args)
        results[part]["load_average_at_start"] = load
        results["machine"] = machine()
        write_report(RESULT, results, indent=1)
        print(json.dumps({part: results[part]}, indent=1)[:2000])


if __name__ == "__main__":
    main()
