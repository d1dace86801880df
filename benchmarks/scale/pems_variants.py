"""The PeMS-scale benchmarks' shared parts: the generated data, the variants each measured in a
fresh process (:func:`benchmarks.harness.measure`), raw disk reads and batch rates.

Data: the generated PeMS-scale store (``benchmarks/generated/pems-scale.zarr``: 105,120
five-minute steps x 11,160 sensors, feature ``speed`` float32, time-of-day computed at batch
time) and its HDF5 source; needs ``benchmarks/generated/READY``. Windows: input_steps = horizon
= 12, batch 64, 70/10/20 split, time-of-day appended to ``x``. A variant takes its options as one
dict of JSON data (``store``, ``batches``, ``budget``, ``stats`` and the variant's own).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from benchmarks.harness import measure
from stzarr.monitor import drop_page_cache

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "benchmarks" / "generated"
GB = 10**9
MiB = 2**20
INPUT_STEPS = HORIZON = 12
BATCH = 64
SEED = 0
DEFAULTS = {"stats": None, "compressor": "zstd", "world_size": 1, "rank": 0, "disk_first": 0}


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options every PeMS-scale suite takes: the data, the batches timed, the budget."""
    parser.add_argument("--store", type=Path, default=DATA / "pems-scale.zarr")
    parser.add_argument("--h5", type=Path, default=DATA / "pems-scale.h5")
    parser.add_argument(
        "--batches",
        type=int,
        default=200,
        help="batches timed per variant (streaming: the full epoch)",
    )
    parser.add_argument("--budget", type=int, default=2 * GB, help="streaming process budget")
    parser.add_argument(
        "--disk-bytes", type=int, default=3 * GB, help="bytes read raw to measure the disk"
    )
    parser.add_argument("--no-ready-check", dest="require_ready", action="store_false")


def run_options(args: argparse.Namespace) -> dict:
    """The options :func:`run_variant` passes to every variant of a run (a fresh statistics
    file per run: the ``stats`` variant writes it, later variants read it)."""
    stats_file = Path(tempfile.gettempdir()) / f"stzarr-pems-scale-stats-{os.getpid()}.json"
    return {
        "store": args.store,
        "batches": args.batches,
        "budget": args.budget,
        "stats_file": stats_file,
    }


def require_ready() -> None:
    """Stop unless the generated PeMS-scale data is complete (``benchmarks/generated/READY``)."""
    if not (DATA / "READY").exists():
        raise SystemExit(f"{DATA / 'READY'} is missing: the PeMS-scale data is not ready")


def data_files(store_path: Path) -> list[Path]:
    """The ``data`` array's chunk (or shard) files, in time order."""
    root = store_path / "data" / "c"
    files = [p for p in root.rglob("*") if p.is_file()]
    return sorted(files, key=lambda p: tuple(int(x) for x in p.relative_to(root).parts))


def raw_read(paths: list[Path], limit: int | None = None, block: int = 16 * MiB) -> dict:
    """Read files sequentially with large reads; bytes/s."""
    drop_page_cache(paths)
    buf = bytearray(block)
    view = memoryview(buf)
    total = 0
    t0 = time.perf_counter()
    for path in paths:
        with open(path, "rb", buffering=0) as fh:
            while limit is None or total < limit:
                n = fh.readinto(view)
                if not n:
                    break
                total += n
        if limit is not None and total >= limit:
            break
    elapsed = time.perf_counter() - t0
    return {"bytes": total, "seconds": elapsed, "bytes_per_s": total / elapsed}


def cpu_seconds() -> float:
    """CPU time (user + system, every thread) of this process so far."""
    t = psutil.Process().cpu_times()
    return t.user + t.system


def range_files(store, lo: int, hi: int) -> list[Path]:
    """The ``data`` files (shards, or chunks) holding time steps ``[lo, hi)``."""
    outer = store.shard_time or store.chunk_time
    return data_files(Path(store.path))[lo // outer : -(-hi // outer)]


def start_cold(opts: dict, store, lo: int, hi: int) -> dict | None:
    """Drop the guest page cache of the store's files; with ``--disk-first`` (the I/O suite)
    first read the files of ``[lo, hi)`` raw, so that the variant that follows and this raw
    read see the same (host) cache state: the disk figure its ratio divides by."""
    same = raw_read(range_files(store, lo, hi)) if opts["disk_first"] else None
    drop_page_cache(data_files(Path(opts["store"])))
    return same


def _setup(opts: dict):
    from stzarr import WindowSpec, make_plan, open_store
    from stzarr.store.stats import Stats

    store = open_store(opts["store"])
    spec = WindowSpec(INPUT_STEPS, HORIZON)
    plan = make_plan(store.shape[0], spec)
    stats = Stats.from_dict(json.loads(Path(opts["stats"]).read_text())) if opts["stats"] else None
    return store, spec, plan, stats


def _rate(batches, n: int) -> dict:
    """Batches/s over ``n`` batches (every batch is touched so nothing stays lazy), per second
    of wall time and per second of this process's CPU time (the machine is shared)."""
    t0, c0 = time.perf_counter(), time.process_time()
    first = None
    done = 0
    check = 0.0
    for x, y, *_ in batches:
        check += float(x[0, 0, 0, 0]) + float(y[-1, -1, -1, 0])
        done += 1
        if first is None:
            first = time.perf_counter() - t0
        if done == n:
            break
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "batches_per_s": done / elapsed,
        "batches_per_cpu_s": done / cpu,
        "cpu_seconds": cpu,
        "batches": done,
        "seconds": elapsed,
        "first_batch_seconds": first,
    }


def variant_read(opts: dict) -> dict:
    """One plain read of the train split through zarr, 256 MiB at a time (nothing kept)."""
    store, _, plan, _ = _setup(opts)
    lo, hi = plan.bounds["train"]
    step_bytes = store.shape[1] * store.shape[2] * 4
    step = store.chunk_time * max(1, (256 * MiB) // (store.chunk_time * step_bytes))
    same = start_cold(opts, store, lo, hi)
    c0, t0 = cpu_seconds(), time.perf_counter()
    for start in range(lo, hi, step):
        store.read(start, min(hi, start + step))
    return {
        "disk_same_files": same,
        "train_steps": hi - lo,
        "train_bytes": (hi - lo) * step_bytes,
        "read_seconds": time.perf_counter() - t0,
        "cpu_seconds": cpu_seconds() - c0,
    }


def variant_stats(opts: dict) -> dict:
    """The lazy train-split statistics pass (not cached: the store is left as it is)."""
    from stzarr.store.stats import compute_stats

    store, _, plan, _ = _setup(opts)
    same = start_cold(opts, store, *plan.bounds["train"])
    c0, t0 = cpu_seconds(), time.perf_counter()
    stats = compute_stats(store, bounds=plan.bounds["train"])
    seconds = time.perf_counter() - t0
    cpu = cpu_seconds() - c0
    Path(opts["stats_out"]).write_text(json.dumps(stats.to_dict()))
    return {
        "disk_same_files": same,
        "stats_seconds": seconds,
        "cpu_seconds": cpu,
        "mean": stats.mean.tolist(),
        "std": stats.std.tolist(),
    }


def variant_in_memory(opts: dict) -> dict:
    from stzarr import IndexBatchDataset, SeriesBatcher, batch_loader

    store, spec, plan, stats = _setup(opts)
    drop_page_cache(data_files(Path(opts["store"])))
    t0 = time.perf_counter()
    batcher = SeriesBatcher.from_store(store, stats, spec, device="cpu", time_of_day=True)
    pre = time.perf_counter() - t0
    loader = batch_loader(
        IndexBatchDataset(batcher, plan.starts["train"]), BATCH, shuffle=True, seed=SEED
    )
    return {
        "preprocess_seconds": pre,
        **_rate(iter(loader), opts["batches"]),
        "resident_series_bytes": batcher.nbytes,
        "device": "cpu",
    }


def variant_device(opts: dict) -> dict:
    import torch

    from stzarr.data.loaders import SeriesBatcher, default_device

    store, spec, plan, stats = _setup(opts)
    device = default_device()
    drop_page_cache(data_files(Path(opts["store"])))
    t0 = time.perf_counter()
    batcher = SeriesBatcher.from_store(store, stats, spec, device=device, time_of_day=True)
    starts = torch.from_numpy(plan.starts["train"]).to(device)
    pre = time.perf_counter() - t0
    gen = torch.Generator(device=device).manual_seed(SEED)
    order = torch.randperm(starts.numel(), generator=gen, device=device)
    batches = (batcher.batch(starts[order[i : i + BATCH]]) for i in range(0, order.numel(), BATCH))
    return {
        "preprocess_seconds": pre,
        **_rate(batches, opts["batches"]),
        "resident_series_bytes": batcher.nbytes,
        "device": str(device),
    }


def variant_partitioned(opts: dict) -> dict:
    import torch

    from stzarr.data.rank import open_rank_data
    from stzarr.plan.rank import plan_rank

    store, _, plan, stats = _setup(opts)
    rank_plan = plan_rank(
        plan,
        store,
        mode="partitioned",
        rank=opts["rank"],
        world_size=opts["world_size"],
        batch_size=BATCH,
        seed=SEED,
    )
    same = start_cold(opts, store, *rank_plan.partitions.partitions[opts["rank"]].time_range)
    c0, t0 = cpu_seconds(), time.perf_counter()
    data = open_rank_data(
        store, rank_plan, stats, device=torch.device("cpu"), options={"time_of_day": True}
    )
    pre = time.perf_counter() - t0
    load_cpu = cpu_seconds() - c0
    batcher, sampler = data.series, data.train.sampler
    sampler.set_epoch(0)
    rate = _rate((batcher.batch(s) for s in sampler), opts["batches"])
    p = rank_plan.partitions.partitions[opts["rank"]]
    return {
        "disk_same_files": same,
        "preprocess_seconds": pre,
        "load_cpu_seconds": load_cpu,
        **rate,
        "resident_series_bytes": batcher.nbytes,
        "time_range": list(p.time_range),
        "windows": p.count,
    }


def variant_streaming(opts: dict) -> dict:
    from stzarr.data.streaming import StreamingLoader
    from stzarr.monitor import current_rss, loader_budget

    store, spec, plan, stats = _setup(opts)
    rss0 = current_rss()
    t0 = time.perf_counter()
    loader = StreamingLoader(
        store,
        stats,
        spec,
        plan.starts["train"],
        batch_size=BATCH,
        max_memory=loader_budget(opts["budget"]),
        device="cpu",
        time_of_day=True,
        seed=SEED,
    )
    pre = time.perf_counter() - t0
    same = start_cold(opts, store, *plan.bounds["train"])
    c0 = cpu_seconds()
    rate = _rate(iter(loader), len(loader))
    epoch_cpu = cpu_seconds() - c0
    epoch_s = rate["seconds"]
    c = loader.counters
    return {
        "disk_same_files": same,
        "preprocess_seconds": pre,
        **rate,
        "epoch_seconds": epoch_s,
        "epoch_cpu_seconds": epoch_cpu,
        "rss_before_loader": rss0,
        "loader_budget": loader.plan.max_memory,
        "plan": loader.plan.to_dict(),
        "counters": c.to_dict(),
        "read_bytes_per_s": c.bytes_read / c.read_seconds,
        "epoch_read_bytes_per_s": c.bytes_read / epoch_s,
    }


def variant_rechunk(opts: dict) -> dict:
    """Copy the store to one with the same layout and another codec (``stzarr rechunk``)."""
    from stzarr.store.rechunk import rechunk_store

    store, *_ = _setup(opts)
    c0, t0 = cpu_seconds(), time.perf_counter()
    out = rechunk_store(
        store,
        opts["dst"],
        chunk_time=store.chunk_time,
        shard_time=store.shard_time,
        compressor=opts["compressor"],
        overwrite=True,
        progress=False,
    )
    seconds = time.perf_counter() - t0
    cpu = cpu_seconds() - c0
    on_disk = sum(p.stat().st_size for p in data_files(Path(out.path)))
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "bytes_on_disk": on_disk,
        "bytes_per_s": store.shape[0] * store.shape[1] * store.shape[2] * 4 / seconds,
    }


def variant_concurrency(opts: dict) -> dict:
    import zarr

    store, _, plan, _ = _setup(opts)
    files = data_files(Path(opts["store"]))
    lo = plan.bounds["train"][0]
    steps = max(store.chunk_time, (opts["sweep_bytes"] // (store.shape[1] * store.shape[2] * 4)))
    steps = min(steps, plan.bounds["train"][1] - lo)
    out = {}
    for conc in (1, 2, 4, 10, 32):
        with zarr.config.set({"async.concurrency": conc}):
            drop_page_cache(files)
            t0 = time.perf_counter()
            # one zarr call over many chunks (where async.concurrency applies; Store.read
            # decodes one file per call)
            block = np.asarray(store.array[lo : lo + steps])
            elapsed = time.perf_counter() - t0
        out[str(conc)] = {"seconds": elapsed, "bytes_per_s": block.nbytes / elapsed}
        del block
    return {"bytes": steps * store.shape[1] * store.shape[2] * 4, "by_concurrency": out}


def variant_disk(opts: dict) -> dict:
    files = data_files(Path(opts["store"]))
    out = {"store_files": raw_read(files, limit=opts["disk_bytes"])}
    if opts["h5"] and Path(opts["h5"]).exists():
        out["hdf5"] = raw_read([Path(opts["h5"])], limit=opts["disk_bytes"])
    return out


VARIANTS = {
    "rechunk": variant_rechunk,
    "read": variant_read,
    "stats": variant_stats,
    "in_memory": variant_in_memory,
    "device": variant_device,
    "partitioned": variant_partitioned,
    "streaming": variant_streaming,
    "concurrency": variant_concurrency,
    "disk": variant_disk,
}


LOADING = ("in_memory", "device", "partitioned_w2", "partitioned_w4", "streaming")


def run_here(name: str, opts: dict) -> dict:
    """A variant's body in the measuring child, with the codec pipeline it read through."""
    from stzarr.store.io_config import active_pipeline

    result = VARIANTS[name](opts)
    result["codec_pipeline"] = active_pipeline().pipeline
    return result


def projected_materialised(n_time: int, n_node: int) -> dict:
    """Size of the standard pipeline's x and y (float64, speed + time-of-day), by formula."""
    n_windows = n_time - (INPUT_STEPS + HORIZON) + 1
    n_feature = 2
    x_bytes = n_windows * INPUT_STEPS * n_node * n_feature * 8
    y_bytes = n_windows * HORIZON * n_node * n_feature * 8
    return {
        "formula": "windows x (input_steps + horizon) x nodes x 2 features x 8 bytes",
        "windows": n_windows,
        "bytes": x_bytes + y_bytes,
        "ran": False,
    }


def run_variant(
    name: str, base: dict, need: int, *, pipeline: str | None = None, **extra: Any
) -> dict:
    """Run a variant in a fresh process if ``need`` bytes (plus a 2 GB margin) are available;
    ``base`` holds the run's options (``store``, ``batches``, ``budget``, ``stats_file``),
    ``extra`` the variant's own, ``pipeline`` its codec pipeline (``STZARR_CODEC_PIPELINE``;
    default: this process's)."""
    avail = psutil.virtual_memory().available
    if need + 2 * GB > avail:
        print(
            f"  {name}: skipped, needs ~{need / GB:.1f} GB + 2 GB margin, "
            f"{avail / GB:.1f} GB available",
            flush=True,
        )
        return {"skipped": True, "need_bytes": need, "available_bytes": avail}
    opts = {**DEFAULTS, **{k: v for k, v in base.items() if k != "stats_file"}, **extra}
    if Path(base["stats_file"]).exists():
        opts["stats"] = str(base["stats_file"])
    opts = {k: str(v) if isinstance(v, Path) else v for k, v in opts.items()}
    env = {"PYTHONWARNINGS": "ignore"}
    if pipeline is not None:
        env["STZARR_CODEC_PIPELINE"] = pipeline
    print(
        f"  {name} {extra or ''} {pipeline or ''} (available {avail / GB:.1f} GB) ...", flush=True
    )
    run = measure(run_here, name, opts, env=env)
    result = {
        **run.result,
        "wall_seconds": run.seconds,
        "peak_rss_sampled": run.sampled_peak_rss_bytes,
        "peak_rss": run.peak_rss_bytes,
        "available_before": avail,
    }
    print(f"    -> {_short(result)}", flush=True)
    return result


def _short(r: dict) -> str:
    keys = ("preprocess_seconds", "batches_per_s", "peak_rss", "stats_seconds", "read_seconds")
    return ", ".join(f"{k}={r[k]:.3g}" for k in keys if k in r)


def host() -> dict:
    """The machine, its memory and the load now."""
    from benchmarks.harness import machine

    return {**machine(), "ram_bytes": psutil.virtual_memory().total}
