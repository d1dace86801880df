"""Window shuffle (mode ``partitioned``, ``--shuffle window``): a seeded permutation of a rank's own
starts every epoch. Checked against plain set arithmetic on the partition's starts."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stzarr.errors import SpecError
from stzarr.plan.partition import plan_partitions
from stzarr.plan.sampler import WindowShuffleSampler
from stzarr.plan.windows import WindowSpec, make_plan
from stzarr.testing.validators import assert_equal_steps

starts_st = st.builds(
    lambda first, n, stride: first + stride * np.arange(n, dtype=np.int64),
    st.integers(0, 50),
    st.integers(1, 300),
    st.integers(1, 4),
)


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert all(b.dtype == np.int64 for b in batches)
    return np.concatenate(batches)


@settings(max_examples=60, deadline=None)
@given(starts=starts_st, batch=st.integers(1, 40), epoch=st.integers(0, 6), seed=st.integers(0, 9))
def test_every_window_once_per_epoch(starts, batch, epoch, seed):
    sampler = WindowShuffleSampler(starts, batch, rank=1, seed=seed)
    seen = _epoch(sampler, epoch)
    assert seen.size == starts.size
    assert np.array_equal(np.sort(seen), np.sort(starts))
    assert len(sampler) == math.ceil(starts.size / batch)


@settings(max_examples=60, deadline=None)
@given(starts=starts_st, batch=st.integers(1, 40), data=st.data())
def test_fewer_batches_use_every_window_before_repeating(starts, batch, data):
    n_batches = math.ceil(starts.size / batch)
    num = data.draw(st.integers(1, n_batches))
    sampler = WindowShuffleSampler(starts, batch, num_batches=num, seed=4)
    m = min(starts.size, num * batch)
    epochs = math.ceil(starts.size / m)
    seen = np.concatenate([_epoch(sampler, e) for e in range(epochs)])
    assert seen.size == epochs * m
    # the first floor(n / m) epochs never repeat a window; ceil(n / m) epochs cover all of them
    head = seen[: (starts.size // m) * m]
    assert np.unique(head).size == head.size
    assert set(seen.tolist()) == set(starts.tolist())
    assert all(b.size == batch for b in sampler) or num == n_batches


def test_permutes_within_the_partition_only_and_mixes_it():
    spec = WindowSpec(12, 12)
    plan = make_plan(6_000, spec, train=0.7, val=0.1)
    parts = plan_partitions(plan, chunk_time=288, world_size=3, n_node=5, n_feature=1)
    steps = parts.steps_per_epoch(32)
    samplers = [
        WindowShuffleSampler(parts.rank_starts(r), 32, rank=r, seed=7, num_batches=steps)
        for r in range(3)
    ]
    assert_equal_steps(samplers)
    checked = 0
    for epoch in range(3):
        seen = [_epoch(s, epoch) for s in samplers]
        for r, mine in enumerate(seen):
            own = set(parts.rank_starts(r).tolist())
            assert set(mine.tolist()) <= own  # never a window of another rank
            assert np.unique(mine).size == mine.size
            # windows, not fixed runs of consecutive windows: a batch spans most of the partition
            first = mine[:32]
            assert first.max() - first.min() > len(own) // 2
            checked += 1
    assert checked == 9


def test_reproducible_from_the_seed_and_different_across_epochs_ranks_seeds():
    starts = np.arange(100, 1100, dtype=np.int64)
    a = WindowShuffleSampler(starts, 64, rank=0, seed=3)
    b = WindowShuffleSampler(starts, 64, rank=0, seed=3)
    for epoch in (0, 1, 5):
        assert np.array_equal(_epoch(a, epoch), _epoch(b, epoch))
    assert not np.array_equal(_epoch(a, 0), _epoch(a, 1))
    assert not np.array_equal(_epoch(a, 0), _epoch(WindowShuffleSampler(starts, 64, seed=4), 0))
    assert not np.array_equal(
        _epoch(a, 0), _epoch(WindowShuffleSampler(starts, 64, rank=1, seed=3), 0)
    )
    # shuffle=False keeps time order
    assert np.array_equal(_epoch(WindowShuffleSampler(starts, 64, shuffle=False), 2), starts)


def test_rejects_bad_arguments():
    with pytest.raises(SpecError):
        WindowShuffleSampler(np.arange(10), 4, num_batches=4)
    with pytest.raises(SpecError):
        WindowShuffleSampler(np.arange(10), 0)
    with pytest.raises(SpecError):
        WindowShuffleSampler(np.zeros(0, np.int64), 4)
