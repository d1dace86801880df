"""Reusable validators and small fixtures for stzarr's tests (and for users testing their own
pipelines). Validators raise ``AssertionError`` with a message naming the first difference.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.storage import LocalStore

from stzarr.store.format import Store, write_store

if TYPE_CHECKING:
    from stzarr.plan.partition import PartitionPlan


def make_series(
    n_time: int,
    n_node: int,
    n_feature: int = 1,
    *,
    missing_fraction: float = 0.05,
    seed: int = 0,
) -> np.ndarray:
    """A small float32 ``(time, node, feature)`` series with a daily cycle and zeros as missing.

    Values are positive (speed-like, around 60) so that 0 unambiguously marks a missing reading.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n_time)[:, None, None]
    base = 60 + 5 * rng.standard_normal((1, n_node, n_feature))
    daily = 10 * np.sin(2 * np.pi * t / 288.0)
    data = base + daily + rng.standard_normal((n_time, n_node, n_feature))
    data[rng.random(data.shape) < missing_fraction] = 0.0
    return data.astype(np.float32)


def make_series_with_nans() -> np.ndarray:
    """A ``(300, 6, 3)`` :func:`make_series` with 10 % zeros and about 3 % NaN readings: both
    kinds of missing value, for statistics and standardisation tests."""
    data = make_series(300, 6, 3, missing_fraction=0.1, seed=4)
    data[np.random.default_rng(1).random(data.shape) < 0.03] = np.nan
    return data


def make_store(
    path: str | os.PathLike[str],
    n_time: int = 600,
    n_node: int = 7,
    n_feature: int = 1,
    *,
    chunk_time: int | None = 64,
    shard_time: int | None = None,
    missing_fraction: float = 0.05,
    seed: int = 0,
    start: str = "2012-03-01",
    freq_minutes: int = 5,
) -> Store:
    """Write a small synthetic store (ring graph, 5-minute steps) for tests and return it opened."""
    data = make_series(n_time, n_node, n_feature, missing_fraction=missing_fraction, seed=seed)
    time = np.datetime64(start, "ns") + np.arange(n_time) * np.timedelta64(freq_minutes, "m")
    src = np.arange(n_node)
    edge_index = np.stack(
        [np.concatenate([src, src]), np.concatenate([(src + 1) % n_node, (src - 1) % n_node])]
    )
    edge_weight = np.linspace(0.2, 1.0, edge_index.shape[1], dtype=np.float32)
    return write_store(
        path,
        data,
        time=time,
        node_ids=[f"{400000 + i}" for i in range(n_node)],
        feature_names=["speed"] + [f"f{i}" for i in range(1, n_feature)],
        edge_index=edge_index,
        edge_weight=edge_weight,
        attrs={
            "missing_value": "zero",
            "sampling_interval_s": freq_minutes * 60,
            "source": {"file": "synthetic", "sha256": None, "key": None, "format": "testing"},
        },
        chunk_time=chunk_time,
        shard_time=shard_time,
    )


# -- distributed: partitions, samplers, chunk reads -------------------------------------------


def assert_partition_covers(plan: PartitionPlan) -> None:
    """Check that a partition plan's ranks own disjoint, contiguous, chunk-aligned ranges that
    together cover every start of the split exactly once, and that each rank's time range and
    chunk range are exactly what its starts read (own range plus the ``span - 1`` halo).
    Chunk alignment is checked only for plans that claim it (``plan.chunk_aligned``)."""
    starts = np.asarray(plan.starts)
    owned = [plan.rank_starts(r) for r in range(plan.world_size)]
    got = np.concatenate(owned)
    assert got.size == starts.size and np.array_equal(got, starts), (
        f"ranks own {got.size} starts, the split has {starts.size} (or their order differs)"
    )
    assert np.unique(got).size == got.size, "a start is owned twice"
    edge = 0
    for r, (part, mine) in enumerate(zip(plan.partitions, owned, strict=True)):
        assert part.rank == r, f"partition {r} says rank {part.rank}"
        assert part.index_range[0] == edge, f"rank {r} does not start where rank {r - 1} ends"
        edge = part.index_range[1]
        assert mine.size == part.count > 0, f"rank {r} owns {mine.size} starts, says {part.count}"
        assert (part.first_start, part.last_start) == (int(mine[0]), int(mine[-1])), (
            f"rank {r}: first/last start disagree with its starts"
        )
        lo, hi = int(mine.min()), int(mine.max()) + plan.spec.span
        assert part.time_range == (lo, hi), f"rank {r} reads {part.time_range}, needs {(lo, hi)}"
        c0, c1 = lo // plan.chunk_time, -(-hi // plan.chunk_time)
        assert part.chunk_range == (c0, c1), f"rank {r} chunks {part.chunk_range}, not {(c0, c1)}"
        if r and plan.chunk_aligned:
            prev = owned[r - 1][-1] // plan.chunk_time
            assert prev < mine[0] // plan.chunk_time, (
                f"ranks {r - 1} and {r} both own starts in time chunk {prev}: not chunk-aligned"
            )
    assert edge == starts.size, f"the last rank ends at {edge}, not {starts.size}"


def assert_partition_balanced(plan: PartitionPlan) -> None:
    """Check that every rank's count is within one chunk's worth of windows of ``n / W``."""
    starts = np.asarray(plan.starts)
    per_chunk = int(np.bincount(starts // plan.chunk_time).max())
    ideal = starts.size / plan.world_size
    for part in plan.partitions:
        assert abs(part.count - ideal) <= per_chunk, (
            f"rank {part.rank} owns {part.count} windows, ideal {ideal:.1f}, one chunk holds "
            f"up to {per_chunk}"
        )


def assert_equal_steps(samplers: Sequence[Iterable[np.ndarray]]) -> None:
    """Check that every rank's sampler yields the same number of batches as its ``len``."""
    counts = [sum(1 for _ in s) for s in samplers]
    lens = [len(s) for s in samplers]  # type: ignore[arg-type]
    assert counts == lens, f"samplers yield {counts} batches but say {lens}"
    assert len(set(counts)) <= 1, f"ranks would run different numbers of steps: {counts}"


@contextmanager
def record_reads() -> Iterator[list[str]]:
    """Record the keys of every object read from local Zarr stores inside the block.

    Patches ``zarr.storage.LocalStore.get`` and ``get_partial_values`` (this process only); the
    yielded list fills as reads happen. See :func:`time_blocks_read`. Only zarr-python's own
    codec pipeline reads through ``LocalStore``: open the store under it
    (``stzarr.configure_io("zarr")``); the ``zarrs`` pipeline reads files natively.
    """
    keys: list[str] = []
    get, get_partial = LocalStore.get, LocalStore.get_partial_values

    async def recording_get(self: LocalStore, key: str, *args: Any, **kwargs: Any) -> Any:
        keys.append(key)
        return await get(self, key, *args, **kwargs)

    async def recording_get_partial(self: LocalStore, prototype: Any, key_ranges: Any) -> Any:
        key_ranges = list(key_ranges)
        keys.extend(k for k, _ in key_ranges)
        return await get_partial(self, prototype, key_ranges)

    LocalStore.get = recording_get  # type: ignore[method-assign]
    LocalStore.get_partial_values = recording_get_partial  # type: ignore[method-assign]
    try:
        yield keys
    finally:
        LocalStore.get = get  # type: ignore[method-assign]
        LocalStore.get_partial_values = get_partial  # type: ignore[method-assign]


def time_blocks_read(keys: Iterable[str], array: str = "data") -> set[int]:
    """Time-chunk indices (shard indices for sharded arrays) among recorded keys of ``array``."""
    prefix = f"{array}/c/"
    return {int(k[len(prefix) :].split("/")[0]) for k in keys if k.startswith(prefix)}


# -- index-batching: windows and batches -------------------------------------------------------


def _bits(t: Any) -> Any:
    """A tensor's bytes as an integer tensor (compares NaN payloads too)."""
    import torch

    return t.detach().cpu().contiguous().view(-1).view(torch.uint8)


def assert_batches_equal(a: Sequence[Any], b: Sequence[Any], *, what: str = "batch") -> None:
    """Check that two batches (tuples of tensors, e.g. ``(x, y)`` or ``(x, y, mask)``) are
    byte-identical: same length, dtypes, shapes and bytes (NaN compares equal to the same NaN)."""
    import torch

    assert len(a) == len(b), f"{what}: {len(a)} tensors vs {len(b)}"
    for i, (p, q) in enumerate(zip(a, b, strict=True)):
        assert p.dtype == q.dtype, f"{what}[{i}]: dtype {p.dtype} vs {q.dtype}"
        assert p.shape == q.shape, f"{what}[{i}]: shape {tuple(p.shape)} vs {tuple(q.shape)}"
        if not torch.equal(_bits(p), _bits(q)):
            diff = (p.detach().cpu() != q.detach().cpu()).nonzero()
            first = tuple(diff[0].tolist()) if len(diff) else "(NaN payload)"
            raise AssertionError(f"{what}[{i}]: bytes differ, first at index {first}")


def assert_loaders_equal(a: Iterable[Any], b: Iterable[Any]) -> int:
    """Check that two loaders yield the same number of byte-identical batches; return it."""
    from itertools import zip_longest

    n = 0
    end = object()
    for p, q in zip_longest(a, b, fillvalue=end):
        assert p is not end and q is not end, f"loaders differ in length after {n} batches"
        assert_batches_equal(p, q, what=f"batch {n}")
        n += 1
    return n


def assert_windows_equal(
    x: Any,
    y: Any,
    series: np.ndarray,
    starts: Sequence[int] | np.ndarray,
    input_steps: int,
    *,
    offset: int = 0,
    input_features: Sequence[int] | None = None,
    target_features: Sequence[int] | None = None,
) -> None:
    """Check a batch against the windows of a ``(t, n, f)`` series it should have been cut from.

    ``x[i]``'s first ``len(input_features)`` channels must equal
    ``series[s - offset : s - offset + input_steps, :, input_features]`` byte for byte, and
    ``y[i]`` the following ``y.shape[1]`` steps of ``target_features`` (extra channels of ``x``,
    such as calendar features, are not checked).
    """
    series = np.asarray(series)
    n_f = series.shape[2]
    in_f = list(range(n_f)) if input_features is None else list(input_features)
    out_f = list(range(n_f)) if target_features is None else list(target_features)
    xs = np.asarray(x.detach().cpu()) if hasattr(x, "detach") else np.asarray(x)
    ys = np.asarray(y.detach().cpu()) if hasattr(y, "detach") else np.asarray(y)
    starts = np.asarray(starts, dtype=np.int64)
    assert xs.shape[0] == ys.shape[0] == starts.size, (
        f"batch of {xs.shape[0]} x / {ys.shape[0]} y for {starts.size} starts"
    )
    horizon = ys.shape[1]
    for i, s in enumerate(starts - offset):
        want_x = series[s : s + input_steps][..., in_f]
        want_y = series[s + input_steps : s + input_steps + horizon][..., out_f]
        got_x = xs[i, ..., : len(in_f)]
        assert got_x.shape == want_x.shape, f"sample {i}: x shape {got_x.shape} vs {want_x.shape}"
        assert ys[i].shape == want_y.shape, f"sample {i}: y shape {ys[i].shape} vs {want_y.shape}"
        assert got_x.tobytes() == want_x.tobytes(), f"sample {i} (start {s + offset}): x differs"
        assert ys[i].tobytes() == want_y.tobytes(), f"sample {i} (start {s + offset}): y differs"


def window_plan_args(max_steps: int = 12, max_time: int = 600) -> Any:
    """Hypothesis strategy of ``(n_time, WindowSpec, train, val, cross_splits)`` for which every
    split holds at least one full window (so :func:`stzarr.make_plan` succeeds).

    Needs ``hypothesis`` (a test dependency), imported when called.
    """
    from hypothesis import strategies as st

    from stzarr.plan.windows import WindowSpec

    @st.composite
    def args(draw: Any) -> tuple[int, WindowSpec, float, float, bool]:
        spec = WindowSpec(
            draw(st.integers(1, max_steps)),
            draw(st.integers(1, max_steps)),
            draw(st.integers(1, 5)),
        )
        n_time = draw(st.integers(spec.span * 12, max(spec.span * 12, max_time)))
        train = draw(st.floats(0.5, 0.75))
        val = draw(st.floats(0.1, 0.9 - train))
        return n_time, spec, train, val, draw(st.booleans())

    return args()


# -- conversion: stores against their sources --------------------------------------------------


def assert_store_matches_source(
    store: Store,
    values: np.ndarray,
    time: np.ndarray,
    node_ids: Sequence[object],
    feature_names: Sequence[str] | None = None,
) -> None:
    """Check that a converted store holds exactly the source: every value (as float32; NaN and
    infinities in the source must be NaN in the store), every timestamp and every sensor id (as
    strings, in order)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 2:
        values = values[:, :, None]
    assert store.shape == values.shape, f"store shape {store.shape} vs source {values.shape}"
    want_time = np.asarray(time).astype("datetime64[ns]")
    got_time = store.time.astype("datetime64[ns]")
    bad = np.flatnonzero(got_time != want_time)
    assert bad.size == 0, f"timestamp {bad[0] if bad.size else 0} differs"
    want_ids = [str(v) for v in node_ids]
    assert store.node_ids == want_ids, "node ids differ from the source columns"
    if feature_names is not None:
        assert store.feature_names == list(feature_names), f"features {store.feature_names}"
    want = values.astype(np.float32)
    want[~np.isfinite(values)] = np.nan
    got = store.read(0, store.shape[0])
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    if not same.all():
        t, n, f = np.argwhere(~same)[0]
        raise AssertionError(
            f"value at (t={t}, node={n}, f={f}): store {got[t, n, f]} vs source {want[t, n, f]}"
        )


def assert_graph_matches_dense(store: Store, adj: np.ndarray) -> None:
    """Check that the store's COO graph is exactly the non-zeros of ``adj`` (given in the store's
    node order), weights compared as float32."""
    rows, cols = np.nonzero(np.asarray(adj))
    want = {(int(r), int(c)): np.float32(adj[r, c]) for r, c in zip(rows, cols, strict=True)}
    ei = store.edge_index
    ew = store.edge_weight
    got = {(int(r), int(c)): w for r, c, w in zip(ei[0], ei[1], ew, strict=True)}
    assert len(got) == ei.shape[1], "duplicate edges in the store"
    missing = sorted(set(want) - set(got))[:3]
    extra = sorted(set(got) - set(want))[:3]
    assert not missing and not extra, f"edges missing {missing}, unexpected {extra}"
    for edge, weight in want.items():
        assert got[edge] == weight, f"edge {edge}: weight {got[edge]} vs {weight}"
