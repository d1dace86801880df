"""``stzarr plan --max-memory``: each rank's stream blocks, as the training loader plans them."""

import json

import pytest

from stzarr.cli import main
from stzarr.data.contract import BatchContract
from stzarr.data.streaming import StreamingLoader
from stzarr.plan.partition import store_partitions
from stzarr.plan.windows import WindowSpec, make_plan
from stzarr.store.stats import compute_stats
from stzarr.testing.validators import make_store

BUDGET = 300_000


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "s.zarr", n_time=2000, n_node=50, n_feature=2, chunk_time=40)


def test_plan_shows_the_blocks_the_training_loader_streams(store, capsys):
    argv = ["plan", store.path, "--workers", "2", "--batch-size", "2", "--train", "0.7"]
    assert main([*argv, "--max-memory", str(BUDGET), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["max_memory"] == BUDGET
    spec = WindowSpec()
    windows = make_plan(store.shape[0], spec, time=store.time)
    partitions = store_partitions(store, windows, 2)
    stats = compute_stats(store, bounds=windows.bounds["train"])
    for part in out["partitions"]:
        loader = StreamingLoader.from_partition(
            store,
            partitions,
            part["rank"],
            stats,
            batch_size=2,
            max_memory=BUDGET,
            with_mask=True,
            contract=BatchContract(time_of_day=True),
            device="cpu",
        )
        plan = loader.plan
        stream = part["stream"]
        assert stream["blocks"] == plan.n_blocks > 1
        assert stream["memory_bound"] == plan.memory_bound <= BUDGET
        assert stream["bytes_read_per_epoch"] == plan.bytes_read
        steps = plan.read_ranges[:, 1] - plan.read_ranges[:, 0]
        assert stream["block_steps_max"] == int(steps.max())
        assert stream["halo_steps"] == spec.input_steps + spec.horizon - 1
        # the blocks read the rank's whole range, nothing outside it
        assert plan.read_ranges[0, 0] == part["time_range"][0]
        assert plan.read_ranges[-1, 1] == part["time_range"][1]

    assert main([*argv, "--max-memory", str(BUDGET)]) == 0
    text = capsys.readouterr().out
    assert text.count(" steps, <= ") == 2


def test_plan_says_a_rank_that_fits_loads_its_range(store, capsys):
    argv = ["plan", store.path, "--workers", "2", "--max-memory", "1GB"]
    assert main([*argv, "--json"]) == 0
    assert [p["stream"] for p in json.loads(capsys.readouterr().out)["partitions"]] == [None] * 2
    assert main(argv) == 0
    assert capsys.readouterr().out.count(" loaded\n") == 2


def test_plan_refuses_a_budget_too_small_to_stream(store, capsys):
    assert main(["plan", store.path, "--workers", "2", "--max-memory", "1kB"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "max_memory" in err[0]
