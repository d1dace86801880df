"""SIGTERM or SIGINT at any moment of a writer: either the change is committed and the exit
status is 0, or it is not, nothing is left, and the exit status is 143 (130 for SIGINT).

One child process imports stzarr once and runs the same command many times in process
(``stzarr.cli.main``); the test signals it at evenly spread moments of a run, measured on a
first run that is not signalled, so the signals fall in every phase: reading the sources,
creating the partial, writing blocks, sealing, the swap, printing.
"""

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stzarr import open_store
from stzarr.converters.synth import synth_traffic
from stzarr.store.verify import verify_store

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import json, signal, sys, time
    from stzarr.cli import main
    signal.signal(signal.SIGTERM, lambda *a: None)  # a signal after a run: nothing to stop
    signal.signal(signal.SIGINT, lambda *a: None)
    for line in sys.stdin:
        argv = json.loads(line)
        print("GO", flush=True)
        t0 = time.perf_counter()
        code = main(argv)
        print("RESULT", json.dumps([code, time.perf_counter() - t0]), flush=True)
    """
)


class Child:
    """A Python process running CLI commands on request."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )

    def run(self, argv: list[str], signal_after: float | None, signum: int) -> tuple[int, float]:
        """Run ``argv``; signal the child ``signal_after`` seconds after it started."""
        self.proc.stdin.write(json.dumps([str(a) for a in argv]) + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "GO"
        if signal_after is not None:
            time.sleep(signal_after)
            self.proc.send_signal(signum)
        line = ""
        while not line.startswith("RESULT "):  # the command's own output comes first
            line = self.proc.stdout.readline()
            assert line, "the child died"
        code, seconds = json.loads(line.removeprefix("RESULT "))
        return code, seconds

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def child():
    proc = Child()
    yield proc
    proc.close()


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("signals")
    made = synth_traffic(root / "all.h5", nodes=150, steps=24_000, progress=False)
    df = pd.read_hdf(made.path)
    df.iloc[:20_000].to_hdf(root / "first.h5", key="df")
    df.iloc[20_000:].to_hdf(root / "next.h5", key="df")
    return root, df, made.adjacency


def _left(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def _moments(child: Child, argv: list[str], n: int, reset) -> list[float]:
    """``n`` moments evenly spread over a run of ``argv`` (timed once, unsignalled)."""
    reset()
    code, seconds = child.run(argv, None, signal.SIGTERM)
    assert code == 0
    return [seconds * (i + 0.5) / n for i in range(n)]


def _check(code: int, signum: int, committed: bool, root: Path) -> None:
    interrupted = 143 if signum == signal.SIGTERM else 130
    assert code == (0 if committed else interrupted), (code, committed)
    assert _left(root) == []


def test_a_signal_at_any_moment_of_convert(child, sources):
    root, df, adjacency = sources
    dst = root / "s.zarr"
    argv = ["convert", root / "first.h5", dst, "--adjacency", adjacency, "--quiet"]

    def reset():
        if dst.exists():
            shutil.rmtree(dst)

    outcomes = []
    for i, moment in enumerate(_moments(child, argv, 24, reset)):
        reset()
        signum = signal.SIGTERM if i % 3 else signal.SIGINT
        code, _ = child.run(argv, moment, signum)
        committed = dst.exists()
        _check(code, signum, committed, root)
        if committed:
            assert verify_store(dst).ok
            np.testing.assert_array_equal(
                open_store(dst).read(0, 20_000)[:, :, 0], df.iloc[:20_000].to_numpy(np.float32)
            )
        outcomes.append(committed)
    assert not all(outcomes), "no signal fell before the commit"


@pytest.mark.parametrize("command", ["append", "rechunk", "synth"])
def test_a_signal_at_any_moment_of_append_rechunk_and_synth(child, sources, command):
    root, _, _ = sources = sources
    base = root / "base.zarr"
    if not base.exists():
        code, _ = child.run(["convert", root / "first.h5", base, "--quiet"], None, 0)
        assert code == 0
    work = root / "work.zarr"
    out = root / "out"
    if command == "append":
        argv = ["append", work, root / "next.h5", "--quiet"]
    elif command == "rechunk":
        argv = ["rechunk", base, out, "--chunk-time", "500", "--shard-time", "2000"]
    else:
        argv = ["synth", out, "--nodes", "100", "--steps", "20000", "--quiet"]

    def reset():
        for path in (work, out, root / "out_adj_mx.pkl"):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        if command == "append":
            shutil.copytree(base, work)

    for i, moment in enumerate(_moments(child, argv, 8, reset)):
        reset()
        signum = signal.SIGTERM if i % 2 else signal.SIGINT
        code, _ = child.run(argv, moment, signum)
        if command == "append":
            committed = open_store(work).shape[0] == 24_000
            assert verify_store(work).ok
        else:
            committed = out.exists()
        _check(code, signum, committed, root)
