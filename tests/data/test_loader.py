import pickle
import tracemalloc

import numpy as np
import pytest
import torch

from stzarr import (
    IndexBatchDataset,
    SeriesBatcher,
    SpecError,
    WindowSpec,
    batch_loader,
    compute_stats,
    make_loaders,
    make_plan,
    time_features,
)
from stzarr.data.buffers import BatchBuffers
from stzarr.data.contract import BatchContract
from stzarr.testing.oracles import numpy_standardise
from stzarr.testing.validators import (
    assert_batches_equal,
    assert_loaders_equal,
    assert_windows_equal,
    make_store,
)

SPEC = WindowSpec(6, 3)


@pytest.fixture
def store(tmp_path):
    return make_store(
        tmp_path / "s.zarr", n_time=500, n_node=5, n_feature=2, chunk_time=32, missing_fraction=0.1
    )


@pytest.fixture
def stats(store):
    return compute_stats(store, bounds=(0, 350))


def _standardised(store, stats):
    return numpy_standardise(store.read(0, store.shape[0]), stats, store.missing_value)


def test_batches_are_the_windows_of_one_standardised_copy(store, stats):
    batcher = SeriesBatcher.from_store(store, stats, SPEC, device="cpu")
    z = _standardised(store, stats)
    assert batcher.nbytes == z.nbytes, "the batcher holds exactly one copy of the series"
    starts = np.array([0, 7, 3, 100, 491])
    x, y = batcher.batch(starts)
    assert x.shape == (5, 6, 5, 2) and y.shape == (5, 3, 5, 2)
    assert x.dtype == y.dtype == torch.float32 and x.is_contiguous() and y.is_contiguous()
    assert_windows_equal(x, y, z, starts, SPEC.input_steps)


def test_offset_batcher_matches_the_full_one(store, stats):
    """A batcher over a time range (a rank's partition plus halo, or a stream block) gives the
    same batches for the starts that range holds, and refuses the others."""
    full = SeriesBatcher.from_store(store, stats, SPEC, device="cpu", time_of_day=True)
    part = SeriesBatcher.from_store(
        store, stats, SPEC, device="cpu", time_of_day=True, time_range=(120, 200)
    )
    assert part.time_range == (120, 200)
    starts = np.arange(120, 200 - SPEC.span + 1)
    assert_batches_equal(part.batch_masked(starts), full.batch_masked(starts))
    block = store.read(120, 200)
    arr = SeriesBatcher.from_array(
        block,
        store.time[120:200],
        stats,
        SPEC,
        offset=120,
        missing_value="zero",
        device="cpu",
        time_of_day=True,
    )
    assert_batches_equal(arr.batch(starts), full.batch(starts))
    assert np.array_equal(block, store.read(120, 200)), "from_array copies by default"
    for bad in ([119], [200 - SPEC.span + 1]):
        with pytest.raises(SpecError, match="outside the held time range"):
            part.batch(np.array(bad))


def test_feature_selection_and_calendar_channels(store, stats):
    b = SeriesBatcher.from_store(
        store,
        stats,
        SPEC,
        device="cpu",
        input_features=["f1"],
        target_features=["speed"],
        time_of_day=True,
        day_of_week=True,
    )
    assert b.input_names == ["f1", "time_of_day"] + [
        f"day_of_week_{d}" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    ]
    starts = np.array([10, 300])
    x, y = b.batch(starts)
    assert x.shape == (2, 6, 5, 1 + 1 + 7) and y.shape == (2, 3, 5, 1)
    z = _standardised(store, stats)
    assert_windows_equal(x, y, z, starts, 6, input_features=[1], target_features=[0])
    cal = time_features(store.time, time_of_day=True, day_of_week=True)
    for i, s in enumerate(starts):
        for n in range(5):  # broadcast over nodes, not stored per node
            np.testing.assert_array_equal(x[i, :, n, 1:].numpy(), cal[s : s + 6])
    with pytest.raises(SpecError, match="unknown feature"):
        SeriesBatcher.from_store(store, stats, SPEC, device="cpu", target_features=["volume"])


def test_time_of_day_is_the_fraction_of_the_day():
    t = np.array(
        ["2012-03-01T00:00", "2012-03-01T06:00", "2012-03-04T18:05"], dtype="datetime64[ns]"
    )
    f = time_features(t, time_of_day=True, day_of_week=True)
    np.testing.assert_allclose(f[:, 0], [0.0, 0.25, (18 * 60 + 5) / 1440])
    assert f[:, 1:].argmax(axis=1).tolist() == [3, 3, 6]  # Thursday, Thursday, Sunday


def test_missing_mask_fill_and_inverse(store, stats):
    raw = store.read(0, store.shape[0])
    b = SeriesBatcher.from_store(store, stats, SPEC, device="cpu", target_features=["speed"])
    starts = np.arange(0, 400, 7)
    _, y, mask = b.batch_masked(starts)
    raw_y = raw[(starts + 6)[:, None] + np.arange(3)][..., [0]]
    want = (raw_y == 0) | np.isnan(raw_y)
    assert want.any()
    np.testing.assert_array_equal(mask.numpy(), want)
    np.testing.assert_array_equal(b.missing(y).numpy(), want)
    back = b.inverse(y).numpy()
    np.testing.assert_allclose(back[~want], raw_y[~want], rtol=1e-5)
    filled = SeriesBatcher.from_store(store, stats, SPEC, device="cpu", fill_missing=True)
    fx, fy, fmask = filled.batch_masked(starts)
    assert (fy[fmask] == 0).all() and fmask.any()
    raw_x = raw[starts[:, None] + np.arange(6)]
    assert (fx.numpy()[(raw_x == 0) | np.isnan(raw_x)] == 0).all()


def test_per_node_statistics(store):
    stats = compute_stats(store, bounds=(0, 350), per_node=True)
    b = SeriesBatcher.from_store(store, stats, SPEC, device="cpu")
    x, y, mask = b.batch_masked(np.array([5, 50]))
    assert_windows_equal(x, y, _standardised(store, stats), [5, 50], 6)
    raw = store.read(0, 500)[np.array([11, 56])[:, None] + np.arange(3)]
    np.testing.assert_array_equal(mask.numpy(), raw == 0)


def test_loader_yields_whole_batches_from_one_gather(store, stats, monkeypatch):
    plan = make_plan(500, SPEC)
    batcher = SeriesBatcher.from_store(store, stats, SPEC, device="cpu")
    calls = []
    original = batcher.batch
    monkeypatch.setattr(batcher, "batch", lambda s: calls.append(len(s)) or original(s))
    dataset = IndexBatchDataset(batcher, plan.starts["train"], with_mask=False)
    loader = batch_loader(dataset, 16, shuffle=True)
    batches = list(loader)
    n = plan.count("train")
    assert len(batches) == len(loader) == -(-n // 16)
    assert calls == [16] * (n // 16) + ([n % 16] if n % 16 else []), "one call per batch"
    assert isinstance(batches[0], tuple) and batches[0][0].shape == (16, 6, 5, 2)


def test_shuffle_is_reproducible_with_same_seed_and_covers_each_start_once(store, stats):
    plan = make_plan(500, SPEC)
    batcher = SeriesBatcher.from_store(store, stats, SPEC, device="cpu")

    def order(seed, epochs=2):
        loader = batch_loader(
            IndexBatchDataset(batcher, plan.starts["train"]), 10, shuffle=True, seed=seed
        )
        return [np.concatenate(list(loader.sampler)).tolist() for _ in range(epochs)]

    a, b, c = order(1), order(1), order(2)
    assert a == b, "same seed, same sequence of epochs"
    assert a != c and a[0] != a[1], "another seed or another epoch reorders"
    assert sorted(a[0]) == list(range(plan.count("train")))
    # and the batches themselves follow that order
    loader = batch_loader(
        IndexBatchDataset(batcher, plan.starts["train"]), 10, shuffle=True, seed=1
    )
    x0 = next(iter(loader))[0]
    assert torch.equal(x0, batcher.batch(plan.starts["train"][a[0][:10]])[0])
    fresh = [
        batch_loader(IndexBatchDataset(batcher, plan.starts["train"]), 10, shuffle=True, seed=1)
        for _ in range(2)
    ]
    assert assert_loaders_equal(*fresh) == len(fresh[0])


def test_make_loaders_splits_and_shuffles_train_only(store):
    loaders = make_loaders(
        store,
        SPEC,
        batch_size=32,
        seed=5,
        time_of_day=True,
        target_features=["speed"],
        with_mask=True,
    )
    assert set(loaders.plan.starts) == {"train", "val", "test"}
    val = [b[0] for b in loaders.val]
    first_val = loaders.batcher.batch(loaders.plan.starts["val"][:32])[0]
    assert torch.equal(val[0], first_val), "validation batches come in time order"
    x, y, mask = next(iter(loaders.train))
    assert x.shape[-1] == 3 and y.shape[-1] == 1 and mask.dtype == torch.bool
    assert loaders.stats.key == "time[0:350]/feature"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_mode_gathers_on_the_device_identically(store, stats):
    cpu = SeriesBatcher.from_store(
        store, stats, SPEC, device="cpu", time_of_day=True, target_features=[0]
    )
    gpu = SeriesBatcher.from_store(
        store, stats, SPEC, device="cuda", time_of_day=True, target_features=[0]
    )
    assert gpu.series.is_cuda
    starts = np.arange(0, 480, 5)
    out = gpu.batch_masked(starts)
    assert all(t.is_cuda for t in out)
    assert_batches_equal(out, cpu.batch_masked(starts))
    assert_batches_equal(gpu.batch_masked(torch.as_tensor(starts, device="cuda")), out)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"time_of_day": True, "target_features": ["f1"]},
        {"input_features": [1, 0], "day_of_week": True},
    ],
)
def test_torch_gather_path_equals_numpy_path(store, stats, options):
    """The CPU builds batches with NumPy, devices with torch ops: run the torch path on the CPU
    so that it is checked here too (the CUDA tests compare it on a device)."""
    b = SeriesBatcher.from_store(store, stats, SPEC, device="cpu", **options)
    starts = np.array([3, 77, 200, 450])
    host = b._batch(starts, True, host=True)
    assert_batches_equal(b._batch(starts, True, host=False), host)
    assert_batches_equal(b._batch(torch.from_numpy(starts), True, host=False), host)


# -- layout-aware batch building against an independent NumPy oracle ---------------------------


def _oracle(store, stats, starts, spec, *, in_f, out_f, tod=False, dow=False, fill=False):
    """Batches built with plain NumPy from the raw stored values (no stzarr code): standardise
    in float32, cut the windows, append calendar channels computed from the timestamps."""
    raw = store.array[:]
    missing = (raw == 0) | np.isnan(raw)
    mean, std = stats.mean.astype(np.float32), stats.std.astype(np.float32)
    z = (np.where(np.isnan(raw), np.float32(0), raw) - mean) / std
    t = store.time.astype("datetime64[s]").astype(np.int64)
    cal = []
    if tod:
        cal.append((t % 86_400 / 86_400).astype(np.float32)[:, None])
    if dow:
        cal.append(np.eye(7, dtype=np.float32)[(t // 86_400 + 3) % 7])  # 1970-01-01: Thursday
    t_in, n = spec.input_steps, raw.shape[1]
    xs, ys, masks = [], [], []
    for s in np.asarray(starts):
        x = z[s : s + t_in][..., in_f]
        y = z[s + t_in : s + spec.span][..., out_f]
        mask = missing[s + t_in : s + spec.span][..., out_f]
        if fill:
            x = np.where(missing[s : s + t_in][..., in_f], np.float32(0), x)
            y = np.where(mask, np.float32(0), y)
        parts = [x] + [
            np.broadcast_to(c[s : s + t_in, None, :], (t_in, n, c.shape[1])) for c in cal
        ]
        xs.append(np.concatenate(parts, axis=2))
        ys.append(y)
        masks.append(mask)
    return (
        torch.from_numpy(np.stack(xs)),
        torch.from_numpy(np.stack(ys)),
        torch.from_numpy(np.stack(masks)),
    )


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A store wide enough that one input window (6 steps x 3,000 nodes x 4 B) is above
    PER_WINDOW_MIN_BYTES: batches take the one-block-per-window path without patching."""
    store = make_store(
        tmp_path_factory.mktemp("wide") / "w.zarr",
        n_time=120,
        n_node=3_000,
        n_feature=2,
        chunk_time=16,
        missing_fraction=0.1,
    )
    return store, compute_stats(store, bounds=(0, 80))


OPTIONS = [
    {},
    {"time_of_day": True, "target_features": ["speed"]},
    {"time_of_day": True, "day_of_week": True, "input_features": ["f1"]},
    {"input_features": [1, 0], "time_of_day": True, "fill_missing": True},
    {"fill_missing": True, "target_features": [1, 0]},
]


def _features(store, options, key):
    names = store.feature_names
    return [names.index(f) if isinstance(f, str) else f for f in options.get(key, names)]


@pytest.mark.parametrize("path", ["host", "torch"])
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("layout", ["narrow", "wide"])
def test_batches_equal_the_numpy_oracle_on_every_path(store, stats, wide, layout, options, path):
    """Byte-identical batches (x with calendar channels, y, mask) from the NumPy block-copy
    path, both per window (wide) and per batch (narrow), and from the torch path that devices
    run (here on the CPU), against plain NumPy from the raw values."""
    st, stt = (store, stats) if layout == "narrow" else wide
    b = SeriesBatcher.from_store(st, stt, SPEC, device="cpu", **options)
    assert b.gather._per_window == (layout == "wide")
    starts = np.array([0, 17, 3, 60, st.shape[0] - SPEC.span, 41])
    want = _oracle(
        st,
        stt,
        starts,
        SPEC,
        in_f=_features(st, options, "input_features"),
        out_f=_features(st, options, "target_features"),
        tod=options.get("time_of_day", False),
        dow=options.get("day_of_week", False),
        fill=options.get("fill_missing", False),
    )
    got = b._batch(starts, True, host=path == "host")
    assert_batches_equal(got, want)
    assert_batches_equal(b.batch(starts), want[:2])  # without the mask, same bytes
    if path == "torch":  # device start tensors are taken as they are
        assert_batches_equal(b._batch(torch.from_numpy(starts), True, host=False), want)


def test_streamed_and_partitioned_batches_equal_the_numpy_oracle(store, stats):
    from stzarr.data.rank import open_rank_data
    from stzarr.data.streaming import StreamingLoader
    from stzarr.plan.rank import plan_rank

    plan = make_plan(store.shape[0], SPEC)
    kwargs = {"time_of_day": True, "target_features": ["speed"]}

    def want(s):
        return _oracle(store, stats, s, SPEC, in_f=[0, 1], out_f=[0], tod=True)

    contract = BatchContract(**kwargs, fill_missing=False)
    loader = StreamingLoader.from_starts(
        store,
        stats,
        SPEC,
        plan.starts["train"],
        batch_size=16,
        max_memory=60_000,
        device="cpu",
        contract=contract,
    )
    assert loader.plan.n_blocks > 1, "the budget forces real streaming"
    seen = 0
    for s, *batch in loader.batches(0):
        assert_batches_equal(batch, want(s))
        seen += len(s)
    assert seen == plan.count("train")
    checked = 0
    for rank in range(2):
        rank_plan = plan_rank(
            plan, store, mode="partitioned", rank=rank, world_size=2, batch_size=16
        )
        data = open_rank_data(
            store, rank_plan, stats, device=torch.device("cpu"), contract=contract
        )
        for s in np.array_split(rank_plan.partitions.rank_starts(rank), 5):
            assert_batches_equal(data.series.batch_masked(s), want(s))
            checked += len(s)
    assert checked == plan.count("train")


def test_a_held_batch_is_never_overwritten(store, stats):
    """Batches are views of pooled buffers; whatever still refers to one (the batch, a view
    of it, a NumPy array over it) keeps its buffer out of reuse."""
    b = SeriesBatcher.from_store(store, stats, SPEC, device="cpu", time_of_day=True)
    first = np.array([5, 9, 100])

    def want(s):
        return _oracle(store, stats, s, SPEC, in_f=[0, 1], out_f=[0, 1], tod=True)[:2]

    kept = b.batch(first)
    view = b.batch(first)[0][1:]  # only a view survives
    array = b.batch(first)[1].numpy()  # only a NumPy array survives
    for k in range(8):  # many batches later, with other starts
        b.batch(np.array([200 + k, 300, 400 - k]))
    assert_batches_equal(kept, want(first))
    assert torch.equal(view, want(first)[0][1:])
    np.testing.assert_array_equal(array, want(first)[1].numpy())
    held = [b.batch(np.array([k, k + 1])) for k in range(6)]  # more than the pool holds
    for k, batch in enumerate(held):
        assert_batches_equal(batch, want(np.array([k, k + 1])))


def test_released_buffers_are_reused_and_shared_ones_are_not(store, stats):
    b = SeriesBatcher.from_store(store, stats, SPEC, device="cpu", time_of_day=True)
    s = np.array([1, 2, 3, 4])
    x, _ = b.batch(s)
    ptr = x.data_ptr()
    del x, _
    reused = 0
    for k in range(3):
        x, y = b.batch(s + k)
        reused += x.data_ptr() == ptr
        del x, y
    assert reused == 3, "a released batch's buffer is reused"
    x, y = b.batch(s)
    x.share_memory_()  # what a DataLoader worker does before sending a batch
    want = x.clone()
    shared = x.data_ptr()
    del x, y
    for k in range(4):
        x, y = b.batch(s + 10 + k)
        assert x.data_ptr() != shared, "memory another process may map is never rewritten"
        del x, y
    pickle.loads(pickle.dumps(b))  # the batcher (and its pool) still pickle
    assert pickle.loads(pickle.dumps(BatchBuffers(3))).depth == 3
    assert torch.equal(want, b.batch(s)[0])


def test_list_of_a_loader_and_worker_processes_keep_every_batch(store, stats):
    """``list(loader)`` holds every batch at once; worker processes send batches through shared
    memory. Both must yield exactly the oracle's batches."""
    plan = make_plan(store.shape[0], SPEC)
    batcher = SeriesBatcher.from_store(store, stats, SPEC, device="cpu", time_of_day=True)
    starts = plan.starts["val"]
    want = _oracle(store, stats, starts, SPEC, in_f=[0, 1], out_f=[0, 1], tod=True)
    for workers in (0, 2):
        loader = batch_loader(IndexBatchDataset(batcher, starts), 7, num_workers=workers)
        batches = list(loader)
        assert len(batches) == -(-len(starts) // 7)
        assert_batches_equal(
            (torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])), want[:2]
        )


def test_no_full_size_temporary_per_batch(wide):
    """Masks and fills are computed per window in place: after warm-up, building a masked,
    filled batch allocates (NumPy, traced) far less than one x."""
    st, stt = wide
    b = SeriesBatcher.from_store(st, stt, SPEC, device="cpu", time_of_day=True, fill_missing=True)
    starts = np.arange(0, 64, 3)
    b.batch_masked(starts)  # warm-up: the pool's buffers
    tracemalloc.start()
    x, _y, mask = b.batch_masked(starts)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert mask.any() and x.numel() > 0
    assert peak < x.numel() * x.element_size() / 8, f"{peak} B traced for a {x.nbytes} B x"
