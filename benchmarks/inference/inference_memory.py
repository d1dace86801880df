"""Peak memory and time of ``stzarr evaluate`` and ``stzarr predict`` with and without
``--max-memory``, on a synthetic store whose selected series is tens of MB.

Each command runs in a fresh process (:func:`benchmarks.harness.measure`: peak RSS is the
kernel's ``VmHWM``, imports included; wall time from the call); the settings
alternate over ``--rounds`` rounds, so both sides meet the same machine load. The results
(with ``os.getloadavg()`` before and after) go to ``docs/results/inference_memory.json``.

    flock /tmp/stzarr-bench.lock python -m benchmarks.inference.inference_memory [--steps 16000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
from pathlib import Path

from benchmarks.harness import machine, measure, write_report

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "benchmarks" / "generated" / "inference"


def _prepare(
    data: Path, steps: int, nodes: int, features: int, chunk_time: int
) -> tuple[Path, Path]:
    from stzarr.testing.validators import make_store
    from stzarr.training.config import TrainConfig
    from stzarr.training.train import train

    store, ckpt = data / "store.zarr", data / "ckpt"
    if not store.exists():
        data.mkdir(parents=True, exist_ok=True)
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


def cli(argv: list[str]) -> str:
    """``stzarr ARGV`` in this process (the measuring child); what it printed."""
    from stzarr.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    if code:
        raise SystemExit(f"stzarr {' '.join(argv)} exited {code}")
    return out.getvalue()


def _run(argv: list[str]) -> dict:
    """Run ``stzarr ARGV`` in a fresh process; its wall seconds, peak RSS and output."""
    run = measure(cli, argv)
    peak_mib = run.peak_rss_bytes / 2**20
    return {"wall_s": round(run.seconds, 2), "peak_rss_mib": round(peak_mib, 1), "out": run.result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16_000)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--chunk-time", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--budget", default="32MB")
    parser.add_argument("--data", type=Path, default=DATA, help="generated store and checkpoint")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/inference_memory.json")
    args = parser.parse_args()
    store, ckpt = _prepare(args.data, args.steps, args.nodes, args.features, args.chunk_time)
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
            out = args.data / "forecasts.zarr"
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
        "machine": machine(),
        "summary": summary,
        "runs": runs,
    }
    write_report(args.out, result, indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
