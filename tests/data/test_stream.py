import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stzarr import SpecError
from stzarr.data.batcher import SeriesBatcher
from stzarr.data.contract import BatchContract
from stzarr.data.streaming import StreamingLoader
from stzarr.plan.partition import store_partitions
from stzarr.plan.stream import plan_stream
from stzarr.plan.windows import WindowSpec, make_plan
from stzarr.store.stats import compute_stats
from stzarr.testing.validators import make_store


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    store = make_store(
        tmp_path_factory.mktemp("stream") / "s.zarr",
        n_time=900,
        n_node=6,
        n_feature=2,
        chunk_time=16,
    )
    spec = WindowSpec(12, 12)
    plan = make_plan(store.shape[0], spec)
    stats = compute_stats(store, bounds=plan.bounds["train"])
    return store, spec, plan, stats


PLAIN = BatchContract(time_of_day=False, fill_missing=False)
"""Batches without calendar channels or fill, as the references these tests build."""


def _epoch(loader, epoch):
    starts, xs, ys = [], [], []
    for s, x, y, _ in loader.batches(epoch):
        starts.append(s)
        xs.append(x)
        ys.append(y)
    return np.concatenate(starts), torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_stream_yields_each_window_once_with_in_memory_samples(small, world_size):
    store, _, plan, stats = small
    parts = store_partitions(store, plan, world_size)
    for rank in range(world_size):
        loader = StreamingLoader.from_partition(
            store,
            parts,
            rank,
            stats,
            batch_size=8,
            max_memory=70_000,
            device="cpu",
            contract=BatchContract(time_of_day=True, fill_missing=False),
            num_batches=None,  # every window of the rank (not the common steps per epoch)
        )
        assert loader.plan.n_blocks > 1  # the budget forces real streaming
        starts, x, y = _epoch(loader, epoch=1)
        order = np.argsort(starts, kind="stable")
        own = parts.rank_starts(rank)
        np.testing.assert_array_equal(starts[order], own)  # every window exactly once
        assert len(loader) == -(-own.size // 8)
        ref = SeriesBatcher.from_store(
            store,
            stats,
            plan.spec,
            time_range=parts.partitions[rank].time_range,
            device="cpu",
            time_of_day=True,
        )
        rx, ry = ref.batch(own)
        assert x.dtype == rx.dtype and y.dtype == ry.dtype
        assert torch.equal(x[order], rx) and torch.equal(y[order], ry)  # byte-identical


def test_stream_masks_and_feature_selection_match_in_memory(small):
    store, spec, plan, stats = small
    starts = plan.starts["val"]
    kwargs = {"input_features": ["speed"], "target_features": [0], "fill_missing": True}
    loader = StreamingLoader.from_starts(
        store,
        stats,
        spec,
        starts,
        batch_size=5,
        max_memory=26_000,
        device="cpu",
        contract=BatchContract(**kwargs, time_of_day=False),
    )
    assert loader.plan.n_blocks > 1
    ref = SeriesBatcher.from_store(store, stats, spec, device="cpu", **kwargs)
    seen = []
    for s, x, y, mask in loader.batches(0):
        rx, ry, rmask = ref.batch_masked(s)
        assert torch.equal(x, rx) and torch.equal(y, ry) and torch.equal(mask, rmask)
        seen.append(s)
    assert len(seen) == len(loader) == -(-starts.size // 5)
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), starts)


def test_batch_shuffle_is_reproducible_with_same_seed_and_differs_across_epochs(small):
    store, spec, plan, stats = small

    def make(seed):
        return StreamingLoader.from_starts(
            store,
            stats,
            spec,
            plan.starts["train"],
            batch_size=8,
            max_memory=90_000,
            seed=seed,
            device="cpu",
            contract=PLAIN,
        )

    a, b, c = make(7), make(7), make(8)
    s0, x0, _ = _epoch(a, 0)
    s0b, x0b, _ = _epoch(b, 0)
    np.testing.assert_array_equal(s0, s0b)
    assert torch.equal(x0, x0b)
    a.set_epoch(1)
    s1 = np.concatenate([s for s, *_ in a.batches()])
    assert not np.array_equal(s0, s1)
    assert not np.array_equal(s0, np.concatenate([s for s, *_ in c.batches(0)]))
    # batches come mostly from one block each, and consecutive batches interleave the blocks
    sched = a.schedule(0)
    owners = np.searchsorted(a.plan.starts[a.plan.block_edges[1:-1]], sched.starts, "right")
    per_batch = [np.unique(owners[i * 8 : (i + 1) * 8]) for i in range(sched.n_batches)]
    assert sum(b.size > 1 for b in per_batch) <= 2 * a.plan.n_blocks
    firsts = np.array([b[0] for b in per_batch])
    switches = np.count_nonzero(np.diff(firsts))
    assert switches > 2 * a.plan.n_blocks  # not one block after the other


def test_tiny_budget_is_respected(tmp_path):
    store = make_store(tmp_path / "s.zarr", n_time=2400, n_node=250, chunk_time=24)
    spec = WindowSpec(12, 12)
    plan = make_plan(store.shape[0], spec)
    stats = compute_stats(store, bounds=plan.bounds["train"])
    budget = 1_500_000  # the train split alone is 1.7 MB
    loader = StreamingLoader.from_starts(
        store,
        stats,
        spec,
        plan.starts["train"],
        batch_size=4,
        max_memory=budget,
        device="cpu",
        contract=PLAIN,
    )
    assert loader.plan.memory_bound <= budget
    assert loader.plan.n_blocks >= 4
    store.read(0, 1)  # warm zarr's metadata caches before tracing
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        n = sum(1 for _ in loader)
        traced_peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert n == len(loader)
    counters = loader.counters
    assert 0 < counters.peak_resident_bytes <= loader.plan.resident_limit
    assert counters.resident_bytes == 0
    assert counters.blocks_loaded == loader.plan.n_blocks
    # NumPy and zarr buffers (blocks, decompression) are traced; batches are torch tensors
    assert traced_peak <= budget


def test_budget_too_small_is_a_clear_error(small):
    store, spec, plan, stats = small
    with pytest.raises(SpecError, match=r"max_memory .* too small"):
        StreamingLoader.from_starts(
            store,
            stats,
            spec,
            plan.starts["train"],
            batch_size=8,
            max_memory=20_000,
            device="cpu",
            contract=PLAIN,
        )


def test_stopping_early_releases_blocks(small):
    store, spec, plan, stats = small
    loader = StreamingLoader.from_starts(
        store,
        stats,
        spec,
        plan.starts["train"],
        batch_size=8,
        max_memory=90_000,
        device="cpu",
        contract=PLAIN,
    )
    it = loader.batches(0)
    for _ in range(3):
        next(it)
    assert loader.counters.resident_bytes > 0
    it.close()
    assert loader.counters.resident_bytes == 0


def test_unbounded_budget_is_one_block(small):
    store, spec, plan, stats = small
    loader = StreamingLoader.from_starts(
        store,
        stats,
        spec,
        plan.starts["train"],
        batch_size=8,
        max_memory=None,
        device="cpu",
        contract=PLAIN,
    )
    assert loader.plan.n_blocks == 1
    assert tuple(loader.plan.read_ranges[0]) == plan.split_read_range("train")


@settings(max_examples=60, deadline=None)
@given(
    first=st.integers(0, 50),
    n=st.integers(1, 600),
    stride=st.integers(1, 3),
    input_steps=st.integers(1, 12),
    horizon=st.integers(1, 12),
    chunk_time=st.integers(1, 40),
    batch_size=st.integers(1, 16),
    pool=st.integers(1, 3),
    prefetch=st.integers(1, 2),
    budget_steps=st.integers(40, 800),
    epoch=st.integers(0, 3),
)
def test_plan_covers_starts_with_bounded_resident_blocks(
    first,
    n,
    stride,
    input_steps,
    horizon,
    chunk_time,
    batch_size,
    pool,
    prefetch,
    budget_steps,
    epoch,
):
    spec = WindowSpec(input_steps, horizon, stride)
    starts = first + stride * np.arange(n, dtype=np.int64)
    try:
        plan = plan_stream(
            starts,
            spec,
            chunk_time=chunk_time,
            step_bytes=10,
            batch_size=batch_size,
            batch_bytes=7,
            max_memory=budget_steps * 10,
            pool=pool,
            prefetch=prefetch,
        )
    except SpecError as exc:
        assert "too small" in str(exc)
        assume(False)  # counted by hypothesis: too many of these fail the health check
    assert plan.memory_bound <= budget_steps * 10
    # blocks partition the starts, are chunk-aligned and read exactly their windows + halo
    assert plan.block_edges[0] == 0 and plan.block_edges[-1] == n
    chunks = [plan.block_starts(b) // chunk_time for b in range(plan.n_blocks)]
    for b in range(plan.n_blocks - 1):
        assert chunks[b].max() < chunks[b + 1].min()
    for b in range(plan.n_blocks):
        own = plan.block_starts(b)
        assert own.size > 0
        assert tuple(plan.read_ranges[b]) == (own[0], own[-1] + spec.span)
    sched = plan.schedule(epoch, seed=1)
    np.testing.assert_array_equal(np.sort(sched.starts), starts)
    assert sched.alive().max() <= plan.capacity
    # the loader loads blocks in block_order: each is needed no earlier than the previous one
    assert np.all(np.diff(sched.first_batch[sched.block_order]) >= 0)


def test_loader_budget_subtracts_what_the_process_holds():
    from stzarr.monitor import current_rss, loader_budget

    rss = current_rss()
    left = loader_budget(rss + 500 * 2**20, reserve=100 * 2**20)
    assert 350 * 2**20 < left <= 400 * 2**20  # RSS may have grown a little meanwhile
    with pytest.raises(SpecError, match="already used"):
        loader_budget(rss // 2)


def test_partition_ranks_run_the_same_steps_without_repeating_windows(small):
    store, _, plan, stats = small
    parts = store_partitions(store, plan, 3)
    steps = parts.steps_per_epoch(8)
    counts = [p.count for p in parts.partitions]
    assert len(set(counts)) > 1  # ranks own different numbers of windows
    for rank in range(3):
        loader = StreamingLoader.from_partition(
            store,
            parts,
            rank,
            stats,
            batch_size=8,
            max_memory=70_000,
            device="cpu",
            contract=PLAIN,
        )
        assert len(loader) == steps
        seen = []
        for epoch in range(2):
            starts = np.concatenate([s for s, *_ in loader.batches(epoch)])
            assert starts.size == min(steps * 8, counts[rank])
            assert np.unique(starts).size == starts.size
            assert np.isin(starts, parts.rank_starts(rank)).all()
            seen.append(set(starts.tolist()))
        assert loader.counters.resident_bytes == 0
        if steps * 8 < counts[rank]:
            assert seen[0] != seen[1]  # the windows left out change with the epoch


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_stream_on_the_device_matches_the_cpu(small):
    store, spec, plan, stats = small
    out = []
    for device in ("cpu", "cuda"):
        loader = StreamingLoader.from_starts(
            store,
            stats,
            spec,
            plan.starts["train"],
            batch_size=8,
            max_memory=90_000,
            device=device,
            contract=BatchContract(time_of_day=True, fill_missing=False),
            seed=1,
        )
        out.append([(s, x.cpu(), y.cpu()) for s, x, y, _ in loader.batches(0)])
    assert len(out[0]) == len(out[1]) == len(loader) > 0
    for (s0, x0, y0), (s1, x1, y1) in zip(*out, strict=True):
        np.testing.assert_array_equal(s0, s1)
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
