"""LargeST-scale benchmark: convert one generated year (105,120 x 8,600) with its dense graph,
then append a second year, each in a fresh process as the CLI runs them.

Data: ``stzarr synth --layout largest`` writes LargeST's layout under
``benchmarks/generated/largest``
(``ca_his_raw_2019.h5``, ``ca_his_raw_2020.h5``: pandas "fixed" frames, key ``t``, 8,600
sensor-id columns; ``ca_meta.csv``; ``ca_rn_adj.npy``: dense 8,600 x 8,600 float32, 0.3 GB).
Generated once and kept (``--regenerate`` makes them again).

Measured, each step in its own process (peak RSS includes the ~0.4 GB of imports, torch among
them; the kernel's high-water mark ``VmHWM`` and a 20 Hz psutil sampler):

* ``graph``: reading the dense adjacency with its ids (:func:`stzarr.converters.graphs.load_graph`):
  the row-block reader never holds the N x N matrix;
* ``convert``: ``stzarr convert ca_his_raw_2019.h5 DST --graph ca_rn_adj.npy --graph-ids
  ca_meta.csv`` (with the source SHA-256);
* ``append``: ``stzarr append DST ca_his_raw_2020.h5``.

Goal: peak RSS <= 1.5 GB for convert and append. Results: ``docs/results/largest.json``.

Usage::

    nice -n 10 .venv/bin/python benchmarks/largest.py
    nice -n 10 .venv/bin/python benchmarks/largest.py --nodes 500   # a quick small run
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GB = 1e9
GOAL_RSS = 1.5 * GB


def high_water_rss() -> int:
    """This process's peak RSS (``VmHWM``): unlike ``ru_maxrss``, which Linux carries over an
    ``exec`` from the forking parent, it covers this program only."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(args: argparse.Namespace) -> None:
    """Run one step in this (fresh) process and print its measurements as JSON."""
    from stzarr.monitor import MemorySampler, current_rss

    baseline = current_rss()
    step = args.child
    start = time.perf_counter()
    with MemorySampler(interval=0.05) as sampler:
        if step == "graph":
            from stzarr.converters.graphs import load_graph, read_sensor_ids

            ids = read_sensor_ids(args.meta)
            graph = load_graph(args.adjacency, ids_file=args.meta, data_ids=ids)
            extra = {"edges": int(graph.matrix.nnz)}
        else:
            from stzarr.cli import main

            code = main(args.argv)
            if code != 0:
                raise SystemExit(f"{step} failed with exit code {code}")
            extra = {}
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_bytes": high_water_rss(),
                "sampled_peak_rss_bytes": sampler.peak_bytes,
                "import_rss_bytes": baseline,
                **extra,
            }
        )
    )


def run_step(name: str, extra_args: list[str], argv: list[str] | None = None) -> dict:
    """Run ``child`` for ``name`` in a fresh interpreter and return its JSON."""
    command = [sys.executable, __file__, "--child", name, *extra_args]
    if argv is not None:
        command += ["--", *argv]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"{name}: {result['seconds']:.1f} s, peak RSS {result['peak_rss_bytes'] / GB:.2f} GB",
        flush=True,
    )
    return result


def tree_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (hard links counted once)."""
    seen, total = set(), 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.stat(Path(root) / name)
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "benchmarks" / "generated" / "largest")
    parser.add_argument("--nodes", type=int, default=8600)
    parser.add_argument("--years", type=int, nargs=2, default=[2019, 2020])
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "largest.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--adjacency", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--meta", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("argv", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    data = args.data
    data.mkdir(parents=True, exist_ok=True)
    his = [data / f"ca_his_raw_{y}.h5" for y in args.years]
    meta, adjacency = data / "ca_meta.csv", data / "ca_rn_adj.npy"
    synth_seconds = None
    if args.regenerate or not all(p.exists() for p in (*his, meta, adjacency)):
        from stzarr.converters.synth import synth_largest

        start = time.perf_counter()
        synth_largest(data, years=args.years, nodes=args.nodes, dtype=args.dtype, overwrite=True)
        synth_seconds = time.perf_counter() - start
    store = data / "ca.zarr"
    shutil.rmtree(store, ignore_errors=True)

    graph = run_step("graph", ["--adjacency", str(adjacency), "--meta", str(meta)])
    convert = run_step(
        "convert",
        [],
        [
            "convert",
            str(his[0]),
            str(store),
            "--graph",
            str(adjacency),
            "--graph-ids",
            str(meta),
            "--quiet",
        ],
    )
    size_after_convert = tree_bytes(store)
    append = run_step("append", [], ["append", str(store), str(his[1]), "--quiet"])

    from stzarr.store.format import open_store

    opened = open_store(store)
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "note": "2 shared cores, other jobs running; timings are indicative",
        },
        "data": {
            "nodes": args.nodes,
            "years": args.years,
            "steps_per_file": [_rows(p) for p in his],
            "dtype": args.dtype,
            "source_bytes": [p.stat().st_size for p in his],
            "adjacency_bytes": adjacency.stat().st_size,
            "synth_seconds": synth_seconds,
        },
        "graph": graph,
        "convert": {
            **convert,
            "store_bytes": size_after_convert,
            "source_mb_per_s": his[0].stat().st_size / 1e6 / convert["seconds"],
        },
        "append": {
            **append,
            "store_bytes": tree_bytes(store),
            "source_mb_per_s": his[1].stat().st_size / 1e6 / append["seconds"],
        },
        "store": {"shape": list(opened.shape), "sources": len(opened.attrs["sources"])},
        "goal_peak_rss_bytes": GOAL_RSS,
        "met": bool(max(convert["peak_rss_bytes"], append["peak_rss_bytes"]) <= GOAL_RSS),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    shutil.rmtree(store, ignore_errors=True)


def _rows(path: Path) -> int:
    import h5py

    with h5py.File(path, "r") as h5:
        return int(h5["t"]["axis1"].shape[0])


if __name__ == "__main__":
    main()
