"""``dcrnn`` on wide graphs: memory per sample and time per sample against width, with and
without ``recompute`` (activation checkpointing of every cell step), and a training step at
PeMS width (11,160 nodes, batch 8, 64 units, 2 layers, K = 2, 12 -> 12) with ``recompute``.
Goal: that step within 6 GB peak RSS on the CPU.

Each measurement is a fresh process running ``dcrnn_speed``'s model step (one warm-up step,
``--steps`` timed Adam steps, the kernel's peak RSS); graphs other than METR-LA's are random,
9 weighted edges per node.

    python -m benchmarks.training.dcrnn_width [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from types import SimpleNamespace

import torch

from benchmarks.harness import write_report
from benchmarks.training.dcrnn_speed import run_child

ROOT = Path(__file__).resolve().parents[2]
RESULT = ROOT / "docs" / "results" / "dcrnn_width.json"
PEMS = 11_160
GOAL_BYTES = 6 * 1024**3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[207, 828, 2070])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="widths 207 and 828, no PeMS run")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    if args.quick:
        args.widths = [207, 828]
    load_before = os.getloadavg()
    sweep = []
    for nodes in args.widths:
        for recompute in (False, True):
            opts = SimpleNamespace(**{**vars(args), "nodes": nodes})
            run = run_child(opts, "ours", recompute)
            run["bytes_per_sample"] = run["peak_above_model_bytes"] / args.batch
            run["seconds_per_sample"] = run["seconds_per_step"] / args.batch
            sweep.append(run)
            print(json.dumps(run), flush=True)
    pems = None
    if not args.quick:
        opts = SimpleNamespace(**{**vars(args), "nodes": PEMS, "batch": 8})
        pems = run_child(opts, "ours", True)
        print(json.dumps(pems), flush=True)
    overhead = {
        str(n): next(r for r in sweep if r["nodes"] == n and r["recompute"])["seconds_per_step"]
        / next(r for r in sweep if r["nodes"] == n and not r["recompute"])["seconds_per_step"]
        for n in args.widths
    }
    memory = {
        str(n): next(r for r in sweep if r["nodes"] == n and r["recompute"])["bytes_per_sample"]
        / next(r for r in sweep if r["nodes"] == n and not r["recompute"])["bytes_per_sample"]
        for n in args.widths
    }
    result = {
        "device": args.device,
        "threads": args.threads,
        "batch": args.batch,
        "sweep": sweep,
        "recompute_time_ratio": overhead,
        "recompute_memory_ratio": memory,
        "pems_width_with_recompute": pems,
        "goal": {"pems_peak_rss_bytes_at_most": GOAL_BYTES},
        "met": None if pems is None else pems["peak_rss_bytes"] <= GOAL_BYTES,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "torch": torch.__version__,
    }
    write_report(args.out, result, indent=1)
    print(json.dumps({"time_ratio": overhead, "memory_ratio": memory, "met": result["met"]}))


if __name__ == "__main__":
    main()
