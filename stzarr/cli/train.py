"""``stzarr train``: train a PGT forecaster on a store (one process or DDP on Dask)."""

from __future__ import annotations

import argparse
import json

from stzarr.models import MODELS
from stzarr.train import MODES, train


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    parser = subparsers.add_parser(
        "train",
        help="train DCRNN / A3T-GCN with index-batching (single, device or DDP)",
        description="Train a forecaster on a store with index-batching. Modes: single (CPU), "
        "device (CUDA when present), full (DDP, every worker holds the series, global shuffle), "
        "partitioned (DDP, every worker reads only its chunk-aligned time range, batch-order "
        "shuffle). DDP ranks run on an embedded Dask LocalCluster, or on an existing cluster "
        "(--scheduler-file / --scheduler-address). Loss: masked MAE on de-standardised values. "
        "Prints masked MAE/RMSE/MAPE on validation every epoch and on test at the end.",
    )
    parser.add_argument("store", metavar="STORE", help="stzarr store (path or URL)")
    parser.add_argument(
        "--model",
        choices=MODELS,
        default="dcrnn",
        help="dcrnn (default): the DCRNN paper's encoder-decoder; pgt-batched-dcrnn: PGT's "
        "BatchedDCRNN as PGT-I runs it (output step h after h inputs); a3tgcn: PGT's A3TGCN2",
    )
    parser.add_argument("--mode", choices=MODES, default="single", help="execution mode")
    parser.add_argument(
        "--workers", type=_positive_int, default=1, help="DDP ranks (full, partitioned)"
    )
    parser.add_argument("--epochs", type=_positive_int, default=1, help="epochs (default 1)")
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=64,
        help="samples per batch per worker (default 64)",
    )
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (0.01)")
    parser.add_argument("--input-steps", type=_positive_int, default=12, help="T_in (12)")
    parser.add_argument("--horizon", type=_positive_int, default=12, help="T_out (12)")
    parser.add_argument("--hidden", type=_positive_int, help="hidden units (model default)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--scheduler-file", metavar="F", help="existing Dask cluster's file")
    parser.add_argument("--scheduler-address", metavar="A", help="existing Dask scheduler")
    parser.add_argument("--checkpoint", metavar="DIR", help="write DIR/last.pt every epoch")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument(
        "--lr-scaling",
        action="store_true",
        help="scale lr linearly with the number of workers, with warm-up",
    )
    parser.add_argument(
        "--warmup-epochs",
        type=float,
        default=1.0,
        help="warm-up length with --lr-scaling (default 1 epoch)",
    )
    parser.add_argument("--max-batches", type=_positive_int, help="training batches per epoch")
    parser.add_argument(
        "--eval-batches",
        type=_positive_int,
        help="evaluation batches per worker and split (default: all)",
    )
    parser.add_argument("--threads", type=_positive_int, help="torch threads per worker")
    parser.add_argument("--log", metavar="LOG.json", help="JSON log, rewritten every epoch")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    parser.set_defaults(func=run)


def _line(name: str, m: dict) -> str:
    parts = [f"{name:5s} MAE {m['mae']:.4f}  RMSE {m['rmse']:.4f}  MAPE {m['mape']:.2f}%"]
    for h, hm in m.get("horizons", {}).items():
        parts.append(f"@{h}: {hm['mae']:.3f}/{hm['rmse']:.3f}/{hm['mape']:.1f}%")
    return "  ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Execute ``stzarr train``."""
    result = train(
        args.store,
        model=args.model,
        mode=args.mode,
        workers=args.workers,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        input_steps=args.input_steps,
        horizon=args.horizon,
        seed=args.seed,
        checkpoint_dir=args.checkpoint,
        resume=args.resume,
        scheduler_file=args.scheduler_file,
        scheduler_address=args.scheduler_address,
        lr_scaling=args.lr_scaling,
        warmup_epochs=args.warmup_epochs,
        max_batches=args.max_batches,
        eval_batches=args.eval_batches,
        threads=args.threads,
        log_path=args.log,
        progress=not args.no_progress,
        model_options={} if args.hidden is None else {"hidden": args.hidden},
    )
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
