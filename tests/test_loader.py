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
from stzarr.loader import read_range
from stzarr.stats import standardise_
from stzarr.testing import (
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
    return standardise_(store.read(0, store.shape[0]), stats, store.missing_value)


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
    loader = batch_loader(IndexBatchDataset(batcher, plan.starts["train"]), 16, shuffle=True)
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
    assert_batches_equal(b._gather_device(starts), b._gather_host(starts))
    assert_batches_equal(b._gather_device(torch.from_numpy(starts)), b._gather_host(starts))


def test_read_range_equals_a_plain_read_on_sharded_stores(tmp_path):
    store = make_store(tmp_path / "s.zarr", n_time=300, chunk_time=16, shard_time=64)
    for lo, hi in [(0, 300), (5, 17), (63, 64), (100, 299)]:
        got = read_range(store, lo, hi)
        assert got.flags.c_contiguous and got.dtype == np.float32
        np.testing.assert_array_equal(got, store.read(lo, hi))
