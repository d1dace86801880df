"""How long the CLI takes to start: ``stzarr info STORE`` and ``stzarr --version`` against
``python -c "import zarr"`` (the floor of anything that reads a Zarr store), each in a fresh
process, alternated, best and median of ``--repeats``.

Goal: ``stzarr info STORE`` <= 2x the wall time of ``python -c "import zarr"``; reading a store
imports neither torch nor Dask distributed (``tests/integration/test_layers.py`` checks that).
Results: ``docs/results/cli_startup.json``.

Usage::

    python benchmarks/cli/startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.harness import machine, write_report  # noqa: E402

GOAL = 2.0


def wall(command: list[str]) -> float:
    """Seconds one fresh process takes to run ``command`` to the end."""
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "cli_startup.json")
    args = parser.parse_args()
    stzarr = str(Path(sys.executable).with_name("stzarr"))
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "s.zarr"
        subprocess.run(
            [stzarr, "synth", str(Path(tmp) / "s.h5"), "--steps", "2016", "--nodes", "50",
             "--quiet"], check=True)  # fmt: skip
        subprocess.run(
            [stzarr, "convert", str(Path(tmp) / "s.h5"), str(store), "--quiet"], check=True
        )
        commands = {
            "import zarr": [sys.executable, "-c", "import zarr"],
            "stzarr --version": [stzarr, "--version"],
            "stzarr info STORE": [stzarr, "info", str(store)],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for command in commands.values():
            wall(command)  # warm the page cache of the interpreter and packages
        for _ in range(args.repeats):
            for name, command in commands.items():  # alternated: load drifts hit all alike
                times[name].append(wall(command))
    floor = statistics.median(times["import zarr"])
    rows = {
        name: {
            "median_s": statistics.median(t),
            "best_s": min(t),
            "ratio_to_import_zarr": statistics.median(t) / floor,
            "all_s": t,
        }
        for name, t in times.items()
    }
    ratio = rows["stzarr info STORE"]["ratio_to_import_zarr"]
    report = {
        "machine": machine("quiet unless the load average says otherwise"),
        "repeats": args.repeats,
        "commands": rows,
        "goal_ratio": GOAL,
        "met": ratio <= GOAL,
    }
    write_report(args.out, report)
    for name, row in rows.items():
        print(f"{name:20s} median {row['median_s']:.3f} s  {row['ratio_to_import_zarr']:.2f}x")


if __name__ == "__main__":
    main()
