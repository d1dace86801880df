"""The streamed schedule is a sampler of the same protocol as the resident ones: it passes the
conformance suite, and its load requests name the block that holds every window."""

import math

import numpy as np

from stzarr.errors import SpecError
from stzarr.plan.partition import plan_partitions
from stzarr.plan.stream import StreamSampler, plan_stream, rank_seed
from stzarr.plan.windows import WindowSpec, make_plan
from stzarr.testing.samplers import SamplerCase, SamplerTests

RNG_CASES = 12


def _stream(starts, spec, *, chunk_time, batch_size, budget_steps, pool=2, prefetch=1):
    return plan_stream(
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


def _random_plans(seed):
    """Streams of a rank's partition under budgets that force several blocks."""
    rng = np.random.default_rng(seed)
    drawn = 0
    while drawn < RNG_CASES:
        n_time, chunk = int(rng.integers(300, 901)), int(rng.integers(8, 41))
        world, batch = int(rng.integers(1, 4)), int(rng.integers(1, 17))
        spec = WindowSpec(6, 4, int(rng.integers(1, 3)))
        windows = make_plan(n_time, spec)
        try:
            parts = plan_partitions(
                windows, chunk_time=chunk, world_size=world, n_node=2, n_feature=1
            )
            streams = [
                _stream(
                    parts.rank_starts(r),
                    spec,
                    chunk_time=chunk,
                    batch_size=batch,
                    budget_steps=int(rng.integers(6, 12)) * chunk,
                    pool=int(rng.integers(1, 4)),
                )
                for r in range(world)
            ]
        except SpecError:
            continue  # fewer windows than ranks, or a budget below one block
        drawn += 1
        yield windows, parts, streams, batch


class TestStreamedScheduleConforms(SamplerTests):
    """Every window once per epoch, ranks disjoint, reproducible from the seed: the promises of
    the resident samplers, with every window of the rank's partition (``num_batches=None``)."""

    def cases(self):
        for windows, parts, streams, _ in _random_plans(21):
            counts = {math.ceil(s.starts.size / s.batch_size) for s in streams}
            if len(counts) > 1:
                continue  # ranks with unequal batch counts: see the common-steps suite

            def make(rank, seed, streams=streams):
                return StreamSampler(streams[rank], seed=rank_seed(seed, rank))

            yield SamplerCase(make, windows.starts["train"], parts.world_size)


class TestStreamedCommonStepsConform(SamplerTests):
    """Partitioned ranks stream the partition's common steps per epoch. Unlike the resident
    partitioned samplers, which rotate the windows they leave out, the streamed schedule leaves
    out windows at random (its documented semantics), so no coverage over epochs is promised."""

    def cases(self):
        for windows, parts, streams, batch in _random_plans(22):
            steps = parts.steps_per_epoch(batch)

            def make(rank, seed, streams=streams, steps=steps):
                return StreamSampler(streams[rank], seed=rank_seed(seed, rank), num_batches=steps)

            covers = all(s.starts.size <= steps * batch for s in streams)
            yield SamplerCase(
                make,
                windows.starts["train"],
                parts.world_size,
                coverage_epochs=1 if covers else None,
            )


def test_requests_name_the_block_that_holds_each_window():
    starts = np.arange(0, 600, dtype=np.int64)
    spec = WindowSpec(6, 4)
    plan = _stream(starts, spec, chunk_time=16, batch_size=8, budget_steps=160)
    assert plan.n_blocks > 2
    sampler = StreamSampler(plan, seed=5)
    sampler.set_epoch(1)
    seen = 0
    for request in sampler.requests():
        for block, part in request.parts():
            lo, hi = plan.read_ranges[block]
            # the oracle: the block's read range holds every step of the window
            assert (part >= lo).all() and (part + spec.span <= hi).all()
            seen += part.size
    assert seen == starts.size
    ordered = StreamSampler(plan, shuffle=False)
    np.testing.assert_array_equal(np.concatenate(list(ordered)), starts)
