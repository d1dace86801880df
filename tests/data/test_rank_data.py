"""The one rank-data path: where a rank's range does not fit ``max_memory`` it is streamed, with
the same windows and the same samples as when it is loaded."""

import numpy as np
import pytest
import torch

from stzarr.data.contract import BatchContract
from stzarr.data.rank import LoadedBatches, open_rank_data
from stzarr.data.streaming import StreamingLoader
from stzarr.errors import SpecError
from stzarr.plan.rank import plan_rank
from stzarr.plan.windows import WindowSpec, make_plan
from stzarr.store.stats import compute_stats
from stzarr.testing.validators import make_store

CPU = torch.device("cpu")
CONTRACT = BatchContract(time_of_day=True, fill_missing=False)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    store = make_store(
        tmp_path_factory.mktemp("rank") / "s.zarr", n_time=3000, n_node=4, chunk_time=16
    )
    plan = make_plan(store.shape[0], WindowSpec(12, 12), train=0.5, val=0.25)
    return store, plan, compute_stats(store, bounds=plan.bounds["train"])


def _open(small, mode, rank=0, world=1, max_memory=None):
    store, plan, stats = small
    rank_plan = plan_rank(
        plan, store, mode=mode, rank=rank, world_size=world, batch_size=2, max_memory=max_memory
    )
    return rank_plan, open_rank_data(store, rank_plan, stats, device=CPU, contract=CONTRACT)


@pytest.mark.parametrize(("mode", "world"), [("single", 1), ("partitioned", 2)])
def test_a_range_over_budget_streams_the_same_windows_and_samples(small, mode, world):
    store, plan, _ = small
    step_bytes = store.shape[1] * store.shape[2] * 4
    # 600 steps: below every range (>= 750 steps), above a few blocks, batches and read buffers
    budget = 600 * step_bytes
    for rank in range(world):
        loaded_plan, loaded = _open(small, mode, rank, world)
        streamed_plan, streamed = _open(small, mode, rank, world, max_memory=budget)
        assert isinstance(loaded.train, LoadedBatches) and not loaded_plan.train_streamed
        assert isinstance(streamed.train, StreamingLoader) and streamed_plan.train_streamed
        assert streamed_plan.range_bytes(streamed_plan.train_range) > budget
        assert streamed.train.plan.n_blocks > 1 and streamed.series_bytes == 0
        assert streamed_plan.to_dict()["train"] == "streamed"
        # every streamed training sample equals the loaded one of the same start
        streamed.train.set_epoch(1)
        n = 0
        for starts, x, y, missing in streamed.train.batches():
            lx, ly, lmissing = loaded.series.batch_masked(starts)
            assert torch.equal(x, lx) and torch.equal(y, ly) and torch.equal(missing, lmissing)
            n += 1
        assert n == len(streamed.train) > 0
        if mode == "single":  # every training window once per epoch
            seen = np.concatenate([s for s, *_ in streamed.train.batches(2)])
            np.testing.assert_array_equal(np.sort(seen), plan.starts["train"])
        # evaluation streams the rank's share and yields the loaded batches, in order
        for split in ("val", "test"):
            share = plan.read_range(streamed_plan.eval_starts[split])
            assert streamed_plan.streams(share) == (mode == "single")  # W=2: half fits
            got, want = list(streamed.eval_batches(split)), list(loaded.eval_batches(split))
            assert len(got) == len(want) > 0
            for a, b in zip(got, want, strict=True):
                assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
        assert torch.equal(streamed.inverse(torch.ones(2, 1)), loaded.inverse(torch.ones(2, 1)))


def test_full_mode_cannot_stream(small):
    with pytest.raises(SpecError, match="mode 'full' holds the whole series"):
        _open(small, "full", 0, 2, max_memory=600 * 16)


def test_a_range_within_budget_is_loaded(small):
    store, _, _ = small
    rank_plan, data = _open(small, "single", max_memory=store.shape[0] * 6 * 4)
    assert not rank_plan.train_streamed and isinstance(data.train, LoadedBatches)
