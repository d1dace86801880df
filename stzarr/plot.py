"""Figures from a training log (``stzarr train --log LOG.json``): host memory over time per rank,
and learning curves (training loss and validation masked MAE per epoch), titled with the
model, mode and workers. Matplotlib's Agg
backend, PNG files; nothing is shown on screen.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from stzarr.errors import StzarrError
from stzarr.store.atomic import atomic_file, is_png_file


def _save(fig: plt.Figure, path: str | os.PathLike[str]) -> Path:
    """Save ``fig`` as PNG atomically (replacing only a PNG) and close it."""
    try:
        with atomic_file(path, ours=is_png_file, what="a PNG file") as partial:
            fig.savefig(partial, dpi=120, format="png")
    finally:
        plt.close(fig)
    return Path(path)


def read_log(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a training log, with a one-line error when it is missing or not a log."""
    path = Path(path)
    try:
        log = json.loads(path.read_text())
    except FileNotFoundError:
        raise StzarrError(f"no log at {path}") from None
    except (OSError, ValueError) as exc:
        raise StzarrError(f"cannot read {path} as JSON ({exc.__class__.__name__})") from None
    if not isinstance(log, dict) or "epochs" not in log:
        raise StzarrError(f"{path} is not a stzarr training log (no 'epochs')")
    return log


def run_title(log: dict[str, Any]) -> str:
    """``"MODEL, MODE, W worker(s)"`` of a log's configuration."""
    run = log.get("config", {}).get("run", {})
    workers = log.get("world_size", run.get("workers", "?"))
    return f"{run.get('model', '?')}, {run.get('mode', '?')}, {workers} worker(s)"


def plot_memory(log: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Host RSS of every rank over time (MiB vs seconds since the rank started)."""
    trace = log.get("memory_trace")
    if not trace or not trace.get("ranks"):
        raise StzarrError("the log holds no memory trace")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for rank, entry in enumerate(trace["ranks"]):
        points = entry["trace"]
        ax.plot([t for t, _ in points], [b / 2**20 for _, b in points], label=f"rank {rank}")
    for record in log["epochs"]:
        if "end_s" in record:
            ax.axvline(record["end_s"], color="grey", lw=0.5, ls=":")
    ax.set_xlabel("seconds since start (dotted: end of an epoch)")
    ax.set_ylabel("host RSS (MiB)")
    ax.set_title(f"{run_title(log)}: host memory (sampled every {trace.get('interval_s')} s)")
    if len(trace["ranks"]) > 1:
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def plot_learning_curves(log: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Training loss (the train split's masked MAE) and validation masked MAE per epoch."""
    epochs = log["epochs"]
    if not epochs:
        raise StzarrError("the log holds no completed epoch")
    x = [r["epoch"] for r in epochs]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(x, [r["loss"] for r in epochs], "o-", label="training loss (masked MAE)")
    ax.plot(x, [r["val"]["mae"] for r in epochs], "^-", label="validation MAE")
    ax.set_xlabel("epoch")
    ax.set_ylabel("masked MAE (data units)")
    ax.set_title(f"{run_title(log)}: learning curves")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_log(
    log_path: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Write ``<log>-memory.png`` and ``<log>-curves.png`` next to the log (or in ``out_dir``)."""
    log = read_log(log_path)
    log_path = Path(log_path)
    out = Path(out_dir) if out_dir is not None else log_path.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StzarrError(f"cannot create the output directory {out}: {exc.strerror}") from None
    stem = log_path.stem
    return [
        plot_memory(log, out / f"{stem}-memory.png"),
        plot_learning_curves(log, out / f"{stem}-curves.png"),
    ]
