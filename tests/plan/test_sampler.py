import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset

from stzarr.errors import SpecError
from stzarr.plan.partition import plan_partitions
from stzarr.plan.rank import DISTRIBUTED_MODES, MODES, plan_rank
from stzarr.plan.sampler import BatchShuffleSampler, GlobalShuffleSampler
from stzarr.plan.windows import WindowSpec, make_plan
from stzarr.testing.samplers import SamplerCase, SamplerTests
from stzarr.testing.validators import assert_equal_steps

starts_st = st.builds(
    lambda first, n, stride: first + stride * np.arange(n, dtype=np.int64),
    st.integers(0, 50),
    st.integers(1, 300),
    st.integers(1, 4),
)


def epoch_of(samplers, epoch):
    for s in samplers:
        s.set_epoch(epoch)
    return [list(s) for s in samplers]


@settings(max_examples=60, deadline=None)
@given(starts=starts_st, world=st.integers(1, 6), batch=st.integers(1, 40), epoch=st.integers(0, 5))
def test_global_shuffle_covers_all_windows_each_epoch(starts, world, batch, epoch):
    samplers = [
        GlobalShuffleSampler(starts, batch, world_size=world, rank=r, seed=3) for r in range(world)
    ]
    per_rank = epoch_of(samplers, epoch)
    seen = np.concatenate([b for batches in per_rank for b in batches])
    assert set(seen.tolist()) == set(starts.tolist())
    # padding repeats fewer than world_size starts, so every rank gets the same count
    assert seen.size == world * math.ceil(starts.size / world)
    assert seen.size - starts.size < world
    assert_equal_steps(samplers)
    assert all(b.dtype == np.int64 for batches in per_rank for b in batches)


@settings(max_examples=40, deadline=None)
@given(starts=starts_st, world=st.integers(1, 6), batch=st.integers(1, 40))
def test_global_shuffle_drop_last_uses_each_window_at_most_once(starts, world, batch):
    if starts.size < world:
        with pytest.raises(SpecError):
            GlobalShuffleSampler(starts, batch, world_size=world, drop_last=True)
        return
    samplers = [
        GlobalShuffleSampler(starts, batch, world_size=world, rank=r, drop_last=True)
        for r in range(world)
    ]
    seen = np.concatenate([b for s in samplers for b in s] or [np.zeros(0, np.int64)])
    assert np.unique(seen).size == seen.size
    assert all(b.size == batch for s in samplers for b in s)
    assert_equal_steps(samplers)


def test_global_step_batches_equal_one_process_with_world_times_batch():
    starts = np.arange(10, 130)
    world, batch = 3, 8
    ranks = [
        list(GlobalShuffleSampler(starts, batch, world_size=world, rank=r, seed=1))
        for r in range(world)
    ]
    single = list(GlobalShuffleSampler(starts, batch * world, seed=1))
    for k, global_batch in enumerate(single):
        step = np.concatenate([ranks[r][k] for r in range(world)])
        assert sorted(step.tolist()) == sorted(global_batch.tolist())


def test_global_shuffle_is_reproducible_with_same_seed_and_differs_between_epochs():
    starts = np.arange(500)
    a = GlobalShuffleSampler(starts, 16, world_size=2, rank=1, seed=7)
    b = GlobalShuffleSampler(starts, 16, world_size=2, rank=1, seed=7)
    other_seed = GlobalShuffleSampler(starts, 16, world_size=2, rank=1, seed=8)
    for epoch in range(3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        assert np.array_equal(np.concatenate(list(a)), np.concatenate(list(b)))
    a.set_epoch(0)
    e0 = np.concatenate(list(a))
    a.set_epoch(1)
    assert not np.array_equal(e0, np.concatenate(list(a)))
    assert not np.array_equal(e0, np.concatenate(list(other_seed)))
    unshuffled = GlobalShuffleSampler(starts, 16, world_size=2, rank=1, shuffle=False)
    assert np.array_equal(np.concatenate(list(unshuffled)), starts[1::2])


@settings(max_examples=60, deadline=None)
@given(starts=starts_st, batch=st.integers(1, 30), data=st.data())
def test_batch_shuffle_keeps_batch_contents_and_rotates_through_all(starts, batch, data):
    n_batches = math.ceil(starts.size / batch)
    k = data.draw(st.integers(1, n_batches), label="num_batches")
    sampler = BatchShuffleSampler(starts, batch, rank=2, seed=5, num_batches=k)
    fixed = {tuple(starts[i * batch : (i + 1) * batch].tolist()) for i in range(n_batches)}
    used: set[tuple[int, ...]] = set()
    for epoch in range(math.ceil(n_batches / k)):
        sampler.set_epoch(epoch)
        batches = [tuple(b.tolist()) for b in sampler]
        assert len(batches) == len(sampler) == k
        assert len(set(batches)) == k  # no batch twice in an epoch
        assert set(batches) <= fixed  # contents never change, only the order
        used |= set(batches)
    assert used == fixed  # no window is dropped for good


def test_batch_shuffle_order_is_seeded_by_seed_epoch_and_rank():
    starts = np.arange(1000)

    def order(seed, epoch, rank):
        s = BatchShuffleSampler(starts, 10, seed=seed, rank=rank)
        s.set_epoch(epoch)
        return [int(b[0]) for b in s]

    assert order(1, 0, 0) == order(1, 0, 0)
    assert order(1, 0, 0) != order(1, 1, 0)
    assert order(1, 0, 0) != order(1, 0, 1)
    assert order(1, 0, 0) != order(2, 0, 0)
    assert sorted(order(1, 3, 0)) == list(range(0, 1000, 10))
    assert order(1, 0, 0) != sorted(order(1, 0, 0))


class StartDataset(Dataset):
    """One sample per global start: x = series[s : s+3]."""

    def __init__(self, series: torch.Tensor):
        self.series = series

    def __len__(self) -> int:
        return self.series.shape[0]

    def __getitem__(self, start):
        return self.series[int(start) : int(start) + 3]


@pytest.mark.parametrize("kind", ["global", "batch"])
def test_samplers_drive_a_stock_dataloader_as_batch_sampler(kind):
    series = torch.arange(200.0)
    starts = np.arange(5, 150, 2)
    if kind == "global":
        sampler = GlobalShuffleSampler(starts, 7, world_size=2, rank=0, seed=2)
    else:
        sampler = BatchShuffleSampler(starts, 7, seed=2)
    sampler.set_epoch(4)
    loader = DataLoader(StartDataset(series), batch_sampler=sampler)
    got = list(loader)
    expected = list(sampler)
    assert len(got) == len(loader) == len(expected)
    for x, batch in zip(got, expected, strict=True):
        assert torch.equal(x[:, 0], torch.from_numpy(batch).float())


def test_bad_sampler_arguments_are_spec_errors():
    with pytest.raises(SpecError, match="no window starts"):
        GlobalShuffleSampler(np.zeros(0, np.int64), 4)
    with pytest.raises(SpecError, match="rank 2"):
        GlobalShuffleSampler(np.arange(10), 4, world_size=2, rank=2)
    with pytest.raises(SpecError, match="batch_size"):
        BatchShuffleSampler(np.arange(10), 0)
    with pytest.raises(SpecError, match="num_batches"):
        BatchShuffleSampler(np.arange(10), 4, num_batches=4)
    with pytest.raises(SpecError, match="integer"):
        BatchShuffleSampler(np.linspace(0, 1, 5), 2)


# -- the Sampler protocol: every sampler passes the conformance suite ---------------------------

RNG_CASES = 20
"""Random configurations each suite draws (from a fixed seed)."""


def _random_starts(rng):
    first, n, stride = int(rng.integers(0, 51)), int(rng.integers(1, 301)), int(rng.integers(1, 5))
    return first + stride * np.arange(n, dtype=np.int64)


class TestGlobalShuffleConforms(SamplerTests):
    def cases(self):
        rng = np.random.default_rng(11)
        for _ in range(RNG_CASES):
            starts = _random_starts(rng)
            world, batch = int(rng.integers(1, 6)), int(rng.integers(1, 41))

            def make(rank, seed, starts=starts, world=world, batch=batch):
                return GlobalShuffleSampler(starts, batch, world_size=world, rank=rank, seed=seed)

            # padding repeats fewer than world_size windows so that every rank gets the same count
            yield SamplerCase(make, starts, world, max_repeats=world - 1)

    def test_steps_per_rank_are_the_padded_share(self):
        for case in self.cases():
            n, world = case.starts.size, case.world_size
            batch = case.make(0, 0).batch_size
            assert len(case.make(0, 0)) == math.ceil(math.ceil(n / world) / batch)


class TestPartitionedShufflesConform(SamplerTests):
    def cases(self):
        rng = np.random.default_rng(12)
        drawn = 0
        while drawn < RNG_CASES:
            n_time, chunk = int(rng.integers(200, 901)), int(rng.integers(8, 61))
            stride, world = int(rng.integers(1, 4)), int(rng.integers(1, 5))
            batch = int(rng.integers(1, 25))
            plan = make_plan(n_time, WindowSpec(6, 4, stride))
            try:
                parts = plan_partitions(
                    plan, chunk_time=chunk, world_size=world, n_node=2, n_feature=1
                )
            except SpecError:
                continue  # fewer windows than ranks
            drawn += 1
            steps = parts.steps_per_epoch(batch)
            for shuffle in ("window", "batch"):
                # a rank with more batches than the common steps rotates its share
                if shuffle == "window":
                    coverage = max(
                        math.ceil(p.count / min(p.count, steps * batch)) for p in parts.partitions
                    )
                else:
                    coverage = max(
                        math.ceil(math.ceil(p.count / batch) / steps) for p in parts.partitions
                    )

                def make(rank, seed, parts=parts, batch=batch, shuffle=shuffle):
                    return parts.sampler(rank, batch, seed=seed, shuffle=shuffle)

                yield SamplerCase(
                    make,
                    plan.starts["train"],
                    world,
                    epochs=2 * coverage,
                    coverage_epochs=coverage,
                )


class _Layout:  # the store metadata plan_rank reads
    shape = (700, 3, 1)
    chunk_time = 40


class TestRankPlanSamplersConform(SamplerTests):
    def cases(self):
        plan = make_plan(700, WindowSpec(12, 12))
        for mode in MODES:
            world = 3 if mode in DISTRIBUTED_MODES else 1

            def make(rank, seed, mode=mode, world=world):
                return plan_rank(
                    plan, _Layout(), mode=mode, rank=rank, world_size=world, batch_size=16,
                    seed=seed,
                ).sampler()  # fmt: skip

            yield SamplerCase(
                make,
                plan.starts["train"],
                world,
                max_repeats=world - 1 if mode != "partitioned" else 0,
                coverage_epochs=2 if mode == "partitioned" else 1,
                epochs=4,
            )


def test_conformance_suite_catches_broken_samplers():
    starts = np.arange(100, dtype=np.int64)

    class Overlapping(GlobalShuffleSampler):  # every rank takes every window
        def rank_starts(self):
            return self.starts

    class Unseeded(GlobalShuffleSampler):
        def rank_starts(self):
            return np.random.default_rng().permutation(self.starts)

    class Empty(BatchShuffleSampler):
        def __iter__(self):
            return iter(())

    suite = SamplerTests()
    overlapping = SamplerCase(lambda r, s: Overlapping(starts, 8, world_size=2, rank=r), starts, 2)
    with pytest.raises(AssertionError, match=r"ranks share|used twice"):
        suite.check_each_window_once_and_ranks_disjoint(overlapping)
    unseeded = SamplerCase(lambda r, s: Unseeded(starts, 8, seed=s), starts)
    with pytest.raises(AssertionError, match="same seed"):
        suite.check_reproducible_from_the_seed(unseeded)
    empty = SamplerCase(lambda r, s: Empty(starts, 8, seed=s), starts)
    with pytest.raises(AssertionError, match="len"):
        suite.check_yields_len_batches_on_every_rank(empty)
    with pytest.raises(AssertionError, match="never used"):
        suite.check_every_window_covered(empty)
