"""Two gloo ranks on an embedded LocalCluster train a tiny model with DDP: gradients are
synchronised (identical parameters on both ranks after every step, equal to one process training
on the union of the ranks' batches), in both distributed modes."""

import sys

import cloudpickle
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from stzarr.data.batcher import SeriesBatcher
from stzarr.data.contract import BatchContract
from stzarr.data.rank import open_rank_data
from stzarr.plan.rank import DISTRIBUTED_MODES, plan_rank
from stzarr.plan.windows import WindowSpec, make_plan
from stzarr.store.format import open_store
from stzarr.store.stats import cache_stats, cached_stats, compute_stats
from stzarr.testing.validators import make_store
from stzarr.training.launch import RankContext, launch

cloudpickle.register_pickle_by_value(sys.modules[__name__])

SPEC = WindowSpec(6, 3)
STEPS, BATCH, LR = 4, 8, 0.05


class TimeLinear(nn.Module):
    """A linear map from the input steps to the horizon, shared by nodes and features."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(SPEC.input_steps, SPEC.horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # b t n f -> b h n f
        return self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def flat(model: nn.Module) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().copy()


def train_rank(ctx: RankContext, path: str, mode: str) -> dict:
    """A few DDP steps of one distributed mode; parameters and batches after every step."""
    store = open_store(path)
    plan = make_plan(store.shape[0], SPEC)
    stats = cached_stats(store, bounds=plan.bounds["train"])  # written by the parent
    cached = stats is not None
    if stats is None:
        stats = compute_stats(store, bounds=plan.bounds["train"])
    rank_plan = plan_rank(
        plan, store, mode=mode, rank=ctx.rank, world_size=ctx.world_size, batch_size=BATCH, seed=3
    )
    data = open_rank_data(
        store,
        rank_plan,
        stats,
        device=ctx.device,
        contract=BatchContract(time_of_day=False, fill_missing=False),
    )
    sampler, batcher = data.train.sampler, data.series
    model = DistributedDataParallel(TimeLinear())
    optimiser = torch.optim.SGD(model.parameters(), lr=LR)
    sampler.set_epoch(1)
    params, batches = [], []
    for _, starts in zip(range(STEPS), sampler, strict=False):
        x, y = batcher.batch(starts)
        loss = nn.functional.mse_loss(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        params.append(flat(model.module))
        batches.append(starts)
    # two whole epochs more: every rank must run the same number of DDP steps (no deadlock),
    # also when the partitions hold different numbers of windows
    epoch_steps = []
    for epoch in (2, 3):
        sampler.set_epoch(epoch)
        steps = 0
        for starts in sampler:
            x, y = batcher.batch(starts)
            optimiser.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            optimiser.step()
            steps += 1
        epoch_steps.append(steps)
    return {
        "params": params,
        "starts": batches,
        "stats_cached": cached,
        "time_range": batcher.time_range,
        "owned": 0 if rank_plan.partitions is None else len(rank_plan.train_starts),
        "epoch_steps": epoch_steps,
        "final": flat(model.module),
    }


def train_both_modes(ctx: RankContext, path: str) -> dict:
    return {mode: train_rank(ctx, path, mode) for mode in DISTRIBUTED_MODES}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 2-rank launch training both modes (one cluster start for both)."""
    store = make_store(
        tmp_path_factory.mktemp("ddp") / "s.zarr", n_time=400, n_node=4, chunk_time=45
    )
    plan = make_plan(store.shape[0], SPEC)
    stats = compute_stats(store, bounds=plan.bounds["train"])
    cache_stats(store, stats)  # the ranks read them from the store
    results = launch(train_both_modes, 2, store.path, timeout=120, pg_timeout=60)
    return store, stats, [r.value for r in results]


@pytest.mark.slow
@pytest.mark.parametrize("mode", DISTRIBUTED_MODES)
def test_two_gloo_ranks_keep_parameters_synchronised(trained, mode):
    store, stats, values = trained
    a, b = (v[mode] for v in values)
    assert a["stats_cached"] and b["stats_cached"]
    assert len(a["params"]) == len(b["params"]) == STEPS
    assert a["epoch_steps"] == b["epoch_steps"] and a["epoch_steps"][0] > STEPS
    assert np.array_equal(a["final"], b["final"])
    if mode == "partitioned":
        assert a["time_range"][1] < store.shape[0] and b["time_range"][0] > 0
        assert a["owned"] != b["owned"]  # unequal partitions, equal steps
    # one process taking the mean of the two ranks' losses, from the same initial parameters
    full = SeriesBatcher.from_store(store, stats, SPEC, device="cpu")
    reference = TimeLinear()
    optimiser = torch.optim.SGD(reference.parameters(), lr=LR)
    before = flat(reference)
    for step in range(STEPS):
        assert np.array_equal(a["params"][step], b["params"][step])  # synchronised
        assert not set(a["starts"][step]) & set(b["starts"][step])  # on different windows
        loss = 0.0
        for starts in (a["starts"][step], b["starts"][step]):
            x, y = full.batch(starts)
            loss = loss + nn.functional.mse_loss(reference(x), y) / 2
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        np.testing.assert_allclose(a["params"][step], flat(reference), rtol=1e-5, atol=1e-6)
    assert not np.allclose(before, flat(reference))  # training moved the parameters
