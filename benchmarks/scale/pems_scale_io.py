"""PeMS scale, I/O: each codec pipeline (``zarr``, ``zarrs``) on the generated PeMS-scale store
as it is and on a copy in the default codec (see :mod:`benchmarks.scale.pems_variants`).

Every figure comes with the CPU seconds it took; each variant runs in a fresh process
(:func:`benchmarks.harness.measure`). For every (store codec, pipeline): a plain read of the
train split, the statistics pass, rank 0's partition load of a W = 4 job and a streamed epoch,
each preceded by a raw sequential read of the same files in the same cache state (the disk
figure its ratio divides by). The write: ``stzarr rechunk`` into the default codec, per pipeline.

Writes ``docs/results/pems_scale_io.json``; ``--table`` prints the docs table from it.
Run: ``nice -n 10 .venv/bin/python -m benchmarks.scale.pems_scale_io``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any

from benchmarks.harness import write_report
from benchmarks.scale.pems_variants import (
    DATA,
    GB,
    ROOT,
    add_run_options,
    data_files,
    host,
    require_ready,
    run_options,
    run_variant,
)
from stzarr.store.io_config import pipeline_list


def run(args: argparse.Namespace) -> None:
    """The I/O suite: each codec pipeline on the store as it is and on a copy in the
    default codec, every figure with the CPU seconds it took; ratios from this one run."""
    from stzarr import open_store
    from stzarr.store.format import DEFAULT_COMPRESSOR, compressor_name

    base = run_options(args)
    if args.require_ready:
        require_ready()
    store = open_store(args.store)
    n_time, n_node, n_feature = store.shape
    series_bytes = n_time * n_node * n_feature * 4
    args.copy_dir.mkdir(parents=True, exist_ok=True)
    copy = args.copy_dir / f"{args.store.stem}-{DEFAULT_COMPRESSOR}.zarr"
    res: dict[str, Any] = {
        "benchmark": "pems_scale_io",
        "machine": {
            **host(),
            "note": "ratios are within this run; load averages at the start and end",
            "load_average_start": list(os.getloadavg()),
        },
        "store": {"path": str(args.store), "shape": [n_time, n_node, n_feature]},
        "budget_bytes": args.budget,
        "pipelines": args.pipelines,
        "variants": {},
    }
    v = res["variants"]
    v["disk"] = run_variant("disk", base, 0, h5=args.h5, disk_bytes=args.disk_bytes)
    stores = {compressor_name(store.array): args.store, DEFAULT_COMPRESSOR: copy}
    for i, pipe in enumerate(args.pipelines):
        # the write: a copy in the default codec (the last pipeline's copy is the one read)
        v[f"rechunk@{pipe}"] = run_variant(
            "rechunk", base, 2 * GB, pipeline=pipe, dst=copy, compressor=DEFAULT_COMPRESSOR
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
            base["stats_file"].unlink(missing_ok=True)
            same = {"pipeline": pipe, "store": path, "disk_first": 1}
            v[f"read:{tag}"] = run_variant("read", base, GB, **same)
            v[f"stats:{tag}"] = run_variant("stats", base, GB, stats_out=base["stats_file"], **same)
            v[f"partitioned_w4_r0:{tag}"] = run_variant(
                "partitioned", base, 3 * GB, world_size=4, rank=0, **same
            )
            v[f"streaming:{tag}"] = run_variant("streaming", base, args.budget, **same)
            base["stats_file"].unlink(missing_ok=True)
    res["machine"]["load_average_end"] = list(os.getloadavg())
    res["goals"] = io_goals(res, series_bytes)
    write_report(args.out, res)
    print(json.dumps(res["goals"], indent=2))
    if not args.keep_copies:
        shutil.rmtree(copy, ignore_errors=True)


def io_goals(res: dict, series_bytes: int) -> dict:
    """The I/O goals for every (codec, pipeline), with per-core figures.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_options(parser)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/pems_scale_io.json")
    parser.add_argument("--keep-copies", action="store_true", help="keep the default-codec copy")
    parser.add_argument(
        "--pipelines",
        type=pipeline_list,
        default=["zarr", "zarrs"],
        help="codec pipelines compared (zarr,zarrs)",
    )
    parser.add_argument("--table", action="store_true", help="print the docs table from --out")
    parser.add_argument(
        "--copy-dir",
        type=Path,
        default=DATA / "pems-scale-io",
        help="where the copy of the store in the default codec is written",
    )
    args = parser.parse_args()
    if args.table:
        print(io_table(json.loads(args.out.read_text())))
    else:
        run(args)


if __name__ == "__main__":
    main()
