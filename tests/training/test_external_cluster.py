"""A relative store path works on an existing Dask cluster whose scheduler and workers run in
another working directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stzarr.cli import main
from stzarr.store.format import absolute_location
from stzarr.testing.validators import make_store


def _start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("wb") as out:
        return subprocess.Popen(
            args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def _stop(proc: subprocess.Popen) -> None:
    """End a process this test started, and its children (its own session), within seconds."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture
def elsewhere_cluster(tmp_path):
    """A ``dask scheduler`` and a two-process ``dask worker``, both started in ``elsewhere/``."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    scheduler_file = elsewhere / "scheduler.json"
    dask = str(Path(sys.executable).with_name("dask"))
    procs = [
        _start(
            [
                dask,
                "scheduler",
                "--scheduler-file",
                str(scheduler_file),
                "--port",
                "0",
                "--no-dashboard",
            ],
            elsewhere,
            tmp_path / "scheduler.log",
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert time.monotonic() < deadline, (tmp_path / "scheduler.log").read_text()
            assert procs[0].poll() is None, (tmp_path / "scheduler.log").read_text()
            time.sleep(0.2)
        procs.append(
            _start(
                [
                    dask,
                    "worker",
                    "--scheduler-file",
                    str(scheduler_file),
                    "--nworkers",
                    "2",
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                ],
                elsewhere,
                tmp_path / "worker.log",
            )
        )
        yield scheduler_file
    finally:
        for proc in reversed(procs):
            _stop(proc)


def test_absolute_location_keeps_urls_and_anchors_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_location("bay.zarr") == str(tmp_path / "bay.zarr")
    assert absolute_location("s3://bucket/bay.zarr") == "s3://bucket/bay.zarr"
    assert absolute_location("file:///data/bay.zarr") == "file:///data/bay.zarr"


@pytest.mark.slow
def test_relative_store_path_trains_on_a_cluster_started_elsewhere(
    tmp_path, monkeypatch, capsys, elsewhere_cluster
):
    here = tmp_path / "here"
    here.mkdir()
    make_store(here / "bay.zarr", n_time=300, n_node=3)
    monkeypatch.chdir(here)
    args = ["train", "bay.zarr", "--mode", "partitioned", "--workers", "2"]
    args += ["--input-steps", "6", "--horizon", "3", "--batch-size", "16", "--max-batches", "2"]
    args += ["--scheduler-file", str(elsewhere_cluster), "--log", "log.json"]
    assert main(args) == 0, capsys.readouterr().err
    log = json.loads((here / "log.json").read_text())  # written relative to the caller
    assert log["world_size"] == 2
    assert np.isfinite(log["test"]["mae"])
    assert not (tmp_path / "elsewhere" / "log.json").exists()
