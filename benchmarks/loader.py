"""Loader throughput: stzarr index-batching vs PGT 0.56's IndexDataset vs a plain NumPy gather.

Same data (a generated series in the METR-LA shape, 34,272 x 207, speed + time-of-day), the
training split, batch 64, input_steps = horizon = 12, shuffled, one epoch per variant; the three
variants are interleaved over ``--rounds`` rounds in one process and the median is reported.

* ``stzarr``: :func:`stzarr.make_loaders` (one standardised copy, time-of-day computed at batch
  time, one gather per batch through a stock ``DataLoader`` with a batch sampler);
* ``pgt``: ``torch_geometric_temporal.signal.index_dataset.IndexDataset`` over a standardised
  array with time-of-day stored per node (PGT's METR-LA layout) through a stock
  ``DataLoader(batch_size=64, shuffle=True)`` (one ``__getitem__`` per sample + collate);
* ``stzarr_dense``: a :class:`stzarr.SeriesBatcher` over that same dense array (the loader
  mechanics alone, without computing time-of-day at batch time);
* ``numpy_gather``: the same batches cut from that array with one NumPy fancy-index per tensor
  and ``torch.from_numpy`` (the floor any Python loader can reach, on the 2x-memory layout);
* ``numpy_gather_tod``: the same output as ``stzarr`` from the same memory (series plus a
  ``(t, 1)`` time-of-day table) with the fewest NumPy operations (gather, then interleave).

Goals: stzarr >= 4x PGT and >= 0.9x the plain gather. Writes ``docs/results/loader.json``.

Run: ``nice -n 10 .venv/bin/python benchmarks/loader.py``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from stzarr import (
    IndexBatchDataset,
    SeriesBatcher,
    WindowSpec,
    batch_loader,
    make_loaders,
    open_store,
    time_features,
)
from stzarr.pgt_compat import import_pgt
from stzarr.stats import standardise_
from stzarr.testing import make_store
from stzarr.windows import window_index

IndexDataset = import_pgt("torch_geometric_temporal.signal.index_dataset").IndexDataset

ROOT = Path(__file__).resolve().parents[1]


def bench_store(path: Path, n_time: int, n_node: int):
    """Open the generated benchmark store at ``path``, writing it first if absent."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        make_store(path, n_time=n_time, n_node=n_node, chunk_time=None, missing_fraction=0.08)
    return open_store(path)


def epoch_rate(batches, n_batches: int) -> float:
    """Batches per second of one pass (every batch is touched so nothing stays lazy)."""
    t0 = time.perf_counter()
    n = 0
    checksum = 0.0
    for x, y in batches:
        checksum += float(x[0, 0, 0, 0]) + float(y[-1, -1, -1, 0])
        n += 1
    elapsed = time.perf_counter() - t0
    assert n == n_batches, f"{n} batches, expected {n_batches}"
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=34_272)
    parser.add_argument("--nodes", type=int, default=207)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--horizon", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1)")
    parser.add_argument("--store", type=Path, default=ROOT / "benchmarks/data/loader-metr-la.zarr")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/loader.json")
    args = parser.parse_args()
    # small gathers gain nothing from intra-op threads, and on a shared machine they lose a lot
    torch.set_num_threads(args.threads)

    store = bench_store(args.store, args.steps, args.nodes)
    spec = WindowSpec(args.horizon, args.horizon)
    loaders = make_loaders(
        store,
        spec,
        batch_size=args.batch_size,
        seed=0,
        device="cpu",
        time_of_day=True,
        target_features=["speed"],
    )
    starts = loaders.plan.starts["train"]
    n_batches = len(loaders.train)

    # PGT layout: standardised speed + time-of-day stored on every node, (t, n, 2)
    raw = store.read(0, store.shape[0])
    z = standardise_(raw, loaders.stats, store.missing_value)
    tod = time_features(store.time, time_of_day=True)
    dense = np.concatenate([z, np.broadcast_to(tod[:, None, :], z.shape)], axis=2)
    pgt = DataLoader(
        IndexDataset(starts, dense, args.horizon),
        batch_size=args.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    rng = np.random.default_rng(0)
    # the loader mechanics alone: a SeriesBatcher over the very same dense (t, n, 2) array
    dense_batcher = SeriesBatcher(torch.from_numpy(dense), spec, target_features=[0])
    dense_loader = batch_loader(
        IndexBatchDataset(dense_batcher, starts), args.batch_size, shuffle=True, seed=0
    )

    def numpy_gather():
        order = starts[rng.permutation(starts.size)]
        for i in range(0, order.size, args.batch_size):
            s = order[i : i + args.batch_size]
            x = dense[window_index(s, 0, args.horizon)]
            y = dense[window_index(s + args.horizon, 0, args.horizon).reshape(-1), :, :1]
            y = y.reshape(s.size, args.horizon, *y.shape[1:])
            yield torch.from_numpy(x), torch.from_numpy(y)

    def numpy_gather_tod():
        """The same output as ``stzarr`` from the same memory (series + (t, 1) time-of-day
        table), with the fewest NumPy operations."""
        order = starts[rng.permutation(starts.size)]
        for i in range(0, order.size, args.batch_size):
            s = order[i : i + args.batch_size]
            idx = window_index(s, 0, args.horizon).reshape(-1)
            x = np.empty((idx.size, z.shape[1], 2), dtype=np.float32)
            x[:, :, :1] = z[idx]
            x[:, :, 1:] = tod[idx][:, None, :]
            y = z[window_index(s + args.horizon, 0, args.horizon)]
            yield (
                torch.from_numpy(x.reshape(s.size, args.horizon, *x.shape[1:])),
                torch.from_numpy(y),
            )

    variants = {
        "stzarr": lambda: loaders.train,
        "stzarr_dense": lambda: dense_loader,
        "pgt": lambda: pgt,
        "numpy_gather": numpy_gather,
        "numpy_gather_tod": numpy_gather_tod,
    }
    rates: dict[str, list[float]] = {k: [] for k in variants}
    for _ in tqdm(range(args.rounds), desc="rounds"):
        for name, make in variants.items():
            rates[name].append(epoch_rate(make(), n_batches))
    median = {k: statistics.median(v) for k, v in rates.items()}
    x, y = next(iter(loaders.train))
    result = {
        "benchmark": "loader",
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "shape": list(store.shape),
        "spec": spec.to_dict(),
        "batch_size": args.batch_size,
        "train_batches": n_batches,
        "x_shape": list(x.shape),
        "y_shape": list(y.shape),
        "rounds": args.rounds,
        "batches_per_s": {k: [round(r, 1) for r in v] for k, v in rates.items()},
        "median_batches_per_s": {k: round(v, 1) for k, v in median.items()},
        "speedup_vs_pgt": round(median["stzarr"] / median["pgt"], 2),
        "ratio_vs_numpy_gather": round(median["stzarr"] / median["numpy_gather"], 3),
        "ratio_vs_numpy_gather_tod": round(median["stzarr"] / median["numpy_gather_tod"], 3),
        "dense_speedup_vs_pgt": round(median["stzarr_dense"] / median["pgt"], 2),
        "dense_ratio_vs_numpy_gather": round(median["stzarr_dense"] / median["numpy_gather"], 3),
        "goals": {"speedup_vs_pgt": ">= 4", "ratio_vs_numpy_gather": ">= 0.9"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
