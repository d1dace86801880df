"""A new user's first hour: splits outside the data, missing statistics, accelerators, worker
counts, progress lines and options that do nothing are refused or reported, never silent."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pandas as pd
import pytest
import torch

import stzarr.training.checks
from stzarr.cli import main
from stzarr.data.contract import BatchContract
from stzarr.data.rank import open_rank_data
from stzarr.errors import SpecError, StatsError
from stzarr.plan.rank import plan_rank
from stzarr.plan.windows import WindowSpec, make_plan
from stzarr.store.format import open_store
from stzarr.store.stats import CACHE_ATTR, require_stats
from stzarr.testing.validators import make_store
from stzarr.training.config import TrainConfig
from stzarr.training.train import train

LAUNCH = importlib.import_module("stzarr.training.launch")
SMALL = ["--input-steps", "6", "--horizon", "3", "--batch-size", "16", "--max-batches", "2"]


@pytest.fixture
def store(tmp_path):
    """600 five-minute steps from 2012-03-01 00:00 to 2012-03-03 01:55."""
    return make_store(tmp_path / "s.zarr", n_time=600, n_node=4)


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    for word in words:
        assert word in err, (word, err)
    return err


def _no_launch(*args, **kwargs):
    raise AssertionError("a cluster was started")


@pytest.mark.parametrize("command", ["train", "stats", "plan"])
def test_splits_after_the_data_are_one_line_naming_split_and_range(store, capsys, command):
    args = [command, store.path, "--val-start", "2013-01-01", "--test-start", "2013-02-01"]
    assert main(args + (SMALL if command == "train" else [])) == 2
    first = np.datetime_as_string(store.time[0], unit="s")
    last = np.datetime_as_string(store.time[-1], unit="s")
    _one_line_error(capsys, "val split is empty", "2013-01-01", first, last)
    assert CACHE_ATTR not in open_store(store.path).attrs  # no statistics were computed


@pytest.mark.parametrize(
    ("flags", "split"),
    [
        (["--train", "0.9", "--val", "0.1"], "test"),
        (["--train", "0.9", "--val", "0"], "val"),
        (["--val-start", "2012-03-02", "--test-start", "2012-03-02"], "val"),
        (["--val-start", "2012-02-01", "--test-start", "2012-03-02"], "train"),
        (["--val-start", "2012-03-02", "--test-start", "2013-03-02"], "test"),
    ],
)
def test_every_empty_split_is_refused_before_any_work(store, capsys, flags, split):
    assert main(["stats", store.path, *flags]) == 2
    _one_line_error(capsys, f"{split} split is empty", "the store covers 2012-03-01T00:00:00")
    assert CACHE_ATTR not in open_store(store.path).attrs
    config = TrainConfig.of(val_start="2013-01-01", test_start="2013-02-01")
    with pytest.raises(SpecError, match="val split is empty"):
        train(store, config)


def test_missing_statistics_name_what_is_missing_and_the_command(store):
    plan = make_plan(store.shape[0], WindowSpec(6, 3))
    with pytest.raises(StatsError) as info:
        require_stats(store, bounds=plan.bounds["train"])
    message = str(info.value)
    assert f"[0, {plan.bounds['train'][1]})" in message
    assert f"stzarr stats {store.path}" in message
    assert main(["stats", store.path]) == 0
    store = open_store(store.path)
    assert require_stats(store, bounds=plan.bounds["train"]).mean.shape == (1,)
    rank_plan = plan_rank(plan, store, mode="single", rank=0, world_size=1, batch_size=8)
    with pytest.raises(StatsError, match="require_stats"):
        open_rank_data(store, rank_plan, None, device=torch.device("cpu"), contract=BatchContract())


def test_device_mode_without_an_accelerator_is_refused_unless_auto(store, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", store.path, "--mode", "device", *SMALL]) == 2
    _one_line_error(capsys, "--mode device needs a CUDA device", "--device auto")
    log = store.path + ".log.json"
    assert (
        main(["train", store.path, "--mode", "device", "--device", "auto", "--log", log, *SMALL])
        == 0
    )
    with open(log) as f:
        assert json.load(f)["device"] == "cpu"
    capsys.readouterr()
    assert main(["train", store.path, "--device", "auto", *SMALL]) == 2
    _one_line_error(capsys, "--device applies to --mode device only")


def test_no_progress_still_prints_one_line_per_epoch(store, capsys):
    assert main(["train", store.path, "--epochs", "3", "--no-progress", *SMALL]) == 0
    out = capsys.readouterr().out.splitlines()
    epochs = [line for line in out if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]


def test_more_workers_than_cores_is_refused_before_any_process(store, capsys, monkeypatch):
    monkeypatch.setattr(stzarr.training.checks, "usable_cores", lambda: 2)
    monkeypatch.setattr(LAUNCH, "launch", _no_launch)
    args = ["train", store.path, "--mode", "partitioned", "--workers", "64", *SMALL]
    assert main(args) == 2
    _one_line_error(capsys, "--workers 64", "2 CPU core(s)", "--oversubscribe")


@pytest.mark.parametrize("mode", ["full", "partitioned"])
def test_more_ranks_than_windows_is_refused_before_the_cluster(tmp_path, capsys, monkeypatch, mode):
    small = make_store(tmp_path / "tiny.zarr", n_time=100, n_node=3)
    windows = make_plan(100, WindowSpec(6, 3)).count("train")  # 70 steps: 62 windows
    monkeypatch.setattr(LAUNCH, "launch", _no_launch)
    workers = str(windows + 1)
    args = ["train", small.path, "--mode", mode, "--workers", workers, "--oversubscribe", *SMALL]
    assert main(args) == 2
    err = _one_line_error(
        capsys,
        f"has {windows}" if mode == "partitioned" else f"{windows} training windows",
        f"at most {windows} workers",
    )
    if mode == "full":
        assert "duplicated windows" in err


def test_synth_largest_honours_freq_minutes(tmp_path):
    out = tmp_path / "largest"
    args = ["synth", str(out), "--layout", "largest", "--years", "2019", "--nodes", "3"]
    assert main([*args, "--freq-minutes", "15", "--quiet"]) == 0
    frame = pd.read_hdf(out / "ca_his_raw_2019.h5", key="t")
    assert len(frame) == 365 * 24 * 4 == 35_040
    assert (np.diff(frame.index.values) == np.timedelta64(15, "m")).all()
    assert frame.index[0] == pd.Timestamp("2019-01-01")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["x.h5", "--steps", "10", "--nodes", "3", "--freq-minutes", "0"], ["--freq-minutes"]),
        (
            ["d", "--layout", "largest", "--years", "2019", "--freq-minutes", "0"],
            ["--freq-minutes"],
        ),
        (["d", "--layout", "largest", "--years", "2019", "--freq-minutes", "7"], ["divide a day"]),
        (["d", "--layout", "largest", "--years", "2019", "--start", "2019-01-01"], ["--start"]),
        (["d", "--layout", "largest", "--years", "2019", "--key", "df"], ["--key"]),
        (["d", "--layout", "largest", "--years", "2019", "--format", "table"], ["--format"]),
        (["d", "--layout", "largest", "--years", "2019", "--labels", "int"], ["--labels"]),
        (["x.h5", "--steps", "10", "--nodes", "3", "--dtype", "float32"], ["--dtype"]),
    ],
)
def test_synth_refuses_options_that_do_nothing(tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    assert main(["synth", *args, "--quiet"]) == 2
    _one_line_error(capsys, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    assert not any((tmp_path / "d").iterdir())


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--scheduler-file", "s.json"], ["--scheduler-file/--scheduler-address", "'single'"]),
        (["--scheduler-address", "tcp://h:1"], ["--scheduler-file/--scheduler-address"]),
        (["--oversubscribe"], ["--oversubscribe does nothing"]),
        (
            [
                "--mode",
                "full",
                "--workers",
                "2",
                "--oversubscribe",
                "--scheduler-address",
                "tcp://h:1",
            ],
            ["--oversubscribe does nothing"],
        ),
        (["--shuffle", "batch"], ["--shuffle batch does nothing without --mode partitioned"]),
        (["--mode", "full", "--workers", "2", "--shuffle", "batch"], ["--shuffle batch"]),
        (["--warmup-epochs", "3"], ["--warmup-epochs does nothing without --lr-scaling"]),
    ],
)
def test_train_refuses_options_that_do_nothing_in_its_mode(
    store, capsys, monkeypatch, flags, words
):
    monkeypatch.setattr(LAUNCH, "launch", _no_launch)
    assert main(["train", store.path, *SMALL, *flags]) == 2
    _one_line_error(capsys, *words)
    assert CACHE_ATTR not in open_store(store.path).attrs


def test_verify_refuses_quiet_without_full(store, capsys):
    assert main(["verify", store.path, "--quiet"]) == 2
    _one_line_error(capsys, "--quiet does nothing without --full")
    assert main(["verify", store.path, "--quiet", "--full"]) == 0
