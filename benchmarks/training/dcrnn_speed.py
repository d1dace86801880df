"""Training-step speed and memory of ``dcrnn`` against a plain torch DCRNN in the released code's
style (``dcrnn_reference.py``), at METR-LA shape: 207 nodes (the real METR-LA graph when
``../shared/data/adj_mx.pkl`` exists), 64 units, 2 layers, K = 2, 12 -> 12 steps, 2 input
features, 1 output. Goal: >= 1.5x the reference's samples/s at <= 1.0x its peak memory.

Speed: one child process builds both models and alternates their Adam steps on the same random
batch (one warm-up step each, then ``--steps * --rounds`` timed steps each, the order swapped
every step), so both see the same load; the speed-up is the ratio of median step times.
Memory: one fresh process per model (:func:`benchmarks.harness.measure`; peak RSS is per
process), the peak above the built model (CPU: the kernel's peak RSS, ``VmHWM``; CUDA:
``max_memory_allocated``). Before timing, both models are given the same weights
(``export_dcrnn_pytorch``) and their forecasts compared.

    python -m benchmarks.training.dcrnn_speed                # CPU, one thread
    python -m benchmarks.training.dcrnn_speed --device cuda --quick --out /tmp/dcrnn_cuda.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from benchmarks.harness import high_water_rss, measure, write_report
from benchmarks.training.dcrnn_reference import ReferenceDCRNN
from stzarr.training.models import build_model, export_dcrnn_pytorch

ROOT = Path(__file__).resolve().parents[2]
GRAPH = ROOT.parent / "shared" / "data" / "adj_mx.pkl"
RESULT = ROOT / "docs" / "results" / "dcrnn_speed.json"
SHAPE = {"units": 64, "layers": 2, "steps": 2, "input_dim": 2, "output_dim": 1, "t": 12}


def adjacency(n: int) -> tuple[np.ndarray, str]:
    """The METR-LA adjacency (or, without it, a random sparse weighted directed graph)."""
    if n == 207 and GRAPH.is_file():
        from stzarr.converters.adjacency import load_adjacency

        return np.asarray(load_adjacency(GRAPH)[1], dtype=np.float64), "METR-LA adj_mx.pkl"
    rng = np.random.default_rng(0)
    a = np.zeros((n, n))
    for i in range(n):
        j = rng.choice(n, 8, replace=False)
        a[i, j] = rng.uniform(0.1, 1.0, 8)
    np.fill_diagonal(a, 1.0)
    return a, f"random, 9 edges per node, {n} nodes"


def make(
    kind: str, adj: np.ndarray, device: torch.device, recompute: bool = False
) -> torch.nn.Module:
    """``ours`` (stzarr's dcrnn, optionally with ``recompute``) or ``reference``, seeded."""
    torch.manual_seed(0)
    s = SHAPE
    if kind == "reference":
        return ReferenceDCRNN(
            adj,
            units=s["units"],
            layers=s["layers"],
            steps=s["steps"],
            input_dim=s["input_dim"],
            output_dim=s["output_dim"],
            horizon=s["t"],
            device=device,
        ).to(device)
    rows, cols = np.nonzero(adj)
    return build_model(
        "dcrnn",
        adj.shape[0],
        s["input_dim"],
        s["output_dim"],
        s["t"],
        s["t"],
        torch.from_numpy(np.stack([rows, cols])),
        torch.from_numpy(adj[rows, cols]),
        hidden=s["units"],
        layers=s["layers"],
        diffusion_steps=s["steps"],
        recompute=recompute,
    ).to(device)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _data(args: argparse.Namespace, n: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, SHAPE["t"], n, SHAPE["input_dim"], generator=gen).to(device)
    y = torch.randn(args.batch, SHAPE["t"], n, SHAPE["output_dim"], generator=gen).to(device)
    return x, y


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, x, y, device) -> float:
    """One Adam step on the MAE; its seconds."""
    t0 = time.perf_counter()
    loss = (model(x) - y).abs().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def child(args: SimpleNamespace) -> dict[str, Any]:
    """One model, one process: seconds per step and peak memory above the built model."""
    device = torch.device(args.device)
    adj, _ = adjacency(args.nodes)
    model = make(args.child, adj, device, args.recompute)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = _data(args, adj.shape[0], device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    base_rss = rss()
    times = [_step(model, opt, x, y, device) for _ in range(args.steps + 1)][1:]  # 1 warm-up
    peak_rss = high_water_rss()
    out = {
        "kind": args.child,
        "recompute": args.recompute,
        "batch": args.batch,
        "nodes": adj.shape[0],
        "seconds_per_step": statistics.median(times),
        "samples_per_s": args.batch / statistics.median(times),
        "peak_rss_bytes": peak_rss,
        "peak_above_model_bytes": peak_rss - base_rss,
    }
    if device.type == "cuda":
        out["peak_above_model_bytes"] = torch.cuda.max_memory_allocated() - base
    return out


def pair(args: SimpleNamespace) -> dict[str, Any]:
    """Both models in one process, steps alternated (the speed ratio under the same load)."""
    device = torch.device(args.device)
    adj, _ = adjacency(args.nodes)
    models = {kind: make(kind, adj, device) for kind in ("ours", "reference")}
    opts = {k: torch.optim.Adam(m.parameters(), lr=0.01) for k, m in models.items()}
    x, y = _data(args, adj.shape[0], device)
    times: dict[str, list[float]] = {k: [] for k in models}
    for k in range(args.steps + 1):
        order = list(models) if k % 2 == 0 else list(models)[::-1]
        for kind in order:
            seconds = _step(models[kind], opts[kind], x, y, device)
            if k:
                times[kind].append(seconds)
    return {
        "kind": "pair",
        "batch": args.batch,
        "seconds_per_step": times,
        "speedup_per_pair": [r / o for o, r in zip(times["ours"], times["reference"], strict=True)],
    }


def same_function(adj: np.ndarray, device: torch.device) -> float:
    """Max |difference| of the two models' forecasts with the same weights."""
    ours = make("ours", adj, device).eval()
    ref = make("reference", adj, device).eval()
    ref.load_state_dict(export_dcrnn_pytorch(ours))
    x = torch.randn(2, SHAPE["t"], adj.shape[0], SHAPE["input_dim"], device=device)
    with torch.no_grad():
        return float((ours(x) - ref(x)).abs().max())


def in_child(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """The measuring child's body: ``kind`` ``"pair"`` times both models, else one model."""
    args = SimpleNamespace(child=kind, **options)
    torch.set_num_threads(args.threads)
    return pair(args) if kind == "pair" else child(args)


def run_child(args: Any, kind: str, recompute: bool = False) -> dict[str, Any]:
    """One measurement in a fresh process (``args``: device, batch, steps, nodes, threads)."""
    keys = ("device", "batch", "steps", "nodes", "threads")
    options = {key: getattr(args, key) for key in keys} | {"recompute": recompute}
    return measure(in_child, kind, options).result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="timed steps = steps * rounds")
    parser.add_argument("--nodes", type=int, default=207)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--quick", action="store_true", help="batch 8, 1 step, 1 round")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.batch, args.steps, args.rounds = 8, 1, 1
    device = torch.device(args.device)
    adj, graph = adjacency(args.nodes)
    load_before = os.getloadavg()
    diff = same_function(adj, device)
    runs = [run_child(args, kind) for kind in ("ours", "reference")]  # memory
    for run in runs:
        print(json.dumps(run), flush=True)
    timing = run_child(SimpleNamespace(**{**vars(args), "steps": args.steps * args.rounds}), "pair")
    print(json.dumps(timing), flush=True)
    seconds = {k: statistics.median(v) for k, v in timing["seconds_per_step"].items()}
    speed = seconds["reference"] / seconds["ours"]
    memory = runs[0]["peak_above_model_bytes"] / runs[1]["peak_above_model_bytes"]
    result = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": args.threads,
        "graph": graph,
        "edges": int(np.count_nonzero(adj)),
        "shape": {**SHAPE, "nodes": adj.shape[0], "batch": args.batch},
        "steps_per_measurement": args.steps,
        "rounds": args.rounds,
        "max_abs_forecast_difference": diff,
        "memory_runs": runs,
        "timing_run": timing,
        "samples_per_s": {k: args.batch / v for k, v in seconds.items()},
        "speedup": speed,
        "memory_ratio": memory,
        "goal": {"speedup_at_least": 1.5, "memory_ratio_at_most": 1.0},
        "met": bool(speed >= 1.5 and memory <= 1.0),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "torch": torch.__version__,
    }
    write_report(args.out, result, indent=1)
    print(f"speed-up {speed:.2f}x, memory {memory:.2f}x, same function to {diff:.1e}")


if __name__ == "__main__":
    main()
