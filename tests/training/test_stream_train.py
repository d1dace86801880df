"""Streaming as a training mode: a rank whose data does not fit ``max_memory`` streams
it, trains on the same samples as in memory, uses every window once per epoch and never holds
more series than its budget."""

from __future__ import annotations

import json
import re
import weakref

import numpy as np
import pytest
import torch

import stzarr.data.streaming
from stzarr.cli import main
from stzarr.data.streaming import StreamingLoader
from stzarr.errors import SpecError
from stzarr.plan.rank import RankPlan
from stzarr.plan.windows import WindowSpec, make_plan
from stzarr.testing.validators import make_store
from stzarr.training.config import TrainConfig
from stzarr.training.models import MODELS
from stzarr.training.train import train

SMALL = dict(
    batch_size=8,
    input_steps=6,
    horizon=4,
    stride=2,
    threads=1,
    progress=False,
    model_options={"hidden": 4},
)
BUDGET = 100_000
"""Bytes: below the training series and its batch buffers (164 kB), above the smallest streaming
plan (two one-chunk blocks with their halo, four batches, read buffers: 71 kB)."""
RANK_BUDGET = 76_000
"""Per rank of two: below a partition and its batches (85 kB), above the smallest stream."""


@pytest.fixture
def store(tmp_path):
    return make_store(
        tmp_path / "s.zarr", n_time=1500, n_node=20, chunk_time=32, missing_fraction=0.05
    )


class _Replay:
    """A sampler (the protocol: ``set_epoch``, ``len``, int64 starts) replaying recorded orders."""

    def __init__(self, orders: dict[int, list[np.ndarray]]) -> None:
        self.orders = orders
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.orders[self.epoch])

    def __iter__(self):
        return iter(self.orders[self.epoch])


def _record_streamed_orders(monkeypatch) -> dict[int, list[np.ndarray]]:
    """Record the starts of every training batch a StreamingLoader yields, per epoch."""
    orders: dict[int, list[np.ndarray]] = {}
    batches = StreamingLoader.batches

    def spy(self, epoch=None):
        for item in batches(self, epoch):
            if self.sampler.shuffle:  # training, not evaluation
                orders.setdefault(self.epoch, []).append(np.array(item[0], dtype=np.int64))
            yield item

    monkeypatch.setattr(StreamingLoader, "batches", spy)
    return orders


def test_streamed_training_gives_the_in_memory_loss_curve_and_every_window_once(store, monkeypatch):
    config = TrainConfig.of(epochs=2, max_memory=BUDGET, seed=3, **SMALL)
    orders = _record_streamed_orders(monkeypatch)
    streamed = train(store, config)
    monkeypatch.undo()
    rank = streamed.log["ranks"][0]
    assert rank["train"] == "streamed" and rank["blocks_planned"] > 1

    # every training window exactly once per epoch (oracle: the window arithmetic from scratch)
    n_train = int(0.7 * 1500)
    expected = np.arange(0, n_train - (6 + 4) + 1, 2)
    assert np.array_equal(make_plan(1500, WindowSpec(6, 4, 2)).starts["train"], expected)
    assert sorted(orders) == [0, 1]
    for epoch, batches in orders.items():
        seen = np.concatenate(batches)
        assert np.array_equal(np.sort(seen), expected), f"epoch {epoch}"
    assert not np.array_equal(np.concatenate(orders[0]), np.concatenate(orders[1]))

    # the same sample order in memory: the same loss, batch for batch
    monkeypatch.setattr(RankPlan, "sampler", lambda self: _Replay(orders))
    loaded = train(store, config.replace(max_memory=None))
    assert loaded.log["ranks"][0]["train"] == "loaded"
    a = np.concatenate([r["batch_losses"] for r in streamed.history])
    b = np.concatenate([r["batch_losses"] for r in loaded.history])
    assert a.size == b.size == sum(len(v) for v in orders.values())
    np.testing.assert_allclose(a, b, rtol=1e-6)
    for key, value in loaded.state_dict.items():
        torch.testing.assert_close(streamed.state_dict[key], value, rtol=1e-6, atol=1e-7)
    assert streamed.history[-1]["val"]["mae"] == pytest.approx(
        loaded.history[-1]["val"]["mae"], rel=1e-6
    )


def test_a_streamed_rank_never_holds_more_series_than_its_budget(store, monkeypatch):
    """Counted with weak references to every block the loader builds: bytes of blocks alive."""
    alive = {"now": 0, "peak": 0, "blocks": 0}
    from_array = stzarr.data.streaming.SeriesBatcher.from_array

    def counted(*args, **kwargs):
        batcher = from_array(*args, **kwargs)
        nbytes = batcher.nbytes
        alive["now"] += nbytes
        alive["blocks"] += 1
        alive["peak"] = max(alive["peak"], alive["now"])
        weakref.finalize(batcher, lambda: alive.__setitem__("now", alive["now"] - nbytes))
        return batcher

    monkeypatch.setattr(stzarr.data.streaming.SeriesBatcher, "from_array", staticmethod(counted))
    result = train(store, TrainConfig.of(epochs=1, max_memory=BUDGET, **SMALL))
    rank = result.log["ranks"][0]
    assert rank["train"] == "streamed"
    assert alive["blocks"] >= rank["blocks_planned"] > 1
    assert 0 < alive["peak"] <= BUDGET
    assert 0 < rank["peak_series_bytes"] <= BUDGET
    assert rank["wait_s"] >= 0.0


def test_a_budget_that_fits_loads_as_before(store):
    result = train(store, TrainConfig.of(epochs=1, max_batches=2, max_memory=10**8, **SMALL))
    rank = result.log["ranks"][0]
    assert rank["train"] == "loaded"
    # the loaded range (with its calendar channel) is the series held; nothing is streamed
    assert 0 < rank["series_bytes"] <= rank["peak_series_bytes"] < rank["max_memory"]
    assert rank["blocks_planned"] == 1 and rank["blocks_read"] == 0 and rank["wait_s"] == 0.0


def test_a_budget_too_small_for_one_batch_is_one_line_naming_the_size(store, capsys):
    assert main(["train", store.path, "--max-memory", "2kB", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "too small" in err
    config = TrainConfig.of(epochs=1, max_batches=1, eval_batches=1, **SMALL)
    with pytest.raises(SpecError, match="too small") as small:
        train(store, config.replace(max_memory=2_000))
    need = int(re.search(r"needs at least (\d+) bytes", str(small.value)).group(1))
    # the size named is enough: the same run under it streams
    result = train(store, config.replace(max_memory=need))
    assert result.log["ranks"][0]["train"] == "streamed"
    assert result.log["ranks"][0]["peak_series_bytes"] <= need


def test_streamed_resume_reaches_the_uninterrupted_parameters(store, tmp_path):
    config = TrainConfig.of(epochs=2, max_memory=BUDGET, max_batches=4, **SMALL)
    whole = train(store, config)
    ckpt = tmp_path / "ckpt"
    train(store, config.replace(epochs=1, checkpoint_dir=ckpt))
    resumed = train(store, config.replace(checkpoint_dir=ckpt, resume=True))
    assert resumed.log["ranks"][0]["train"] == "streamed"
    for key, value in whole.state_dict.items():
        torch.testing.assert_close(resumed.state_dict[key], value, rtol=0, atol=0)


@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_streamed(store, model):
    result = train(
        store, TrainConfig.of(model=model, epochs=1, max_batches=2, max_memory=BUDGET, **SMALL)
    )
    assert result.log["ranks"][0]["train"] == "streamed"
    assert np.isfinite(result.history[0]["loss"])


def test_partitioned_ranks_stream_on_the_dask_launcher(store, tmp_path):
    log = tmp_path / "log.json"
    result = train(
        store,
        TrainConfig.of(
            mode="partitioned",
            workers=2,
            epochs=1,
            max_memory=RANK_BUDGET,
            log_path=log,
            **SMALL,
        ),
    )
    ranks = json.loads(log.read_text())["ranks"]
    assert [r["train"] for r in ranks] == ["streamed", "streamed"]
    for r in ranks:
        assert r["blocks_planned"] > 1 and 0 < r["peak_series_bytes"] <= RANK_BUDGET
        assert r["wait_s"] >= 0.0
    assert result.history[0]["samples"] > 0 and np.isfinite(result.history[0]["val"]["mae"])


def test_evaluation_streams_when_its_share_does_not_fit(store):
    """Train split small enough to load, validation split too large: only evaluation streams,
    and its metrics equal those of a run that loads everything. (Mode partitioned, one rank:
    the single-process modes hold the whole series, so they stream training and evaluation
    together.)"""
    config = TrainConfig.of(
        mode="partitioned", workers=1, epochs=1, max_batches=3, train=0.2, val=0.7, **SMALL
    )
    budget = 80_000  # the train split and its batches take 67 kB, validation's share 127 kB
    bounded = train(store, config.replace(max_memory=budget))
    unbounded = train(store, config)
    rank = bounded.log["ranks"][0]
    assert rank["train"] == "loaded" and rank["blocks_read"] > 1  # the validation blocks
    assert unbounded.log["ranks"][0]["blocks_read"] == 0
    assert rank["peak_series_bytes"] <= budget
    for split in ("val", "test"):
        got = bounded.history[-1]["val"] if split == "val" else bounded.test
        want = unbounded.history[-1]["val"] if split == "val" else unbounded.test
        assert got["mae"] == pytest.approx(want["mae"], rel=1e-6)
        assert got["rmse"] == pytest.approx(want["rmse"], rel=1e-6)
