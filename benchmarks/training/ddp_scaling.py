"""DDP scaling of DCRNN training on CPU: samples per second with 1 and 2 Dask workers.

Both runs use the same code path (mode ``full`` through :func:`stzarr.training.launch.launch` on a
LocalCluster), one torch thread per worker (``torch.set_num_threads(1)``), the same per-worker
batch (weak scaling: the global batch grows with the workers, as in the paper) and a bounded
number of batches. The rate is that of the training loop only (last epoch, so start-up and the
first-batch warm-up are excluded); the goal is >= 1.7x at 2 workers. The machine's load average
is recorded because the 2 cores are shared.

Writes ``docs/results/ddp_scaling.json`` and ``docs/ddp_scaling.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from benchmarks.harness import machine, plot_lines, write_report
from benchmarks.training.accuracy import metr_la_store
from stzarr.training.config import TrainConfig
from stzarr.training.train import train

ROOT = Path(__file__).resolve().parents[2]
RESULT = ROOT / "docs" / "results" / "ddp_scaling.json"
FIGURE = ROOT / "docs" / "ddp_scaling.png"
GOAL = 1.7


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=10, help="batches per worker per epoch")
    parser.add_argument("--batch-size", type=int, default=32, help="per worker")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds (median)")
    args = parser.parse_args()
    store = metr_la_store()
    runs = []
    for workers in [w for _ in range(args.repeats) for w in args.workers]:
        load = os.getloadavg()[0]
        result = train(
            store,
            TrainConfig.of(
                model="pgt-batched-dcrnn",
                mode="full",
                workers=workers,
                epochs=2,
                batch_size=args.batch_size,
                max_batches=args.batches,
                eval_batches=1,
                threads=1,
                progress=False,
                model_options={"hidden": args.hidden},
            ),
        )
        last = result.history[-1]
        runs.append(
            {
                "workers": workers,
                "samples_per_s": last["samples_per_s"],
                "train_s": last["train_s"],
                "samples": last["samples"],
                "epoch_samples_per_s": [r["samples_per_s"] for r in result.history],
                "peak_rss_bytes": last["peak_rss_bytes"],
                "load_average_at_start": load,
            }
        )
        print(runs[-1])
    rate = {
        w: statistics.median(r["samples_per_s"] for r in runs if r["workers"] == w)
        for w in args.workers
    }
    speedup = {w: rate[w] / rate[args.workers[0]] for w in args.workers}
    out = {
        "model": "pgt-batched-dcrnn",
        "hidden": args.hidden,
        "batch_size_per_worker": args.batch_size,
        "batches_per_worker": args.batches,
        "store_shape": list(store.shape),
        "cpu_count": os.cpu_count(),
        "goal_speedup_at_2": GOAL,
        "repeats": args.repeats,
        "median_samples_per_s": rate,
        "speedup": speedup,
        "runs": runs,
    }
    out["machine"] = machine()
    write_report(RESULT, out, indent=1)
    ws = list(args.workers)
    plot_lines(
        FIGURE,
        {"measured (median)": (ws, [speedup[w] for w in ws]), "ideal": (ws, ws)},
        title="DCRNN DDP scaling on CPU (METR-LA shape)",
        xlabel="Dask workers (1 torch thread each)",
        ylabel="training samples/s vs 1 worker",
        hlines={f"goal {GOAL}x at 2": GOAL},
    )
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
