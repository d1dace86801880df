"""PeMS scale on one small machine: the paper's single-node story, regenerated on this machine.

Data: the generated PeMS-scale store (``benchmarks/generated/pems-scale.zarr``: 105,120 five-minute
steps x 11,160 sensors, feature ``speed`` float32, time-of-day computed at batch time) and its
HDF5 source; needs ``benchmarks/generated/READY``. Windows: input_steps = horizon = 12, batch 64,
70/10/20 split, time-of-day appended to ``x``. Every variant runs in its own subprocess, one at a
time (never two big ones at once), after checking that the memory it needs is available:

* ``materialised``: the standard pipeline (float64 windows of x and y, speed + time-of-day);
  its size is projected from the formula and it is **not run** (it would exceed memory);
* ``stats``: the lazy train-split statistics pass (xarray + dask), against one plain read of the
  train split through zarr in the same cache state (goal: peak RSS <= 1 GB, time <= 1.5x);
* ``in_memory``: index-batching, whole series standardised once, batches through a stock
  ``DataLoader`` (:func:`stzarr.batch_loader`);
* ``device``: GPU-index-batching's code path (series on ``default_device()``, batches gathered
  there from device index tensors); the CPU here;
* ``partitioned_w2``/``partitioned_w4``: generalized-distributed-index-batching, each rank
  loading only its own chunk-aligned partition plus halo; ranks run one after another, each in
  its own subprocess (what one rank of a W-rank job holds);
* ``streaming``: :class:`stzarr.StreamingLoader` over the whole train split with a 2 GB process
  budget (the loader gets 2 GB minus the RSS the process has before loading), one full epoch.

Each reports preprocessing time (open + read + standardise; statistics come from the ``stats``
run), batches/s over ``--batches`` shuffled batches (streaming: the full epoch), and peak RSS
(the kernel's high-water mark ``ru_maxrss`` and a 20 Hz psutil sampler). The disk's sequential
read bandwidth is measured in the same run by reading the HDF5 file and the store's chunk files
raw after ``posix_fadvise(DONTNEED)`` (every measured read starts cold-ish: the guest page cache
is dropped for those files; a host-side cache may remain). Zarr's ``async.concurrency`` is swept
on a cold read of part of the train split.

Writes ``docs/results/pems_scale.json`` and ``docs/pems_scale.png``.
Run: ``nice -n 10 .venv/bin/python benchmarks/pems_scale.py``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from stzarr.monitor import drop_page_cache
from stzarr.store.io_config import pipeline_list

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "generated"
GB = 10**9
MiB = 2**20
INPUT_STEPS = HORIZON = 12
BATCH = 64
SEED = 0


# -- helpers shared by parent and children --


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


def peak_rss_now() -> int:
    """Kernel high-water mark of this process's RSS (bytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- variants (each runs in a fresh subprocess) --


def range_files(store, lo: int, hi: int) -> list[Path]:
    """The ``data`` files (shards, or chunks) holding time steps ``[lo, hi)``."""
    outer = store.shard_time or store.chunk_time
    return data_files(Path(store.path))[lo // outer : -(-hi // outer)]


def start_cold(args: argparse.Namespace, store, lo: int, hi: int) -> dict | None:
    """Drop the guest page cache of the store's files; with ``--disk-first`` (the I/O suite)
    first read the files of ``[lo, hi)`` raw, so that the variant that follows and this raw
    read see the same (host) cache state: the disk figure its ratio divides by."""
    same = raw_read(range_files(store, lo, hi)) if args.disk_first else None
    drop_page_cache(data_files(Path(args.store)))
    return same


def _setup(args: argparse.Namespace):
    from stzarr import WindowSpec, make_plan, open_store
    from stzarr.store.stats import Stats

    store = open_store(args.store)
    spec = WindowSpec(INPUT_STEPS, HORIZON)
    plan = make_plan(store.shape[0], spec)
    stats = Stats.from_dict(json.loads(Path(args.stats).read_text())) if args.stats else None
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


def variant_read(args: argparse.Namespace) -> dict:
    """One plain read of the train split through zarr, 256 MiB at a time (nothing kept)."""
    store, _, plan, _ = _setup(args)
    lo, hi = plan.bounds["train"]
    step_bytes = store.shape[1] * store.shape[2] * 4
    step = store.chunk_time * max(1, (256 * MiB) // (store.chunk_time * step_bytes))
    same = start_cold(args, store, lo, hi)
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


def variant_stats(args: argparse.Namespace) -> dict:
    """The lazy train-split statistics pass (not cached: the store is left as it is)."""
    from stzarr.store.stats import compute_stats

    store, _, plan, _ = _setup(args)
    same = start_cold(args, store, *plan.bounds["train"])
    c0, t0 = cpu_seconds(), time.perf_counter()
    stats = compute_stats(store, bounds=plan.bounds["train"])
    seconds = time.perf_counter() - t0
    cpu = cpu_seconds() - c0
    Path(args.stats_out).write_text(json.dumps(stats.to_dict()))
    return {
        "disk_same_files": same,
        "stats_seconds": seconds,
        "cpu_seconds": cpu,
        "mean": stats.mean.tolist(),
        "std": stats.std.tolist(),
    }


def variant_in_memory(args: argparse.Namespace) -> dict:
    from stzarr import IndexBatchDataset, SeriesBatcher, batch_loader

    store, spec, plan, stats = _setup(args)
    drop_page_cache(data_files(Path(args.store)))
    t0 = time.perf_counter()
    batcher = SeriesBatcher.from_store(store, stats, spec, device="cpu", time_of_day=True)
    pre = time.perf_counter() - t0
    loader = batch_loader(
        IndexBatchDataset(batcher, plan.starts["train"], with_mask=False),
        BATCH,
        shuffle=True,
        seed=SEED,
    )
    return {
        "preprocess_seconds": pre,
        **_rate(iter(loader), args.batches),
        "resident_series_bytes": batcher.nbytes,
        "device": "cpu",
    }


def variant_device(args: argparse.Namespace) -> dict:
    import torch

    from stzarr.data.batcher import SeriesBatcher, default_device

    store, spec, plan, stats = _setup(args)
    device = default_device()
    drop_page_cache(data_files(Path(args.store)))
    t0 = time.perf_counter()
    batcher = SeriesBatcher.from_store(store, stats, spec, device=device, time_of_day=True)
    starts = torch.from_numpy(plan.starts["train"]).to(device)
    pre = time.perf_counter() - t0
    gen = torch.Generator(device=device).manual_seed(SEED)
    order = torch.randperm(starts.numel(), generator=gen, device=device)
    batches = (batcher.batch(starts[order[i : i + BATCH]]) for i in range(0, order.numel(), BATCH))
    return {
        "preprocess_seconds": pre,
        **_rate(batches, args.batches),
        "resident_series_bytes": batcher.nbytes,
        "device": str(device),
    }


def variant_partitioned(args: argparse.Namespace) -> dict:
    import torch

    from stzarr.data.contract import BatchContract
    from stzarr.data.rank import open_rank_data
    from stzarr.plan.rank import plan_rank

    store, _, plan, stats = _setup(args)
    rank_plan = plan_rank(
        plan,
        store,
        mode="partitioned",
        rank=args.rank,
        world_size=args.world_size,
        batch_size=BATCH,
        seed=SEED,
    )
    same = start_cold(args, store, *rank_plan.partitions.partitions[args.rank].time_range)
    c0, t0 = cpu_seconds(), time.perf_counter()
    contract = BatchContract(time_of_day=True, fill_missing=False)
    data = open_rank_data(store, rank_plan, stats, device=torch.device("cpu"), contract=contract)
    pre = time.perf_counter() - t0
    load_cpu = cpu_seconds() - c0
    batcher, sampler = data.series, data.train.sampler
    sampler.set_epoch(0)
    rate = _rate((batcher.batch(s) for s in sampler), args.batches)
    p = rank_plan.partitions.partitions[args.rank]
    return {
        "disk_same_files": same,
        "preprocess_seconds": pre,
        "load_cpu_seconds": load_cpu,
        **rate,
        "resident_series_bytes": batcher.nbytes,
        "time_range": list(p.time_range),
        "windows": p.count,
    }


def variant_streaming(args: argparse.Namespace) -> dict:
    from stzarr.data.contract import BatchContract
    from stzarr.data.streaming import StreamingLoader
    from stzarr.monitor import current_rss, loader_budget

    store, spec, plan, stats = _setup(args)
    rss0 = current_rss()
    t0 = time.perf_counter()
    loader = StreamingLoader.from_starts(
        store,
        stats,
        spec,
        plan.starts["train"],
        batch_size=BATCH,
        max_memory=loader_budget(args.budget),
        device="cpu",
        contract=BatchContract(time_of_day=True, fill_missing=False),
        with_mask=False,
        seed=SEED,
    )
    pre = time.perf_counter() - t0
    same = start_cold(args, store, *plan.bounds["train"])
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


def variant_rechunk(args: argparse.Namespace) -> dict:
    """Copy the store to one with the same layout and another codec (``stzarr rechunk``)."""
    from stzarr.store.rechunk import rechunk_store

    store, *_ = _setup(args)
    c0, t0 = cpu_seconds(), time.perf_counter()
    out = rechunk_store(
        store,
        args.dst,
        chunk_time=store.chunk_time,
        shard_time=store.shard_time,
        compressor=args.compressor,
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


def variant_concurrency(args: argparse.Namespace) -> dict:
    import zarr

    store, _, plan, _ = _setup(args)
    files = data_files(Path(args.store))
    lo = plan.bounds["train"][0]
    steps = max(store.chunk_time, (args.sweep_bytes // (store.shape[1] * store.shape[2] * 4)))
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


def variant_disk(args: argparse.Namespace) -> dict:
    files = data_files(Path(args.store))
    out = {"store_files": raw_read(files, limit=args.disk_bytes)}
    if args.h5 and Path(args.h5).exists():
        out["hdf5"] = raw_read([Path(args.h5)], limit=args.disk_bytes)
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


def child(args: argparse.Namespace) -> None:
    """Run one variant in this process and print its JSON (with peak RSS) on the last line."""
    from stzarr.monitor import MemorySampler
    from stzarr.store.io_config import active_pipeline

    t0 = time.perf_counter()
    with MemorySampler(interval=0.05) as sampler:
        result = VARIANTS[args.variant](args)
    result.update(
        codec_pipeline=active_pipeline().pipeline,
        wall_seconds=time.perf_counter() - t0,
        peak_rss_sampled=sampler.peak_bytes,
        peak_rss=peak_rss_now(),
    )
    print(json.dumps(result))


# -- orchestration --


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


def run_child(
    name: str, args: argparse.Namespace, need: int, *, pipeline: str | None = None, **extra: Any
) -> dict:
    """Run a variant in a subprocess if ``need`` bytes (plus a 2 GB margin) are available;
    ``pipeline`` sets its codec pipeline (``STZARR_CODEC_PIPELINE``; default: this process's)."""
    avail = psutil.virtual_memory().available
    if need + 2 * GB > avail:
        print(
            f"  {name}: skipped, needs ~{need / GB:.1f} GB + 2 GB margin, "
            f"{avail / GB:.1f} GB available",
            flush=True,
        )
        return {"skipped": True, "need_bytes": need, "available_bytes": avail}
    cmd = [
        sys.executable,
        "-W",
        "ignore",
        __file__,
        "--variant",
        name,
        "--store",
        str(args.store),
        "--batches",
        str(args.batches),
        "--budget",
        str(args.budget),
    ]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    if args.stats_file.exists():
        cmd += ["--stats", str(args.stats_file)]
    env = dict(os.environ)
    if pipeline is not None:
        env["STZARR_CODEC_PIPELINE"] = pipeline
    print(
        f"  {name} {extra or ''} {pipeline or ''} (available {avail / GB:.1f} GB) ...", flush=True
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["available_before"] = avail
    print(f"    -> {_short(result)}", flush=True)
    return result


def _short(r: dict) -> str:
    keys = ("preprocess_seconds", "batches_per_s", "peak_rss", "stats_seconds", "read_seconds")
    return ", ".join(f"{k}={r[k]:.3g}" for k in keys if k in r)


def parent(args: argparse.Namespace) -> None:
    from stzarr import WindowSpec, make_plan, open_store
    from stzarr.store.rechunk import advise_store, layout_summary

    unknown = set(args.only or ()) - set(LOADING)
    if unknown:
        raise SystemExit(f"--only: unknown variants {sorted(unknown)} (choose from {LOADING})")

    if args.require_ready and not (DATA / "READY").exists():
        raise SystemExit(f"{DATA / 'READY'} is missing: the PeMS-scale data is not ready")
    store = open_store(args.store)
    n_time, n_node, n_feature = store.shape
    series_bytes = n_time * n_node * n_feature * 4
    files = data_files(Path(args.store))
    on_disk = sum(p.stat().st_size for p in files)
    print(
        f"store {args.store}: {store.shape}, {series_bytes / GB:.2f} GB float32, "
        f"{on_disk / GB:.2f} GB on disk in {len(files)} files",
        flush=True,
    )
    res: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "ram_bytes": psutil.virtual_memory().total,
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "store": {
            "path": str(args.store),
            "shape": [n_time, n_node, n_feature],
            "bytes": series_bytes,
            "bytes_on_disk": on_disk,
            "compression_ratio": on_disk / series_bytes,
            "layout": layout_summary(store),
            "advice": advise_store(store, world_size=4, max_memory=args.budget).to_dict(),
        },
        "hdf5": {
            "path": str(args.h5),
            "bytes": Path(args.h5).stat().st_size if args.h5 and Path(args.h5).exists() else None,
        },
        "spec": {
            "input_steps": INPUT_STEPS,
            "horizon": HORIZON,
            "batch_size": BATCH,
            "time_of_day": True,
            "batches_measured": args.batches,
        },
        "budget_bytes": args.budget,
        "variants": {},
    }
    v = res["variants"]
    v["materialised"] = projected_materialised(n_time, n_node)
    print(
        f"  materialised: projected {v['materialised']['bytes'] / GB:.0f} GB "
        f"(machine: {res['machine']['ram_bytes'] / GB:.0f} GB): not run",
        flush=True,
    )
    full = args.only is None

    def want(name: str) -> bool:
        return full or name in args.only

    if full:
        v["disk"] = run_child("disk", args, 0, h5=args.h5, disk_bytes=args.disk_bytes)
    args.stats_file.unlink(missing_ok=True)
    if full:
        v["read"] = run_child("read", args, GB)
    v["stats"] = run_child("stats", args, GB, stats_out=args.stats_file)
    train_lo, train_hi = make_plan(n_time, WindowSpec(INPUT_STEPS, HORIZON)).bounds["train"]
    train_bytes = (train_hi - train_lo) * n_node * n_feature * 4
    if full:
        v["stats"]["stats_over_read"] = v["stats"]["stats_seconds"] / v["read"]["read_seconds"]
        v["concurrency"] = run_child(
            "concurrency", args, args.sweep_bytes + GB, sweep_bytes=args.sweep_bytes
        )
    for name in ("in_memory", "device"):
        if want(name):
            v[name] = run_child(name, args, series_bytes + 2 * GB)
    for w in (2, 4):
        if not want(f"partitioned_w{w}"):
            continue
        ranks = [
            run_child("partitioned", args, train_bytes // w + 2 * GB, world_size=w, rank=r)
            for r in range(w)
        ]
        v[f"partitioned_w{w}"] = {
            "ranks": ranks,
            "ran": "ranks one after another, each in its own subprocess",
        }
    if want("streaming"):
        v["streaming"] = run_child("streaming", args, args.budget)
    if not full:  # a subset of the loading variants: no goals, no plot
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2))
        args.stats_file.unlink(missing_ok=True)
        return
    for codec in args.codecs:
        copy = args.store.with_name(f"{args.store.stem}-{codec}.zarr")
        v[f"rechunk_{codec}"] = run_child("rechunk", args, 2 * GB, dst=copy, compressor=codec)
        v[f"rechunk_{codec}"]["compression_ratio"] = (
            v[f"rechunk_{codec}"]["bytes_on_disk"] / series_bytes
        )
        v[f"streaming_{codec}"] = run_child("streaming", args, args.budget, store=copy)
        if not args.keep_copies:
            shutil.rmtree(copy)
    res["goals"] = goals(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res["goals"], indent=2))
    plot(res, args.plot)
    args.stats_file.unlink(missing_ok=True)


def parent_io(args: argparse.Namespace) -> None:
    """The I/O suite (issue 13): each codec pipeline on the store as it is and on a copy in the
    default codec, every figure with the CPU seconds it took; ratios from this one run."""
    from stzarr import open_store
    from stzarr.store.format import DEFAULT_COMPRESSOR, compressor_name

    if args.require_ready and not (DATA / "READY").exists():
        raise SystemExit(f"{DATA / 'READY'} is missing: the PeMS-scale data is not ready")
    store = open_store(args.store)
    n_time, n_node, n_feature = store.shape
    series_bytes = n_time * n_node * n_feature * 4
    args.copy_dir.mkdir(parents=True, exist_ok=True)
    copy = args.copy_dir / f"{args.store.stem}-{DEFAULT_COMPRESSOR}.zarr"
    res: dict[str, Any] = {
        "benchmark": "pems_scale --io",
        "machine": {
            "cpus": os.cpu_count(),
            "ram_bytes": psutil.virtual_memory().total,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "note": "ratios are within this run; load averages at the start and end",
            "load_average_start": list(os.getloadavg()),
        },
        "store": {"path": str(args.store), "shape": [n_time, n_node, n_feature]},
        "budget_bytes": args.budget,
        "pipelines": args.pipelines,
        "variants": {},
    }
    v = res["variants"]
    v["disk"] = run_child("disk", args, 0, h5=args.h5, disk_bytes=args.disk_bytes)
    stores = {compressor_name(store.array): args.store, DEFAULT_COMPRESSOR: copy}
    for i, pipe in enumerate(args.pipelines):
        # the write: a copy in the default codec (the last pipeline's copy is the one read)
        v[f"rechunk@{pipe}"] = run_child(
            "rechunk", args, 2 * GB, pipeline=pipe, dst=copy, compressor=DEFAULT_COMPRESSOR
        )
        v[f"rechunk@{pipe}"]["bytes"] = series_bytes
        if i == 0:
            files = data_files(copy)
            res["copy"] = {
                "path": str(copy),
                "compressor": DEFAULT_COMPRESSOR,
                "bytes_on_disk": sum(f.stat().st_size for f in files),
            }
    res["store"]["codecs"] = {}
    for codec, path in stores.items():
        on_disk = sum(f.stat().st_size for f in data_files(path))
        res["store"]["codecs"][codec] = {"bytes_on_disk": on_disk, "ratio": on_disk / series_bytes}
        for pipe in args.pipelines:
            tag = f"{codec}@{pipe}"
            args.stats_file.unlink(missing_ok=True)
            same = {"pipeline": pipe, "store": path, "disk_first": 1}
            v[f"read:{tag}"] = run_child("read", args, GB, **same)
            v[f"stats:{tag}"] = run_child("stats", args, GB, stats_out=args.stats_file, **same)
            v[f"partitioned_w4_r0:{tag}"] = run_child(
                "partitioned", args, 3 * GB, world_size=4, rank=0, **same
            )
            v[f"streaming:{tag}"] = run_child("streaming", args, args.budget, **same)
            args.stats_file.unlink(missing_ok=True)
    res["machine"]["load_average_end"] = list(os.getloadavg())
    res["goals"] = io_goals(res, series_bytes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res["goals"], indent=2))
    if not args.keep_copies:
        shutil.rmtree(copy, ignore_errors=True)


def io_goals(res: dict, series_bytes: int) -> dict:
    """Issue 13's goals for every (codec, pipeline), with per-core figures.

    Each "/ disk" ratio divides by a raw sequential read of the same files made just before the
    variant, in the same cache state (``disk_same_files``); ``*_over_first_read`` divide by
    the run's first raw read of the HDF5 file instead (the device itself when nothing cached
    it)."""
    v = res["variants"]
    first = v["disk"].get("hdf5", v["disk"]["store_files"])["bytes_per_s"]
    out: dict[str, Any] = {"disk_first_read_bytes_per_s": first, "by_store": {}}
    for codec, info in res["store"]["codecs"].items():
        ratio = info["ratio"]
        for pipe in res["pipelines"]:
            tag = f"{codec}@{pipe}"
            r, st, s = v[f"read:{tag}"], v[f"stats:{tag}"], v[f"streaming:{tag}"]
            p = v[f"partitioned_w4_r0:{tag}"]
            part_bytes = (
                (p["time_range"][1] - p["time_range"][0])
                * series_bytes
                / (res["store"]["shape"][0])
            )
            rates = {
                "streaming_read": (s, s["read_bytes_per_s"] * ratio),
                "plain_read": (r, r["train_bytes"] / r["read_seconds"] * ratio),
                "partitioned_load": (p, part_bytes / p["preprocess_seconds"] * ratio),
            }
            g: dict[str, Any] = {}
            for name, (variant, rate) in rates.items():
                disk = variant["disk_same_files"]["bytes_per_s"]
                g[f"{name}_fraction_of_disk"] = {"value": rate / disk, "disk_bytes_per_s": disk}
                g[f"{name}_over_first_read"] = {"value": rate / first}
            g["streaming_read_fraction_of_disk"]["target_min"] = 0.5
            g |= {
                "stats_time_over_one_read": {
                    "value": st["stats_seconds"] / r["read_seconds"],
                    "target_max": 1.2,
                },
                "per_core": {
                    "plain_read_decoded_gbps_per_cpu_second": r["train_bytes"]
                    / r["cpu_seconds"]
                    / GB,
                    "stats_decoded_gbps_per_cpu_second": r["train_bytes"] / st["cpu_seconds"] / GB,
                    "partitioned_load_decoded_gbps_per_cpu_second": part_bytes
                    / p["load_cpu_seconds"]
                    / GB,
                    "streaming_epoch_cpu_seconds": s["epoch_cpu_seconds"],
                    "streaming_epoch_seconds": s["epoch_seconds"],
                },
            }
            for goal in g.values():
                if "target_min" in goal:
                    goal["met"] = goal["value"] >= goal["target_min"]
                elif "target_max" in goal:
                    goal["met"] = goal["value"] <= goal["target_max"]
            out["by_store"][tag] = g
    for pipe in res["pipelines"]:
        w = v[f"rechunk@{pipe}"]
        out[f"rechunk_write@{pipe}"] = {
            "decoded_gbps": w["bytes"] / w["seconds"] / GB,
            "decoded_gbps_per_cpu_second": w["bytes"] / w["cpu_seconds"] / GB,
        }
    return out


def io_table(res: dict) -> str:
    """The docs table of the I/O suite: one row per (store codec, pipeline)."""
    g = res["goals"]
    lines = [
        "| store codec @ pipeline | disk, same files (GB/s) | streaming read / disk (>= 0.5) "
        "| plain read / disk | partition load / disk | stats / read (<= 1.2) | read GB per CPU-s "
        "| stats GB per CPU-s | partition load GB per CPU-s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for tag, r in g["by_store"].items():
        pc = r["per_core"]
        stream = r["streaming_read_fraction_of_disk"]
        lines.append(
            f"| {tag} | {stream['disk_bytes_per_s'] / GB:.2f} | {stream['value']:.2f} | "
            f"{r['plain_read_fraction_of_disk']['value']:.2f} | "
            f"{r['partitioned_load_fraction_of_disk']['value']:.2f} | "
            f"{r['stats_time_over_one_read']['value']:.2f} | "
            f"{pc['plain_read_decoded_gbps_per_cpu_second']:.2f} | "
            f"{pc['stats_decoded_gbps_per_cpu_second']:.2f} | "
            f"{pc['partitioned_load_decoded_gbps_per_cpu_second']:.2f} |"
        )
    return "\n".join(lines)


def goals(res: dict) -> dict:
    """Every goal of the issue, measured value against target."""
    v = res["variants"]
    s, st = v["streaming"], v["stats"]
    disk = v["disk"].get("hdf5", v["disk"]["store_files"])["bytes_per_s"]
    ratio = res["store"]["compression_ratio"]
    how = (
        "on-disk bytes of the blocks (uncompressed bytes x the store's compression ratio) per "
        "second of background read time (read + decompress + standardise), over the disk's "
        "raw sequential read rate (HDF5 file, cold-ish)"
    )
    out = {
        "streaming_peak_rss": {"value": s["peak_rss"], "target_max": res["budget_bytes"]},
        "disk_sequential_bytes_per_s": disk,
        "streaming_read_fraction_of_disk": {
            "value": s["read_bytes_per_s"] * ratio / disk,
            "target_min": 0.5,
            "how": how,
        },
        "plain_zarr_read_fraction_of_disk": {
            "value": v["read"]["train_bytes"] / v["read"]["read_seconds"] * ratio / disk,
            "how": "one plain zarr read of the train split, nothing else running: the ceiling",
        },
        "streaming_epoch_fraction_of_disk": {
            "value": s["epoch_read_bytes_per_s"] * ratio / disk,
            "how": "same bytes over the whole epoch's wall time (bounded by batch building)",
        },
        "stats_peak_rss": {"value": st["peak_rss"], "target_max": GB},
        "stats_time_over_one_read": {"value": st["stats_over_read"], "target_max": 1.5},
    }
    for name in v:
        if name.startswith("streaming_"):
            codec = name.removeprefix("streaming_")
            sc = v[name]
            out[f"{name}_peak_rss"] = {"value": sc["peak_rss"], "target_max": res["budget_bytes"]}
            out[f"{name}_read_fraction_of_disk"] = {
                "value": sc["read_bytes_per_s"] * v[f"rechunk_{codec}"]["compression_ratio"] / disk,
                "target_min": 0.5,
                "how": how.replace("the store's", f"the {codec} copy's"),
            }
    for goal in out.values():
        if isinstance(goal, dict) and "value" in goal:
            if "target_max" in goal:
                goal["met"] = goal["value"] <= goal["target_max"]
            elif "target_min" in goal:
                goal["met"] = goal["value"] >= goal["target_min"]
    return out


def plot(res: dict, path: Path) -> None:
    """Peak RSS, preprocessing time and batches/s per variant, plus the concurrency sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = res["variants"]
    rows = []
    for name in ["in_memory", "device", "partitioned_w2", "partitioned_w4"] + [
        n for n in v if n.startswith("streaming")
    ]:
        r = v.get(name, {})
        if r.get("skipped"):
            continue
        ranks = r.get("ranks", [r])
        rows.append(
            (
                name.replace("_", "\n"),
                max(x["peak_rss"] for x in ranks) / GB,
                max(
                    x.get("first_batch_seconds", 0)
                    if name.startswith("streaming")
                    else x["preprocess_seconds"]
                    for x in ranks
                ),
                float(np.mean([x["batches_per_s"] for x in ranks])),
            )
        )
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    names = [r[0] for r in rows]
    axes[0].bar(names, [r[1] for r in rows], color="tab:blue")
    axes[0].axhline(res["budget_bytes"] / GB, color="tab:red", ls="--", label="2 GB budget")
    axes[0].axhline(res["machine"]["ram_bytes"] / GB, color="k", ls=":", label="machine RAM")
    axes[0].set_ylabel("peak RSS (GB; partitioned: max over ranks)")
    proj = v["materialised"]["bytes"] / GB
    axes[0].set_title(f"materialised (projected): {proj:.0f} GB, not run", fontsize=9)
    axes[0].legend(fontsize=8)
    axes[1].bar(names, [r[2] for r in rows], color="tab:green")
    axes[1].set_ylabel("preprocessing (s; streaming: to the first batch)")
    axes[2].bar(names, [r[3] for r in rows], color="tab:orange")
    axes[2].set_ylabel(f"batches/s (batch {BATCH}, 12/12, time-of-day)")
    sweep = v["concurrency"]["by_concurrency"]
    conc = sorted(sweep, key=int)
    axes[3].plot([int(c) for c in conc], [sweep[c]["bytes_per_s"] / MiB for c in conc], "o-")
    axes[3].set_xscale("log", base=2)
    axes[3].set_xlabel("zarr async.concurrency")
    axes[3].set_ylabel("cold read of the train split (MiB/s, decoded)")
    for ax in axes[:3]:
        ax.tick_params(axis="x", labelsize=8, rotation=35)
    fig.suptitle(
        f"PeMS scale ({res['store']['shape'][0]:,} x {res['store']['shape'][1]:,}) on "
        f"{res['machine']['cpus']} cores / {res['machine']['ram_bytes'] / GB:.0f} GB"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


# -- issue 10: training under --max-memory on the PeMS-scale store --


def view_store(src: Path, dst: Path) -> Path:
    """A store at ``dst`` that shares ``src``'s chunk files (symlinks) but has its own metadata,
    so training may cache its statistics there without writing to the shared data."""
    if dst.exists():
        return dst
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for meta in src.rglob("zarr.json"):
        target = tmp / meta.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(meta, target)
    for chunks in src.glob("*/c"):
        (tmp / chunks.relative_to(src)).symlink_to(chunks.resolve(), target_is_directory=True)
    tmp.rename(dst)
    return dst


def train_run(args: argparse.Namespace, store: Path, name: str, extra: list[str]) -> dict:
    """One ``stzarr train --mode partitioned --workers 2`` run; its per-rank memory and speed."""
    log = args.work / f"{name}.json"
    cmd = [
        str(Path(sys.executable).with_name("stzarr")),
        "train",
        str(store),
        "--mode",
        "partitioned",
        "--workers",
        "2",
        "--model",
        args.train_model,
        "--hidden",
        "8",
        "--batch-size",
        str(args.train_batch),
        "--epochs",
        "1",
        "--max-batches",
        str(args.train_batches),
        "--eval-batches",
        "1",
        "--threads",
        "1",
        "--log",
        str(log),
        "--no-progress",
        *extra,
    ]
    print(f"  {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    data = json.loads(log.read_text())
    epoch = data["epochs"][0]
    ranks = []
    for r, (rank, trace) in enumerate(
        zip(data["ranks"], data["memory_trace"]["ranks"], strict=True)
    ):
        ranks.append(
            {
                "rank": r,
                "train": rank["train"],
                "blocks_planned": rank.get("blocks_planned"),
                "peak_series_bytes": rank.get("peak_series_bytes"),
                "wait_s": rank.get("wait_s"),
                "baseline_rss_bytes": rank.get("rss_before_data_bytes"),
                "rss_after_data_bytes": rank.get("rss_after_data_bytes"),
                "peak_rss_bytes": trace["peak_rss_bytes"],
                "train_peak_rss_bytes": epoch["peak_rss_bytes"][r],
            }
        )
    return {
        "command": " ".join(["stzarr", *cmd[1:]]),
        "wall_s": time.perf_counter() - t0,
        "train_s": epoch["train_s"],
        "batches": epoch["batches"],
        "batches_per_s": epoch["batches"] / epoch["train_s"],
        "preprocess_s": data["preprocess"]["seconds"],
        "ranks": ranks,
    }


def train_goal(args: argparse.Namespace) -> None:
    """Issue 10, section 5: streamed partitioned training under ``--max-memory`` vs in memory."""
    if args.require_ready and not (DATA / "READY").exists():
        raise SystemExit(f"{DATA / 'READY'} is missing: the PeMS-scale data is not ready")
    args.work.mkdir(parents=True, exist_ok=True)
    store = view_store(args.store, args.work / "pems-scale-view.zarr")
    budget = 10**9
    res: dict[str, Any] = {
        "store": str(args.store),
        "max_memory": budget,
        "model": args.train_model,
        "hidden": 8,
        "batch_size": args.train_batch,
        "batches": args.train_batches,
    }
    res["in_memory"] = train_run(args, store, "in-memory", [])
    res["streamed"] = train_run(args, store, "streamed", ["--max-memory", "1GB"])
    goals = {}
    for r, (mem, streamed) in enumerate(
        zip(res["in_memory"]["ranks"], res["streamed"]["ranks"], strict=True)
    ):
        # the model's working set: what training adds on top of the loaded data (activations,
        # gradients, optimiser state, batches), from the in-memory run
        working = mem["train_peak_rss_bytes"] - mem["rss_after_data_bytes"]
        allowed = budget + streamed["baseline_rss_bytes"] + working
        goals[f"rank{r}_peak_rss"] = {
            "value": streamed["peak_rss_bytes"],
            "target": allowed,
            "parts": {
                "max_memory": budget,
                "baseline_rss": streamed["baseline_rss_bytes"],
                "model_working_set": working,
            },
            "met": streamed["peak_rss_bytes"] <= allowed,
        }
    ratio = res["streamed"]["batches_per_s"] / res["in_memory"]["batches_per_s"]
    goals["batches_per_s_ratio"] = {"value": ratio, "target": 0.8, "met": ratio >= 0.8}
    res["goals"] = goals
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print(json.dumps(goals, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    parser.add_argument(
        "--sweep-bytes", type=int, default=1 * GB, help="bytes read per async.concurrency setting"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON results")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs/pems_scale.png")
    parser.add_argument("--no-ready-check", dest="require_ready", action="store_false")
    parser.add_argument(
        "--codecs",
        type=lambda t: [c for c in t.split(",") if c],
        default=["lz4", "none"],
        help="also stream copies of the store with these codecs (lz4,none)",
    )
    parser.add_argument("--keep-copies", action="store_true", help="keep those copies")
    parser.add_argument("--replot", action="store_true", help="redraw the plot from the JSON")
    parser.add_argument(
        "--io",
        action="store_true",
        help="run the I/O suite instead (codec pipelines x codecs; default --out "
        "docs/results/pems_scale_io.json)",
    )
    parser.add_argument(
        "--pipelines",
        type=pipeline_list,
        default=["zarr", "zarrs"],
        help="codec pipelines compared by --io (zarr,zarrs)",
    )
    parser.add_argument("--table", action="store_true", help="with --io: print the docs table")
    parser.add_argument(
        "--copy-dir",
        type=Path,
        default=DATA / "h13",
        help="where --io writes its copy of the store in the default codec",
    )
    parser.add_argument(
        "--only",
        type=lambda t: [c for c in t.split(",") if c],
        help="run only these loading variants after the statistics (comma-separated from "
        f"{','.join(LOADING)}); writes --out without goals or plot",
    )
    parser.add_argument(
        "--train",
        action="store_true",
        help="only issue 10's training goal: partitioned W=2 in memory vs --max-memory 1GB "
        "(--out defaults to docs/results/pems_scale_train.json)",
    )
    parser.add_argument("--train-model", default="a3tgcn", help="model of --train")
    parser.add_argument("--train-batch", type=int, default=8, help="batch size of --train")
    parser.add_argument("--train-batches", type=int, default=20, help="batches of --train")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "stzarr-pems-train",
        help="scratch folder of --train (logs, a metadata copy of the store)",
    )
    # child-only options
    parser.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--stats", help=argparse.SUPPRESS)
    parser.add_argument("--stats-out", help=argparse.SUPPRESS)
    parser.add_argument("--dst", help=argparse.SUPPRESS)
    parser.add_argument("--compressor", default="zstd", help=argparse.SUPPRESS)
    parser.add_argument("--world-size", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--disk-first", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.stats_file = Path(tempfile.gettempdir()) / f"stzarr-pems-scale-stats-{os.getpid()}.json"
    if args.out is None:
        name = "pems_scale_io" if args.io else "pems_scale_train" if args.train else "pems_scale"
        args.out = ROOT / "docs/results" / f"{name}.json"
    if args.variant:
        child(args)
    elif args.io and args.table:
        print(io_table(json.loads(args.out.read_text())))
    elif args.io:
        parent_io(args)
    elif args.replot:
        plot(json.loads(args.out.read_text()), args.plot)
    elif args.train:
        train_goal(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
