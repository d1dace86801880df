"""Plots name the run (model, mode, workers), draw distinct curves only, and a resumed run's log
keeps the whole memory history."""

from __future__ import annotations

import json

import numpy as np
import pytest

import stzarr.plot
from stzarr.testing.validators import make_store
from stzarr.training.config import TrainConfig
from stzarr.training.models import MODELS
from stzarr.training.train import train

SMALL = dict(batch_size=16, input_steps=6, horizon=3, max_batches=4, threads=1, progress=False)


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "s.zarr", n_time=600, n_node=4)


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions save, kept open for inspection."""
    saved = {}

    def keep(fig, path):
        saved[str(path).rsplit("-", 1)[-1]] = fig
        return path

    monkeypatch.setattr(stzarr.plot, "_save", keep)
    yield saved
    for fig in saved.values():
        stzarr.plot.plt.close(fig)


def test_titles_name_model_mode_workers_and_curves_are_distinct(store, tmp_path, figures):
    log_path = tmp_path / "log.json"
    train(store, TrainConfig.of(epochs=3, log_path=log_path, **SMALL))
    stzarr.plot.plot_log(log_path)
    expected = f"{MODELS[0]}, single, 1 worker(s)"
    for name in ("memory.png", "curves.png"):
        assert figures[name].axes[0].get_title().startswith(expected)
    lines = figures["curves.png"].axes[0].get_lines()
    curves = [tuple(np.asarray(line.get_ydata(), dtype=float)) for line in lines]
    assert len(curves) == len(set(curves)) == 2  # training loss, validation MAE
    log = json.loads(log_path.read_text())
    assert {
        tuple(r["loss"] for r in log["epochs"]),
        tuple(r["val"]["mae"] for r in log["epochs"]),
    } == set(curves)


def test_resumed_log_keeps_the_whole_memory_trace(store, tmp_path, figures):
    log_path, ck = tmp_path / "log.json", tmp_path / "ck"
    options = dict(log_path=log_path, checkpoint_dir=ck, memory_interval=0.02, **SMALL)
    train(store, TrainConfig.of(epochs=1, **options))
    first = json.loads(log_path.read_text())["memory_trace"]["ranks"][0]["trace"]
    train(store, TrainConfig.of(epochs=2, resume=True, **options))
    log = json.loads(log_path.read_text())
    trace = log["memory_trace"]["ranks"][0]["trace"]
    assert trace[: len(first)] == first  # the first run's samples are kept
    times = [t for t, _ in trace]
    assert len(trace) > len(first) and times == sorted(times)
    ends = [r["end_s"] for r in log["epochs"]]
    assert ends[0] <= first[-1][0] < ends[1] <= times[-1]  # markers on the same clock
    assert log["peak_rss_bytes"][0] == max(b for _, b in trace)
