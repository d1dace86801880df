"""CPU training and evaluation speed of every model at the METR-LA shape.

207 sensors on the real METR-LA graph (1,722 edges; a random 207-sensor graph when
``../shared/data/adj_mx.pkl`` is absent), input_steps = horizon = 12, speed + time-of-day in,
speed out, each model with its default hyper-parameters. For 1 and 2 torch threads, batch 32
and 64, each model runs ``--steps`` training steps and ``--steps`` evaluation batches after one
untimed warm-up step, on batches gathered from the generated METR-LA-shape store by a
:class:`~stzarr.data.loaders.SeriesBatcher` (index-batching), as ``stzarr train`` does.

A training step is split into: ``load`` (gather the batch), ``forward``, ``backward`` (loss on
de-standardised values + backward), ``optimizer`` (Adam step) and ``metrics`` (masked metric
sums); an evaluation batch into ``load``, ``forward`` and ``metrics``. On the CPU every operation
is synchronous, so wall-clock sections are exact. The model's share of a step is
``(forward + backward + optimizer) / step``. The process's CPU seconds per step are recorded
too: on a shared machine they are steadier than wall-clock time.

Writes ``docs/results/train_speed.json``. Run:
``nice -n 10 .venv/bin/python -m benchmarks.training.train_speed`` (a few minutes on the shared
2 cores). ``--models`` measures a subset; ``--table`` prints the Markdown table from the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.harness import machine, write_report
from stzarr.data.loaders import SeriesBatcher
from stzarr.plan.windows import WindowSpec, make_plan
from stzarr.store.format import Store
from stzarr.store.stats import compute_stats
from stzarr.training.metrics import MaskedMetrics, masked_mae
from stzarr.training.models import MODELS, build_model

ROOT = Path(__file__).resolve().parents[2]
RESULT = ROOT / "docs" / "results" / "train_speed.json"
SECTIONS = {
    "train": ("load", "forward", "backward", "optimizer", "metrics"),
    "eval": ("load", "forward", "metrics"),
}


def _metr_la_store(steps: int) -> Store:
    from benchmarks.training.accuracy import (
        metr_la_store,  # the shared generated store of the training benchmarks
    )

    return metr_la_store(steps)


def measure(
    name: str,
    batcher: SeriesBatcher,
    starts: np.ndarray,
    edge_index: torch.Tensor,
    edge_weight: torch.Tensor,
    batch_size: int,
    steps: int,
) -> dict[str, Any]:
    """Time ``steps`` training steps and ``steps`` evaluation batches of model ``name``."""
    torch.manual_seed(0)
    model = build_model(
        name,
        n_node=batcher.series.shape[1],
        in_features=batcher.n_input_features,
        out_features=batcher.n_target_features,
        input_steps=batcher.spec.input_steps,
        horizon=batcher.spec.horizon,
        edge_index=edge_index,
        edge_weight=edge_weight,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    batches = [starts[k * batch_size : (k + 1) * batch_size] for k in range(steps + 1)]
    out: dict[str, Any] = {}
    for phase in ("train", "eval"):
        model.train(phase == "train")
        metrics = MaskedMetrics(batcher.spec.horizon)
        sums = dict.fromkeys(SECTIONS[phase], 0.0)
        cpu_s = 0.0
        for k, batch in enumerate(batches):
            cpu0 = time.process_time()
            clock = [time.perf_counter()]
            x, y, missing = batcher.batch_masked(batch)
            clock.append(time.perf_counter())
            with torch.set_grad_enabled(phase == "train"):
                pred = model(x)
                clock.append(time.perf_counter())
                pred_raw, y_raw = batcher.inverse(pred), batcher.inverse(y)
                if phase == "train":
                    loss = masked_mae(pred_raw, y_raw, ~missing)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    clock.append(time.perf_counter())
                    optimizer.step()
                    clock.append(time.perf_counter())
            metrics.update(pred_raw.detach(), y_raw, ~missing)
            clock.append(time.perf_counter())
            if k == 0:
                continue  # warm-up: first-call caches, allocator
            cpu_s += time.process_time() - cpu0
            for section, (a, b) in zip(SECTIONS[phase], pairwise(clock), strict=True):
                sums[section] += b - a
        step_s = sum(sums.values()) / steps
        model_s = sum(sums[s] for s in ("forward", "backward", "optimizer") if s in sums) / steps
        out[phase] = {
            "samples_per_s": batch_size / step_s,
            "step_s": step_s,
            # CPU seconds of the process per step: robust to other load on a shared machine
            "cpu_s_per_step": cpu_s / steps,
            "samples_per_cpu_s": batch_size * steps / cpu_s,
            "model_share": model_s / step_s,
            "sections_s": {s: v / steps for s, v in sums.items()},
        }
    out["n_parameters"] = int(sum(p.numel() for p in model.parameters()))
    return out


def table(results: dict[str, Any]) -> str:
    """Markdown table of samples/s and the model's share of each step."""
    lines = [
        "| model | threads | batch | train samples/s | per CPU-s | model share "
        "| eval samples/s | per CPU-s | model share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["runs"]:
        tr, ev = row["train"], row["eval"]
        lines.append(
            f"| `{row['model']}` | {row['threads']} | {row['batch_size']} "
            f"| {tr['samples_per_s']:.1f} | {tr['samples_per_cpu_s']:.1f} "
            f"| {tr['model_share']:.0%} | {ev['samples_per_s']:.1f} "
            f"| {ev['samples_per_cpu_s']:.1f} | {ev['model_share']:.0%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 64])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per phase")
    parser.add_argument("--store-steps", type=int, default=34_272)
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--table", action="store_true", help="print the table from the JSON")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return
    store = _metr_la_store(args.store_steps)
    spec = WindowSpec(12, 12)
    plan = make_plan(store.shape[0], spec)
    stats = compute_stats(store, bounds=plan.bounds["train"])
    batcher = SeriesBatcher.from_store(store, stats, spec, time_of_day=True)
    starts = np.random.default_rng(0).permutation(plan.starts["train"])
    results: dict[str, Any] = {
        "store": {"shape": list(store.shape), "edges": int(store.edge_index.shape[1])},
        "steps": args.steps,
        "machine": machine(),
        "torch": torch.__version__,
        "load_average_at_start": os.getloadavg()[0],
        "runs": [],
    }
    grid = [(m, t, b) for m in args.models for t in args.threads for b in args.batch_sizes]
    for name, threads, batch_size in tqdm(grid, desc="train speed", unit="run"):
        torch.set_num_threads(threads)
        row = measure(
            name,
            batcher,
            starts,
            store.edge_index,
            store.edge_weight,
            batch_size,
            args.steps,
        )
        results["runs"].append({"model": name, "threads": threads, "batch_size": batch_size, **row})
        write_report(args.out, results, indent=1)  # after every run: partial results
        tqdm.write(
            f"{name} threads={threads} batch={batch_size}: train "
            f"{row['train']['samples_per_s']:.1f}/s ({row['train']['model_share']:.0%} model), "
            f"eval {row['eval']['samples_per_s']:.1f}/s"
        )
    results["load_average_at_end"] = os.getloadavg()[0]
    write_report(args.out, results, indent=1)
    print(table(results))


if __name__ == "__main__":
    main()
