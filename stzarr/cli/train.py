"""``stzarr train``: train a forecaster on a store (one process or DDP on Dask)."""

from __future__ import annotations

import argparse
import json

from stzarr.cli.options import add_train_args, options, train_config
from stzarr.training.config import TrainConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    parser = subparsers.add_parser(
        "train",
        help="train a forecaster with index-batching (single, device or DDP)",
        description="Train a forecaster on a store with index-batching. Modes: single (CPU), "
        "device (CUDA; refused without it unless --device auto), full (DDP, every worker "
        "holds the series, global shuffle), "
        "partitioned (DDP, every worker reads only its chunk-aligned time range, batch-order "
        "shuffle). DDP ranks run on an embedded Dask LocalCluster, or on an existing cluster "
        "(--scheduler-file / --scheduler-address). Loss: masked MAE on de-standardised values. "
        "Prints masked MAE/RMSE/MAPE on validation every epoch and on test at the end. "
        "Options may come from a file (--config run.toml; flags given override it); --resume "
        "continues the run in --checkpoint with its configuration and only the options given "
        "changed.",
    )
    parser.add_argument("store", metavar="STORE", help="stzarr store (path or URL)")
    add_train_args(parser)
    parser.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    parser.set_defaults(func=run)


def _line(name: str, m: dict) -> str:
    parts = [f"{name:5s} MAE {m['mae']:.4f}  RMSE {m['rmse']:.4f}  MAPE {m['mape']:.2f}%"]
    for h, hm in m.get("horizons", {}).items():
        parts.append(f"@{h}: {hm['mae']:.3f}/{hm['rmse']:.3f}/{hm['mape']:.1f}%")
    return "  ".join(parts)


def _config(args: argparse.Namespace) -> TrainConfig:
    """The run's configuration; under ``--resume``, the checkpoint's with the options given."""
    given = options(args)
    if not given.get("resume") or given.get("checkpoint_dir") is None:
        return train_config(args)
    from stzarr.training.checkpoint import load_checkpoint

    return TrainConfig.resumed(load_checkpoint(given["checkpoint_dir"]).config, given)


def run(args: argparse.Namespace) -> int:
    """Execute ``stzarr train``."""
    from stzarr.training.train import train  # torch and Dask distributed: only when training

    result = train(args.store, _config(args))
    if args.json:
        print(
            json.dumps(
                {
                    "val": result.val,
                    "test": result.test,
                    "epochs": len(result.history),
                    "wall_s": result.wall_s,
                }
            )
        )
        return 0
    log = result.log
    print(_line("val", result.val))
    print(_line("test", result.test))
    peak = max(log["peak_rss_bytes"]) / 2**20
    device = [b for r in result.history for b in r["peak_device_bytes"] if b is not None]
    print(
        f"preprocessing {log['preprocess']['seconds'] + log['preprocess']['stats_s']:.1f}s, "
        f"training {sum(r['train_s'] + r['eval_s'] for r in result.history):.1f}s, "
        f"peak host RSS {peak:.0f} MiB per worker"
        + (f", peak device memory {max(device) / 2**20:.0f} MiB" if device else "")
    )
    return 0
