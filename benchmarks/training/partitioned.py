"""Per-rank peak memory of the two distributed modes, ``full`` vs ``partitioned``, for W ranks.

Each configuration is one :func:`stzarr.training.launch` on an embedded LocalCluster (fresh worker
processes, one per rank, gloo). Every rank loads its data exactly as training does
(:func:`stzarr.data.rank.open_rank_data`: ``full`` holds the whole standardised series,
``partitioned`` reads only its chunk-aligned time range plus the halo), then runs
``--batches`` steps of its sampler (batch 64, input_steps = horizon = 12, time-of-day computed at
batch time), building each batch and all-reducing a scalar from it so that the ranks step in
lockstep as under DDP (no model: this measures the data side). Peak RSS is sampled every 50 ms
in each rank's process by the launcher and includes the worker's baseline (Python, torch, dask).

Goal: ``partitioned`` peak per rank <= data / W + 0.5 GB (data = the whole float32 series).

Memory safety (shared 24 GB machine): a configuration runs only if its projected total (W x the
projected per-rank peak) is within ``--budget-gb`` and leaves ``--margin-gb`` available;
otherwise it is reported as projected (``full``: from the measured W = 1 peak, which every rank
of ``full`` repeats; ``partitioned``: the plan's memory plus the measured worker baseline).

Writes ``docs/results/partitioned.json`` and ``docs/partitioned_memory.png``; prints a Markdown
table for ``docs/benchmarks.md``. Needs ``benchmarks/generated/READY`` (the PeMS-scale store).

Run: ``nice -n 10 .venv/bin/python -m benchmarks.training.partitioned``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import psutil
import torch
import torch.distributed as dist

from benchmarks.harness import machine, plot_lines, write_report
from stzarr import WindowSpec, compute_stats, launch, make_plan, open_store, store_partitions
from stzarr.data.rank import open_rank_data
from stzarr.plan.rank import plan_rank
from stzarr.store.stats import cache_stats, cached_stats
from stzarr.training.launch import RankContext

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "benchmarks" / "generated"
GB = 1e9


def bench_rank(
    ctx: RankContext, path: str, mode: str, spec: WindowSpec, batch_size: int, n_batches: int
) -> dict[str, Any]:
    """Load the rank's data as training does, then run ``n_batches`` lockstep batches."""
    store = open_store(path)
    plan = make_plan(store.shape[0], spec)
    stats = cached_stats(store, bounds=plan.bounds["train"])  # written by the parent
    t0 = time.perf_counter()
    rank_plan = plan_rank(
        plan,
        store,
        mode=mode,
        rank=ctx.rank,
        world_size=ctx.world_size,
        batch_size=batch_size,
        seed=0,
    )
    data = open_rank_data(store, rank_plan, stats, device=ctx.device, options={"time_of_day": True})
    load_s = time.perf_counter() - t0
    sampler, batcher = data.train.sampler, data.series
    sampler.set_epoch(0)
    steps = min(n_batches, len(sampler))
    t0 = time.perf_counter()
    for _, starts in zip(range(steps), sampler, strict=False):
        x, y = batcher.batch(starts)
        total = (x.mean() + y.mean()).reshape(1)
        dist.all_reduce(total)
    return {
        "load_s": load_s,
        "batches_s": time.perf_counter() - t0,
        "batches": steps,
        "epoch_batches": len(sampler),
        "time_range": list(batcher.time_range),
        "series_bytes": batcher.nbytes,
    }


def run_config(args: argparse.Namespace, mode: str, world: int) -> dict[str, Any]:
    spec = WindowSpec(args.input_steps, args.horizon)
    t0 = time.perf_counter()
    results = launch(
        bench_rank,
        world,
        str(args.store),
        mode,
        spec,
        args.batch_size,
        args.batches,
        timeout=3600,
        pg_timeout=900,
    )
    ranks = [
        {
            "rank": r.rank,
            "peak_rss_bytes": r.peak_rss_bytes,
            "start_rss_bytes": r.start_rss_bytes,
            **r.value,
        }
        for r in results
    ]
    return {
        "mode": mode,
        "world_size": world,
        "measured": True,
        "wall_s": time.perf_counter() - t0,
        "per_rank": ranks,
        "peak_rss_bytes": max(r["peak_rss_bytes"] for r in ranks),
        "baseline_rss_bytes": max(r["start_rss_bytes"] for r in ranks),
    }


def main(args: argparse.Namespace) -> None:
    if args.require_ready and not (DATA / "READY").exists():
        raise SystemExit(f"{DATA / 'READY'} is missing: the PeMS-scale store is not ready")
    store = open_store(args.store)
    n_time, n_node, n_feature = store.shape
    data_bytes = n_time * n_node * n_feature * 4
    spec = WindowSpec(args.input_steps, args.horizon)
    plan = make_plan(n_time, spec)
    t0 = time.perf_counter()
    cache_stats(store, compute_stats(store, bounds=plan.bounds["train"]))  # once, for the ranks
    stats_s = time.perf_counter() - t0
    print(
        f"{args.store}: {store.shape}, {store.chunk_time}-step chunks, "
        f"{data_bytes / GB:.2f} GB of float32; train statistics in {stats_s:.1f} s"
    )

    runs: list[dict[str, Any]] = []
    baseline = 0.45 * GB  # replaced by the measured worker baseline after the first run
    full_w1 = None
    for mode in args.modes:
        for world in sorted(args.workers):
            if mode == "full":
                per_rank = full_w1 if full_w1 is not None else data_bytes + baseline
                basis = "measured W=1 full peak" if full_w1 is not None else "data + baseline"
            else:
                parts = store_partitions(store, plan, world)
                per_rank = max(p.memory_bytes for p in parts.partitions) + baseline
                basis = "plan memory + measured worker baseline"
            total = world * per_rank
            available = psutil.virtual_memory().available
            fits = total <= args.budget_gb * GB and available - total >= args.margin_gb * GB
            if not fits:
                print(
                    f"{mode} W={world}: projected {total / GB:.1f} GB in total "
                    f"({available / GB:.1f} GB available): not run, reported as projected"
                )
                runs.append(
                    {
                        "mode": mode,
                        "world_size": world,
                        "measured": False,
                        "peak_rss_bytes": int(per_rank),
                        "projected_total_bytes": int(total),
                        "basis": basis,
                    }
                )
                continue
            print(f"{mode} W={world}: projected {total / GB:.1f} GB in total; running")
            run = run_config(args, mode, world)
            run["projected_peak_rss_bytes"] = int(per_rank)
            runs.append(run)
            baseline = run["baseline_rss_bytes"]
            if mode == "full" and world == 1:
                full_w1 = run["peak_rss_bytes"]
            print(
                f"  peak RSS per rank {run['peak_rss_bytes'] / GB:.2f} GB "
                f"(worker baseline {baseline / GB:.2f} GB), {run['wall_s']:.0f} s"
            )

    for run in runs:
        if run["mode"] == "partitioned":
            run["goal_bytes"] = int(data_bytes / run["world_size"] + 0.5 * GB)
            run["meets_goal"] = run["peak_rss_bytes"] <= run["goal_bytes"]
    result = {
        "benchmark": "partitioned",
        "store": str(
            args.store.relative_to(ROOT) if args.store.is_relative_to(ROOT) else args.store
        ),
        "shape": [n_time, n_node, n_feature],
        "chunk_time": store.chunk_time,
        "data_bytes": data_bytes,
        "spec": spec.to_dict(),
        "batch_size": args.batch_size,
        "batches_per_rank": args.batches,
        "stats_s": stats_s,
        "machine": {
            **machine(),
            "ram_bytes": psutil.virtual_memory().total,
            "torch": torch.__version__,
        },
        "runs": runs,
    }
    write_report(args.out, result)
    plot(result, args.plot)
    print(markdown(result))


def markdown(result: dict[str, Any]) -> str:
    """The results as the Markdown table of docs/benchmarks.md."""
    lines = [
        "| mode | W | per-rank peak RSS (GB) | goal (GB) | measured? |",
        "|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        goal = f"{run['goal_bytes'] / GB:.2f}" if "goal_bytes" in run else "-"
        ok = "" if "meets_goal" not in run else (" (met)" if run["meets_goal"] else " (missed)")
        how = "measured" if run["measured"] else f"projected ({run['basis']})"
        lines.append(
            f"| {run['mode']} | {run['world_size']} | "
            f"{run['peak_rss_bytes'] / GB:.2f} | {goal}{ok} | {how} |"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Per-rank peak RSS vs W, both modes, measured and projected points apart."""
    lines = {}
    for mode in ("full", "partitioned"):
        for measured, kind in ((True, "measured"), (False, "projected")):
            runs = [r for r in result["runs"] if r["mode"] == mode and r["measured"] == measured]
            if runs:
                lines[f"{mode}, {kind}"] = (
                    [r["world_size"] for r in runs],
                    [r["peak_rss_bytes"] / GB for r in runs],
                )
    ws = sorted({r["world_size"] for r in result["runs"]})
    lines["goal: data / W + 0.5 GB"] = (ws, [result["data_bytes"] / w / GB + 0.5 for w in ws])
    shape = "x".join(str(s) for s in result["shape"])
    plot_lines(
        path,
        lines,
        title=f"per-rank memory, {shape} float32 ({result['data_bytes'] / GB:.1f} GB)",
        xlabel="ranks W",
        ylabel="peak RSS per rank (GB)",
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=DATA / "pems-scale.zarr")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--modes", nargs="+", default=["full", "partitioned"], choices=["full", "partitioned"]
    )
    parser.add_argument("--input-steps", type=int, default=12)
    parser.add_argument("--horizon", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=50, help="batches per rank")
    parser.add_argument(
        "--budget-gb", type=float, default=12.0, help="largest projected total to run"
    )
    parser.add_argument(
        "--margin-gb", type=float, default=4.0, help="memory that must stay available to others"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/partitioned.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs/partitioned_memory.png")
    parser.add_argument("--no-ready-check", dest="require_ready", action="store_false")
    main(parser.parse_args())
