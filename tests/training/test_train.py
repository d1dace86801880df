"""The training workflow: same loss curve as the materialised pipeline, learning on real data,
bit-exact resume after a kill, logs, DDP modes, CLI errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
from training_oracle import oracle_start

from stzarr.cli import build_parser, main
from stzarr.cli.options import train_config
from stzarr.errors import SpecError, StzarrError, StzarrWarning
from stzarr.plan.sampler import GlobalShuffleSampler
from stzarr.plan.windows import WindowSpec, make_plan
from stzarr.testing.validators import make_store
from stzarr.training.checkpoint import load_checkpoint
from stzarr.training.config import TrainConfig
from stzarr.training.metrics import masked_mae
from stzarr.training.models import MODELS
from stzarr.training.train import train

SMALL = dict(
    batch_size=16,
    input_steps=6,
    horizon=3,
    max_batches=6,
    threads=1,
    progress=False,
    model_options={"hidden": 8},
)


@pytest.fixture
def store(tmp_path):
    return make_store(
        tmp_path / "s.zarr", n_time=700, n_node=6, chunk_time=64, missing_fraction=0.1
    )


def test_index_batching_gives_the_materialised_pipelines_loss_curve(store):
    """Seeded DCRNN: every batch loss of train() (index-batching, time-of-day feature) equals the
    loss of a plain loop over the standard materialised windows, batch for batch."""
    epochs, lr = 3, 0.01
    result = train(
        store, TrainConfig.of(model="dcrnn", epochs=epochs, lr=lr, time_of_day=True, **SMALL)
    )

    # the oracle: plain NumPy windows and statistics from the raw values
    reference, model = oracle_start(
        store, "dcrnn", input_steps=SMALL["input_steps"], horizon=SMALL["horizon"]
    )
    train_windows = reference["train"]
    train_starts = train_windows.starts
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    sampler = GlobalShuffleSampler(train_starts, SMALL["batch_size"], seed=0)
    curve = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for k, starts in enumerate(sampler):
            if k == SMALL["max_batches"]:
                break
            pos = torch.from_numpy(np.searchsorted(train_starts, starts))
            x, y = train_windows.x[pos], train_windows.y[pos]
            valid = ~train_windows.missing[pos]
            loss = masked_mae(reference.inverse(model(x), [0]), reference.inverse(y, [0]), valid)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            curve.append(loss.item())
    index_curve = [v for record in result.history for v in record["batch_losses"]]
    assert len(index_curve) == epochs * SMALL["max_batches"]
    np.testing.assert_allclose(index_curve, curve, rtol=1e-6, atol=0)
    for name, p in model.state_dict().items():
        torch.testing.assert_close(result.state_dict[name], p, rtol=1e-5, atol=1e-6)


def test_loss_decreases_on_real_chickenpox_with_validation_mae(shared_data, tmp_path):
    from stzarr.converters import convert

    convert(shared_data / "chickenpox.json", tmp_path / "cp.zarr", progress=False)
    result = train(
        tmp_path / "cp.zarr",
        TrainConfig.of(
            model="dcrnn",
            epochs=3,
            batch_size=4,
            lr=0.001,
            input_steps=4,
            horizon=4,
            horizons=(1, 2, 4),
            threads=1,
            progress=False,
        ),
    )
    losses = result.losses
    assert losses[-1] < losses[0], losses
    assert result.history[0]["batches"] == 90  # every training window, batch 4
    for record in result.history:
        val = record["val"]
        assert np.isfinite(val["mae"]) and 0 < val["mae"] < 2  # standardised cases
        assert val["count"] == 20 * 4 * make_plan(521, WindowSpec(4, 4)).count("val")
        assert set(val["horizons"]) == {"1", "2", "4"}
    assert np.isfinite(result.test["mae"])


def _train_cli(store, tmp_path, *extra):
    return [
        sys.executable,
        "-m",
        "stzarr",
        "train",
        str(store.path),
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--input-steps",
        "6",
        "--horizon",
        "3",
        "--max-batches",
        "40",
        "--hidden",
        "8",
        "--threads",
        "1",
        "--no-progress",
        *extra,
    ]


@pytest.mark.slow
def test_resume_after_kill_reaches_the_uninterrupted_parameters(store, tmp_path):
    """A run SIGKILLed after its first checkpoint, then resumed, ends with exactly the parameters
    of an uninterrupted run (scheduled-sampling model, lr warm-up: RNG and scheduler restored)."""
    common = ["--model", "dcrnn", "--lr-scaling"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        _train_cli(store, tmp_path, *common, "--checkpoint", str(whole)),
        check=True,
        env=env,
        capture_output=True,
    )
    proc = subprocess.Popen(
        _train_cli(store, tmp_path, *common, "--checkpoint", str(cut)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (cut / "last.pt").exists():
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(cut).epoch
    assert killed_at < 3, "the kill came too late to test anything"
    subprocess.run(
        _train_cli(store, tmp_path, *common, "--checkpoint", str(cut), "--resume"),
        check=True,
        env=env,
        capture_output=True,
    )
    a, b = load_checkpoint(whole), load_checkpoint(cut)
    assert a.epoch == b.epoch == 3
    assert a.model.keys() == b.model.keys()
    for name in a.model:
        assert torch.equal(a.model[name], b.model[name]), name
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]


def test_resume_in_process_and_mismatched_configuration(store, tmp_path):
    ck = tmp_path / "ck"
    whole = train(store, TrainConfig.of(epochs=2, **SMALL))
    train(store, TrainConfig.of(epochs=1, checkpoint_dir=ck, **SMALL))
    resumed = train(store, TrainConfig.of(epochs=2, checkpoint_dir=ck, resume=True, **SMALL))
    assert resumed.log["resumed_at_epoch"] == 1
    # the first run computed and cached the statistics, the later ones read them
    assert not whole.log["preprocess"]["stats_cached"] and resumed.log["preprocess"]["stats_cached"]
    for name, p in whole.state_dict.items():
        assert torch.equal(resumed.state_dict[name], p)
    with pytest.raises(StzarrError, match=r"run.batch_size: 16 -> 8"), warnings.catch_warnings():
        warnings.simplefilter("error", StzarrWarning)  # refused before naming safe changes
        train(
            store,
            TrainConfig.of(epochs=3, checkpoint_dir=ck, resume=True, **{**SMALL, "batch_size": 8}),
        )


SMALL_FLAGS = "--batch-size 16 --input-steps 6 --horizon 3 --max-batches 6 --threads 1 "
SMALL_FLAGS += "--no-progress --hidden 8"


def test_cli_resume_takes_the_checkpoints_configuration_and_the_flags_given(
    store, tmp_path, capsys
):
    """``--checkpoint DIR --resume --epochs 3`` continues a one-epoch run without its other
    flags and ends with the parameters of an uninterrupted three-epoch run; a change that would
    break bit-exact continuation is one line naming it."""
    whole = train(store, TrainConfig.of(epochs=3, **SMALL))
    ck, path = tmp_path / "ck", str(store.path)
    assert main(["train", path, *SMALL_FLAGS.split(), "--checkpoint", str(ck)]) == 0
    capsys.readouterr()
    assert main(["train", path, "--checkpoint", str(ck), "--resume", "--epochs", "3"]) == 0
    assert "warning: --resume: changed run.epochs: 1 -> 3\n" in capsys.readouterr().err
    resumed = load_checkpoint(ck)
    assert resumed.epoch == 3 and resumed.config["run"]["resume"]
    assert TrainConfig.from_dict(resumed.config) == TrainConfig.of(
        epochs=3, checkpoint_dir=str(ck), resume=True, **SMALL
    )
    for name, p in whole.state_dict.items():
        assert torch.equal(resumed.model[name], p), name
    argv = ["train", path, "--checkpoint", str(ck), "--resume", "--epochs", "4"]
    assert main([*argv, "--batch-size", "8", "--stride", "2"]) == 2
    err = capsys.readouterr().err
    assert "changing window.stride: 1 -> 2; run.batch_size: 16 -> 8 would break" in err
    assert err.count("\n") == 1 and load_checkpoint(ck).epoch == 3


def test_saved_configuration_fed_back_is_the_same_configuration(store, tmp_path):
    config = TrainConfig.of(
        epochs=1,
        log_path=str(tmp_path / "log.json"),
        checkpoint_dir=str(tmp_path / "ck"),
        clip_grad_norm=2.0,
        lr_milestones=(3,),
        time_of_day=False,
        **SMALL,
    )
    train(store, config)
    for saved in (tmp_path / "log.json", tmp_path / "ck" / "last.pt"):
        args = build_parser().parse_args(["train", "S", "--config", str(saved)])
        assert train_config(args) == config, saved


def test_log_records_runtime_memory_and_metrics_per_epoch(store, tmp_path):
    log_path = tmp_path / "out" / "log.json"
    train(store, TrainConfig.of(epochs=2, log_path=log_path, memory_interval=0.02, **SMALL))
    log = json.loads(log_path.read_text())
    assert log["config"]["run"]["model"] == MODELS[0] and log["world_size"] == 1
    assert log["preprocess"]["seconds"] > 0 and log["preprocess"]["stats_cached"] is False
    assert [r["epoch"] for r in log["epochs"]] == [1, 2]
    for record in log["epochs"]:
        assert record["train_s"] > 0 and record["samples"] == 6 * 16
        assert record["peak_rss_bytes"][0] > 10 * 2**20
        assert record["peak_device_bytes"] == [None]  # CPU run
        for split in ("train", "val"):
            assert set(record[split]) >= {"mae", "rmse", "mape", "count", "horizons"}
            assert record[split]["rmse"] >= record[split]["mae"]
        assert set(record["val"]["horizons"]) == {"3"}  # horizon 3: only step 3 exists
    trace = log["memory_trace"]["ranks"][0]["trace"]
    assert len(trace) > 3 and all(b > 0 for _, b in trace)
    assert log["test"]["count"] > 0
    assert not [p for p in log_path.parent.iterdir() if p.name.startswith(".")]


def test_plot_writes_memory_and_curve_pngs(store, tmp_path):
    log_path = tmp_path / "log.json"
    train(store, TrainConfig.of(epochs=2, log_path=log_path, **SMALL))
    assert main(["plot", str(log_path), "-o", str(tmp_path / "fig")]) == 0
    for name in ("log-memory.png", "log-curves.png"):
        png = tmp_path / "fig" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_is_a_one_line_error(store, tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.zarr")]) == 2
    assert "stzarr train: error: no store at" in capsys.readouterr().err
    assert main(["train", str(store.path), "--resume"]) == 2
    assert "--resume needs --checkpoint" in capsys.readouterr().err
    assert main(["train", str(store.path), "--checkpoint", str(tmp_path / "x"), "--resume"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    assert main(["train", str(store.path), "--workers", "2"]) == 2
    assert "runs one process" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "none.json")]) == 2
    with pytest.raises(SpecError, match="longer than the series"):
        train(store, TrainConfig.of(input_steps=400, horizon=400, progress=False))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "partitioned"])
def test_ddp_modes_train_and_score_every_validation_window(store, mode, tmp_path):
    result = train(
        store,
        TrainConfig.of(
            mode=mode,
            workers=2,
            epochs=2,
            log_path=tmp_path / "log.json",
            **{**SMALL, "threads": 1},
        ),
    )
    plan = make_plan(store.shape[0], WindowSpec(6, 3))
    n_targets = store.shape[1] * 3
    for record in result.history:
        # partitioned: a rank's rotating window of fixed batches may include its partial last one
        assert record["samples"] == 2 * 6 * 16 if mode == "full" else record["samples"] > 2 * 5 * 16
        assert len(record["peak_rss_bytes"]) == 2
        assert np.isfinite(record["val"]["mae"])
        # the two ranks' shares of the validation windows add up to all of them (minus missing)
        assert (
            0.8 * plan.count("val") * n_targets
            < record["val"]["count"]
            <= (plan.count("val") * n_targets)
        )
    assert len(result.log["memory_trace"]["ranks"]) == 2
    assert result.losses[-1] < result.losses[0]


def test_same_seed_same_run_other_seed_other_run(store):
    a = train(store, TrainConfig.of(epochs=1, seed=3, **{**SMALL, "max_batches": 2}))
    b = train(store, TrainConfig.of(epochs=1, seed=3, **{**SMALL, "max_batches": 2}))
    c = train(store, TrainConfig.of(epochs=1, seed=4, **{**SMALL, "max_batches": 2}))
    assert a.history[0]["batch_losses"] == b.history[0]["batch_losses"]
    assert a.history[0]["batch_losses"] != c.history[0]["batch_losses"]
