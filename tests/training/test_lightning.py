"""stzarr's loaders under PyTorch Lightning: the same training as ``stzarr train``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

L = pytest.importorskip("lightning")

from stzarr.testing.validators import make_store  # noqa: E402
from stzarr.training.config import TrainConfig  # noqa: E402
from stzarr.training.lightning import EpochBatches, ForecastModule, StzarrDataModule  # noqa: E402
from stzarr.training.train import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
COMMON = {"input_steps": 6, "horizon": 4, "batch_size": 16, "max_batches": 6, "seed": 3}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("l") / "s.zarr", n_time=600, n_node=5, chunk_time=64)


def _stzarr_train(store, **extra):
    config = TrainConfig.of(
        model="pgt-batched-dcrnn", model_options={"hidden": 8}, epochs=2, progress=False,
        **COMMON, **extra,
    )  # fmt: skip
    return train(store, config)


def _fit(module, data):
    """Two epochs in one CPU process under Lightning's defaults (use_distributed_sampler
    included: it finds no DataLoader to wrap)."""
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, num_sanity_val_steps=0, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    return trainer


def test_lightning_loss_curve_equals_stzarr_train(store):
    reference = _stzarr_train(store)
    data = StzarrDataModule(
        store.path,
        window={"input_steps": 6, "horizon": 4},
        batch_size=16,
        max_batches=6,
        seed=3,
    )
    module = ForecastModule(data.build_model("pgt-batched-dcrnn", hidden=8), data.scaler)
    trainer = _fit(module, data)
    assert isinstance(trainer.train_dataloader, EpochBatches)
    assert module.losses == [v for r in reference.history for v in r["batch_losses"]]
    for name, value in reference.state_dict.items():
        assert torch.equal(module.model.state_dict()[name], value), name


def test_a_rank_over_its_budget_streams_and_trains_as_stzarr_train(tmp_path):
    store = make_store(tmp_path / "long.zarr", n_time=2000, n_node=5, chunk_time=64)
    budget = 36_000  # less than the series (1,400 steps x 20 bytes) and 4 batches of 5.3 kB
    reference = _stzarr_train(store, max_memory=budget, mode="partitioned", workers=1)
    assert reference.log["ranks"][0]["train"] == "streamed"
    data = StzarrDataModule(
        store.path, window={"input_steps": 6, "horizon": 4}, batch_size=16, max_batches=6,
        seed=3, max_memory=budget, mode="partitioned",
    )  # fmt: skip
    module = ForecastModule(data.build_model("pgt-batched-dcrnn", hidden=8), data.scaler)
    _fit(module, data)
    assert data.data is not None and data.data.report()["train"] == "streamed"
    assert module.losses == [v for r in reference.history for v in r["batch_losses"]]


def test_scaler_inverts_with_the_train_statistics(store):
    data = StzarrDataModule(store.path, window={"input_steps": 6, "horizon": 4})
    raw = np.asarray(store.dataset["data"].values[:420], dtype=np.float64)
    valid = raw[np.isfinite(raw) & (raw != 0)]
    y = torch.tensor([[0.0], [1.0], [-2.0]])
    want = y.numpy() * np.float32(valid.std()) + np.float32(valid.mean())
    np.testing.assert_allclose(data.scaler.inverse(y).numpy(), want, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "partitioned"])
def test_two_process_lightning_ddp_trains_as_stzarr_train(store, tmp_path, mode):
    saved = tmp_path / "params.pt"
    cmd = [
        sys.executable, str(ROOT / "examples" / "lightning_ddp.py"), store.path, "--mode", mode,
        "--devices", "2", "--input-steps", "6", "--horizon", "4", "--hidden", "8",
        "--max-batches", "6", "--batch-size", "16", "--seed", "3", "--save", str(saved),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    ranges = sorted(line.split("time steps ")[1].split(" ")[0] for line in
                    done.stdout.splitlines() if line.startswith("rank "))  # fmt: skip
    assert len(ranges) == 2
    if mode == "partitioned":
        assert ranges[0] != ranges[1]  # each rank read its own range
    reference = _stzarr_train(store, mode=mode, workers=2)
    params = torch.load(saved)
    for name, value in reference.state_dict.items():
        torch.testing.assert_close(params[name], value, rtol=0, atol=1e-7)
