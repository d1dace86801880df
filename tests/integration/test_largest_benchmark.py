"""The LargeST benchmark checks free disk space before it writes anything."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_largest_refuses_in_one_line_when_the_disk_is_too_small(tmp_path):
    data = tmp_path / "largest"
    free = shutil.disk_usage(tmp_path).free
    nodes = free // (366 * 288 * 8) + 1  # one float64 year of this many sensors does not fit
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "scale" / "largest.py"),
            "--data",
            str(data),
            "--years",
            "2017",
            "--nodes",
            str(nodes),
            "--out",
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and "GB free" in lines[0] and "needed" in lines[0]
    needed = float(lines[0].split(", ")[1].split()[0]) * 1e9
    assert needed >= nodes * 366 * 288 * 8 - 1e8
    assert sorted(p.name for p in tmp_path.iterdir()) == []
