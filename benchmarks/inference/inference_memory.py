"""Peak memory and time of ``stzarr evaluate`` and ``stzarr predict`` with and without
``--max-memory``, on a synthetic store whose selected series is tens of MB.

Each command runs in its own process (peak RSS from ``/usr/bin/time -f %M``); the settings
alternate over ``--rounds`` rounds, so both sides meet the same machine load. The results
(with ``os.getloadavg()`` before and after) go to ``docs/results/inference_memory.json``.

    flock /tmp/stzarr-bench.lock python benchmarks/inference_memory.py [--steps 16000 --features 32]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "benchmarks" / "generated" / "inference"


def _prepare(steps: int, nodes: int, features: int, chunk_time: int) -> tuple[Path, Path]:
    from stzarr.testing.validators import make_store
    from stzarr.training.config import TrainConfig
    from stzarr.training.train import train

    store, ckpt = DATA / "store.zarr", DATA / "ckpt"
    if not store.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        make_store(store, n_time=steps, n_node=nodes, n_feature=features, chunk_time=chunk_time)
    if not (ckpt / "last.pt").exists():
        config = TrainConfig.of(
            model="pgt-batched-dcrnn",
            model_options={"hidden": 8},
            input_steps=12,
            horizon=3,
            batch_size=64,
            max_batches=2,
            eval_batches=1,
            epochs=1,
            checkpoint_dir=str(ckpt),
            progress=False,
        )
        train(store, config)
    return store, ckpt


def _run(argv: list[str]) -> dict:
    """Run ``stzarr ARGV`` and return its wall seconds and peak RSS."""
    cmd = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "stzarr", *argv]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr[-500:]}")
    peak_kib = int(done.stderr.strip().splitlines()[-1])
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(peak_kib / 1024, 1), "out": done.stdout}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16_000)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--chunk-time", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--budget", default="32MB")
    args = parser.parse_args()
    store, ckpt = _prepare(args.steps, args.nodes, args.features, args.chunk_time)
    load = [os.getloadavg()]
    runs: list[dict] = []
    base = [str(store), "--checkpoint", str(ckpt)]
    for r in range(args.rounds):
        for budget in [None, args.budget] if r % 2 == 0 else [args.budget, None]:
            extra = [] if budget is None else ["--max-memory", budget]
            result = _run(["evaluate", *base, "--split", "train", "--json", *extra])
            metrics = json.loads(result.pop("out"))["model"]
            runs.append({"command": "evaluate", "max_memory": budget, "round": r, **result,
                         "mae": metrics["mae"], "windows_count": metrics["count"]})  # fmt: skip
            out = DATA / "forecasts.zarr"
            shutil.rmtree(out, ignore_errors=True)
            result = _run(["predict", *base, "--split", "test", "--out", str(out), *extra])
            result.pop("out")
            runs.append({"command": "predict", "max_memory": budget, "round": r, **result})
            print(runs[-2], runs[-1], flush=True)
    load.append(os.getloadavg())
    series_mib = args.steps * 0.7 * args.nodes * args.features * 4 / 2**20
    summary = {}
    for command in ("evaluate", "predict"):
        for budget in (None, args.budget):
            picked = [x for x in runs if x["command"] == command and x["max_memory"] == budget]
            summary[f"{command} {budget or 'unlimited'}"] = {
                "peak_rss_mib_median": statistics.median(x["peak_rss_mib"] for x in picked),
                "wall_s_median": statistics.median(x["wall_s"] for x in picked),
            }
    result = {
        "what": "peak RSS and wall time of evaluate (train split) and predict (test split), "
        "with and without --max-memory, alternating",
        "store": {
            "steps": args.steps,
            "nodes": args.nodes,
            "features": args.features,
            "chunk_time": args.chunk_time,
            "train_series_mib": series_mib,
        },
        "model": "pgt-batched-dcrnn hidden 8, input 12, horizon 3",
        "loadavg_before_after": load,
        "summary": summary,
        "runs": runs,
    }
    path = ROOT / "docs" / "results" / "inference_memory.json"
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
