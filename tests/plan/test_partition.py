import json
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stzarr.cli import main
from stzarr.data.batcher import SeriesBatcher
from stzarr.data.contract import BatchContract
from stzarr.data.rank import LoadedBatches, open_rank_data
from stzarr.errors import SpecError
from stzarr.plan.partition import (
    SharedChunksWarning,
    plan_partitions,
    store_partitions,
)
from stzarr.plan.rank import MODES, plan_rank
from stzarr.plan.sampler import BatchShuffleSampler, GlobalShuffleSampler, WindowShuffleSampler
from stzarr.plan.windows import WindowSpec, make_plan
from stzarr.store.stats import compute_stats
from stzarr.testing.validators import (
    assert_equal_steps,
    assert_partition_balanced,
    assert_partition_covers,
    make_store,
    record_reads,
    time_blocks_read,
)

PLAIN = BatchContract(time_of_day=False, fill_missing=False)


@st.composite
def partition_cases(draw):
    input_steps = draw(st.integers(1, 24), label="input_steps")
    horizon = draw(st.integers(1, 24), label="horizon")
    stride = draw(st.integers(1, 5), label="stride")
    spec = WindowSpec(input_steps, horizon, stride)
    n_time = draw(st.integers(spec.span * 3, 3000), label="n_time")
    chunk_time = draw(st.integers(1, 400), label="chunk_time")
    world = draw(st.integers(1, 9), label="world_size")
    gap = draw(st.none() | st.integers(1, n_time - 1), label="gap_at")
    cross = draw(st.booleans(), label="cross_splits")
    return spec, n_time, chunk_time, world, gap, cross


def window_plan(spec, n_time, gap, cross):
    time = np.arange(n_time) * np.timedelta64(5, "m") + np.datetime64("2020-01-01", "ns")
    if gap is not None:
        time[gap:] += np.timedelta64(1, "h")
    return make_plan(
        n_time,
        spec,
        train=0.7,
        val=0.1,
        time=time,
        exclude_gaps=gap is not None,
        cross_splits=cross,
    )


@settings(max_examples=150, deadline=None)
@given(partition_cases())
def test_partitions_are_disjoint_chunk_aligned_balanced_and_cover_every_window(case):
    spec, n_time, chunk_time, world, gap, cross = case
    try:
        plan = window_plan(spec, n_time, gap, cross)
    except SpecError:
        assume(False)  # no training window at all (window plan's own error)
    starts = plan.starts["train"]
    if starts.size < world:
        with pytest.raises(SpecError, match="too few"):
            plan_partitions(plan, chunk_time=chunk_time, world_size=world, n_node=3, n_feature=2)
        return
    chunks_with_starts = np.unique(starts // chunk_time).size
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parts = plan_partitions(
            plan, chunk_time=chunk_time, world_size=world, n_node=3, n_feature=2
        )
    # silent whenever the windows start in at least as many chunks as there are ranks
    few_chunks = chunks_with_starts < world
    assert len(caught) == int(few_chunks)
    assert parts.world_size == world
    assert_partition_covers(parts)
    counts = [p.count for p in parts.partitions]
    if parts.chunk_aligned:
        assert_partition_balanced(parts)
    if not few_chunks:  # within 10 %, or chunk-aligned where balancing would cost more
        balanced = min(counts) >= 0.9 * max(counts) or max(counts) - min(counts) <= 1
        assert balanced or parts.chunk_aligned
        assert parts.balanced_inside_chunks == (not parts.chunk_aligned)
    else:  # equal ranges that start inside chunks
        assert not parts.chunk_aligned
        assert max(counts) - min(counts) <= 1
        assert issubclass(caught[0].category, SharedChunksWarning)
        assert "stzarr rechunk" in str(caught[0].message)
    for p in parts.partitions:
        assert p.read_bytes >= (p.time_range[1] - p.time_range[0]) * 3 * 2 * 4
        assert p.read_bytes <= p.n_chunks * chunk_time * 3 * 2 * 4
        assert p.memory_bytes == (p.time_range[1] - p.time_range[0]) * 24 + p.count * 8
    # every rank runs the same number of steps per epoch
    batch = max(1, starts.size // (3 * world))
    assert_equal_steps([parts.sampler(r, batch) for r in range(world)])
    json.dumps(parts.to_dict(batch_size=batch))


@pytest.mark.parametrize("shuffle", ["window", "batch"])
def test_rank_samplers_visit_every_owned_window_within_the_rotation_period(shuffle):
    plan = make_plan(2000, WindowSpec(12, 12))
    parts = plan_partitions(plan, chunk_time=50, world_size=3, n_node=1, n_feature=1)
    counts = [p.count for p in parts.partitions]
    assert len(set(counts)) > 1  # unequal partitions: the larger ones rotate
    batch = 32
    steps = parts.steps_per_epoch(batch)
    assert steps == min(math.ceil(c / batch) for c in counts)
    for rank in range(3):
        sampler = parts.sampler(rank, batch, seed=11, shuffle=shuffle)
        assert isinstance(
            sampler, WindowShuffleSampler if shuffle == "window" else BatchShuffleSampler
        )
        n_epochs = math.ceil(math.ceil(counts[rank] / batch) / steps)
        seen = []
        for epoch in range(n_epochs):
            sampler.set_epoch(epoch)
            seen.extend(np.concatenate(list(sampler)).tolist())
        assert set(seen) == set(parts.rank_starts(rank).tolist())


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "s.zarr", n_time=700, n_node=5, n_feature=2, chunk_time=40)


@pytest.mark.usefixtures("zarr_pipeline")  # record_reads watches zarr-python's reads
@pytest.mark.parametrize("shard_time", [None, 80])
def test_each_rank_reads_only_its_chunks_and_batches_match_the_full_series(tmp_path, shard_time):
    store = make_store(
        tmp_path / "s.zarr", n_time=700, n_node=5, n_feature=2, chunk_time=40, shard_time=shard_time
    )
    spec = WindowSpec(6, 4, stride=2)
    plan = make_plan(store.shape[0], spec, time=store.time)
    stats = compute_stats(store, bounds=plan.bounds["train"])
    parts = store_partitions(store, plan, 3)
    full = SeriesBatcher.from_store(store, stats, spec, device="cpu", time_of_day=True)
    cpu = torch.device("cpu")
    for rank, part in enumerate(parts.partitions):
        rank_plan = plan_rank(
            plan, store, mode="partitioned", rank=rank, world_size=3, batch_size=8
        )
        with record_reads() as keys:
            data = open_rank_data(
                store,
                rank_plan,
                stats,
                device=cpu,
                contract=BatchContract(time_of_day=True, fill_missing=False),
            )
        batcher = data.series
        chunks = range(*part.chunk_range)
        if shard_time is None:
            assert time_blocks_read(keys) == set(chunks)
        else:  # the shard files holding exactly those chunks
            assert time_blocks_read(keys) == {c * 40 // shard_time for c in chunks}
        assert batcher.time_range == part.time_range
        assert batcher.series.shape[0] * 5 * 2 * 4 + part.count * 8 == part.memory_bytes
        mine = parts.rank_starts(rank)
        x, y = batcher.batch(mine)
        fx, fy = full.batch(mine)
        assert torch.equal(x, fx) and torch.equal(y, fy)
        with pytest.raises(SpecError, match="outside"):
            batcher.batch(parts.starts[[0, -1]])  # another rank's windows are not held


@pytest.mark.parametrize("mode", MODES)
def test_one_rank_data_path_for_every_mode(store, mode):
    """Every mode goes through plan_rank + open_rank_data; each sampled batch is held by the
    rank and equals the batch gathered from the whole series."""
    spec = WindowSpec(6, 4)
    plan = make_plan(store.shape[0], spec)
    stats = compute_stats(store, bounds=plan.bounds["train"])
    world = 2 if mode in ("full", "partitioned") else 1
    rank = world - 1
    rank_plan = plan_rank(plan, store, mode=mode, rank=rank, world_size=world, batch_size=16)
    data = open_rank_data(store, rank_plan, stats, device=torch.device("cpu"), contract=PLAIN)
    whole = SeriesBatcher.from_store(store, stats, spec, device="cpu")
    assert isinstance(data.train, LoadedBatches)
    if mode == "partitioned":
        assert isinstance(data.train.sampler, WindowShuffleSampler)
        assert data.series.time_range == rank_plan.partitions.partitions[rank].time_range
        assert data.series.time_range != (0, store.shape[0])
    else:
        assert isinstance(data.train.sampler, GlobalShuffleSampler)
        assert data.series.time_range == (0, store.shape[0])
    checked = 0
    for (x, y, _), starts in zip(data.train, data.train.sampler, strict=True):
        wx, wy = whole.batch(starts)
        assert torch.equal(x, wx) and torch.equal(y, wy)
        checked += 1
    assert checked == len(data.train) > 0
    for split in ("val", "test"):
        mine = rank_plan.eval_starts[split]
        got = list(data.eval_batches(split))
        assert sum(b[0].shape[0] for b in got) == mine.size > 0
        wx, wy = whole.batch(mine)
        assert torch.equal(torch.cat([b[0] for b in got]), wx)
        assert torch.equal(torch.cat([b[1] for b in got]), wy)
    with pytest.raises(SpecError, match="mode"):
        plan_rank(plan, store, mode="both", rank=0, world_size=2, batch_size=4)


def test_plan_errors_name_the_problem(store):
    plan = make_plan(store.shape[0], WindowSpec(6, 4))
    with pytest.raises(SpecError, match="too few for 9999 ranks"):
        store_partitions(store, plan, 9999)
    with pytest.raises(SpecError, match="world_size"):
        store_partitions(store, plan, 0)
    other = make_plan(500, WindowSpec(6, 4))
    with pytest.raises(SpecError, match="500 steps"):
        store_partitions(store, other, 2)
    with pytest.raises(SpecError, match="500 steps"):
        plan_rank(other, store, mode="single", rank=0, world_size=1, batch_size=4)


def test_cli_plan_prints_ranks_and_json(store, capsys):
    assert (
        main(
            [
                "plan",
                store.path,
                "--workers",
                "3",
                "--input-steps",
                "6",
                "--horizon",
                "4",
                "--batch-size",
                "8",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    for rank in range(3):
        assert f"\n{rank:>4} " in text
    assert "steps per epoch" in text
    assert (
        main(
            ["plan", store.path, "--workers", "3", "--input-steps", "6", "--horizon", "4", "--json"]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    expected = store_partitions(store, make_plan(700, WindowSpec(6, 4)), 3).to_dict()
    assert out["partitions"] == expected["partitions"]
    assert main(["plan", store.path, "--workers", "9999"]) == 2
    assert "stzarr plan: error:" in capsys.readouterr().err


def _shared_fraction_oracle(plan):
    """Chunks read by two or more ranks over the chunks read, from the time ranges alone."""
    readers = {}
    for p in plan.partitions:
        lo, hi = p.time_range
        for c in range(lo // plan.chunk_time, -(-hi // plan.chunk_time)):
            readers.setdefault(c, set()).add(p.rank)
    return sum(len(r) > 1 for r in readers.values()) / len(readers)


def test_cli_plan_gives_a_plan_with_fewer_chunks_than_ranks(tmp_path, capsys):
    """6,000 steps in 3,226-step chunks: 2 chunks hold the training windows, 3 ranks."""
    path = make_store(tmp_path / "big-chunks.zarr", n_time=6_000, n_node=3, chunk_time=3_226).path
    assert main(["plan", path, "--workers", "3"]) == 0
    captured = capsys.readouterr()
    for rank in range(3):
        assert f"\n{rank:>4} " in captured.out
    assert "stzarr rechunk" in captured.err
    assert main(["plan", path, "--workers", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["chunk_aligned"] is False
    counts = [p["count"] for p in out["partitions"]]
    train = make_plan(6_000, WindowSpec(12, 12)).starts["train"]
    assert sum(counts) == train.size and max(counts) - min(counts) <= 1
    with pytest.warns(SharedChunksWarning, match="% of the chunks read"):
        plan = plan_partitions(
            make_plan(6_000, WindowSpec(12, 12)),
            chunk_time=3_226,
            world_size=3,
            n_node=3,
            n_feature=1,
        )
    assert plan.shared_chunk_fraction == pytest.approx(_shared_fraction_oracle(plan))
    assert out["shared_chunk_fraction"] == pytest.approx(_shared_fraction_oracle(plan))
    assert 0 < plan.shared_chunk_fraction <= 1
    # with 2 ranks the same store stays chunk-aligned and silent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["plan", path, "--workers", "2"]) == 0
