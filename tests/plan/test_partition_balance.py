"""Ranks are balanced within 10 % of their windows; where balancing costs more reads than the
windows it saves, ``plan`` and ``train`` say how many windows each rank leaves out per epoch."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from stzarr.cli import main
from stzarr.plan.windows import WindowSpec, make_plan
from stzarr.testing.validators import make_store


def _plan_json(capsys, path, *flags):
    assert main(["plan", path, "--json", *flags]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def _left_out_words(left_out):
    return "the ranks leave out " + "/".join(map(str, left_out))


def _left_out(counts, batch):
    """Windows beyond the common number of batches (plain arithmetic on the counts)."""
    steps = min(math.ceil(c / batch) for c in counts)
    return [max(0, c - steps * batch) for c in counts]


@pytest.mark.parametrize(
    ("n_time", "chunk_time"),
    [
        (6_000, 1_000),  # 1,000-step chunks: chunk-aligned ranks got 1,000/1,000/1,000/1,177
        (315_649, 20_971),  # LargeST layout: chunk-aligned ranks got 62,913/41,942/62,913/53,163
    ],
)
def test_four_ranks_are_balanced_within_ten_percent(tmp_path, capsys, n_time, chunk_time):
    path = make_store(tmp_path / "s.zarr", n_time=n_time, n_node=2, chunk_time=chunk_time).path
    out, err = _plan_json(capsys, path, "--workers", "4")
    starts = make_plan(n_time, WindowSpec(12, 12)).starts["train"]
    counts = [p["count"] for p in out["partitions"]]
    assert sum(counts) == starts.size
    assert min(counts) >= 0.9 * max(counts), counts
    ranges = [p["index_range"] for p in out["partitions"]]
    assert ranges[0][0] == 0 and ranges[-1][1] == starts.size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    for p in out["partitions"]:  # each rank's first and last start are the split's
        assert p["starts"] == [
            int(starts[p["index_range"][0]]),
            int(starts[p["index_range"][1] - 1]),
        ]
    assert out["balanced_inside_chunks"] is True
    left_out = _left_out(counts, out["batch_size"])
    assert out["skipped_per_epoch"] == left_out
    if any(left_out):
        assert err.startswith(
            f"stzarr plan: warning: with batch size 64 {_left_out_words(left_out)}"
        )
    else:
        assert err == ""


def test_plan_says_what_each_rank_leaves_out_when_balance_costs_more(tmp_path, capsys):
    """588 steps in 100-step chunks, 4 ranks: chunk-aligned 100/100/100/89 windows; starting
    inside chunks would read more than the 8 % of windows it saves."""
    path = make_store(tmp_path / "s.zarr", n_time=588, n_node=2, chunk_time=100).path
    out, err = _plan_json(capsys, path, "--workers", "4", "--batch-size", "16")
    counts = [p["count"] for p in out["partitions"]]
    starts = make_plan(588, WindowSpec(12, 12)).starts["train"]
    assert out["chunk_aligned"] is True
    assert all(
        starts[lo] % 100 < starts[lo - 1] % 100
        for lo, _ in (p["index_range"] for p in out["partitions"][1:])
    )
    left_out = _left_out(counts, 16)
    assert any(left_out)
    assert out["skipped_per_epoch"] == left_out
    assert out["skipped_fraction"] == pytest.approx(sum(left_out) / starts.size)
    assert err.count("\n") == 1 and _left_out_words(left_out) in err
    assert main(["plan", path, "--workers", "4", "--batch-size", "16"]) == 0
    assert "leave out" in capsys.readouterr().err


@pytest.mark.slow
def test_train_reports_the_windows_left_out_in_its_output_and_log(tmp_path, capsys):
    """297 steps in 50-step chunks, 2 ranks: 100/85 windows, batch 16: rank 0 leaves out 4."""
    path = make_store(tmp_path / "s.zarr", n_time=297, n_node=2, chunk_time=50).path
    log = tmp_path / "log.json"
    args = ["train", path, "--mode", "partitioned", "--workers", "2", "--batch-size", "16"]
    assert main([*args, "--max-batches", "1", "--threads", "1", "--log", str(log)]) == 0
    err = capsys.readouterr().err
    out, _ = _plan_json(capsys, path, "--workers", "2", "--batch-size", "16")
    left_out = _left_out([p["count"] for p in out["partitions"]], 16)
    assert any(left_out)
    assert _left_out_words(left_out) in err
    data = json.loads(log.read_text())
    assert data["skipped_per_epoch"] == left_out
    train_windows = make_plan(297, WindowSpec(12, 12)).count("train")
    assert data["skipped_fraction"] == pytest.approx(sum(left_out) / train_windows)
    assert np.isfinite(data["test"]["mae"])
