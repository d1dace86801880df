import uuid

import fsspec
import numpy as np
import pytest
import torch
import xarray as xr

from stzarr import StoreExistsError, StoreFormatError, StzarrError, open_store
from stzarr.data.streaming import StreamingLoader
from stzarr.plan.windows import WindowSpec, make_plan
from stzarr.store.format import StoreWriter
from stzarr.store.stats import cache_stats, compute_stats
from stzarr.testing.validators import make_series, make_store


@pytest.fixture
def memory_url():
    """A fresh ``memory://`` location, removed afterwards."""
    url = f"memory://stzarr-test-{uuid.uuid4().hex[:8]}/s.zarr"
    yield url
    fs = fsspec.filesystem("memory")
    root = url.removeprefix("memory:/")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _writer(path, **kwargs):
    return StoreWriter(
        path,
        time=np.arange(10).astype("datetime64[m]"),
        node_ids=["a", "b"],
        feature_names=["speed"],
        edge_index=np.zeros((2, 0)),
        edge_weight=np.zeros(0),
        attrs={"missing_value": "zero"},
        chunk_time=4,
        **kwargs,
    )


def test_memory_url_round_trips(memory_url):
    store = make_store(memory_url, n_time=120, n_node=4, chunk_time=16)
    assert store.path == memory_url
    again = open_store(memory_url)
    np.testing.assert_array_equal(again.read(0, 120), make_series(120, 4))
    ds = xr.open_zarr(memory_url)
    assert ds["data"].dims == ("time", "node", "feature")


def test_file_url_is_written_atomically_and_opens_both_ways(tmp_path):
    url = f"file://{tmp_path}/s.zarr"
    make_store(url, n_time=80, n_node=3, chunk_time=16)
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]  # the partial sibling was renamed
    np.testing.assert_array_equal(open_store(url).read(0, 80), make_series(80, 3))
    np.testing.assert_array_equal(open_store(tmp_path / "s.zarr").read(0, 80), make_series(80, 3))


def test_url_store_is_not_overwritten_unless_asked(memory_url):
    make_store(memory_url, n_time=50, seed=1)
    with pytest.raises(StoreExistsError):
        make_store(memory_url, n_time=50, seed=2)
    np.testing.assert_array_equal(open_store(memory_url).read(0, 50), make_series(50, 7, seed=1))


def test_interrupted_url_write_leaves_nothing(memory_url):
    with pytest.raises(KeyboardInterrupt), _writer(memory_url) as writer:
        writer.write(0, np.ones((5, 2, 1)))
        raise KeyboardInterrupt
    fs, root = fsspec.core.url_to_fs(memory_url)
    assert not fs.exists(root)


def test_killed_url_write_never_opens_as_a_store(memory_url):
    writer = _writer(memory_url)  # written in place, neither committed nor aborted
    writer.write(0, np.ones((10, 2, 1)))
    with pytest.raises(StoreFormatError, match="not a complete stzarr store"):
        open_store(memory_url)
    writer.commit()
    assert open_store(memory_url).shape == (10, 2, 1)


def test_missing_url_and_unknown_protocol_are_one_line_errors(memory_url):
    with pytest.raises(StoreFormatError, match="no store at"):
        open_store(memory_url)
    with pytest.raises(StzarrError, match="nosuchprotocol"):
        open_store("nosuchprotocol://bucket/s.zarr")


def test_stats_and_streaming_read_a_url_store(memory_url, tmp_path):
    local = make_store(tmp_path / "s.zarr", n_time=400, n_node=5, chunk_time=16)
    remote = make_store(memory_url, n_time=400, n_node=5, chunk_time=16)
    spec = WindowSpec(6, 6)
    plan = make_plan(400, spec)
    stats = compute_stats(remote, bounds=plan.bounds["train"])
    np.testing.assert_array_equal(
        stats.mean, compute_stats(local, bounds=plan.bounds["train"]).mean
    )
    assert cache_stats(remote, stats)
    assert stats.key in open_store(memory_url).attrs["stzarr_stats"]  # cached in the URL store
    batches = []
    for store in (local, remote):
        loader = StreamingLoader.from_starts(
            store,
            stats,
            spec,
            plan.starts["train"],
            batch_size=8,
            max_memory=20_000,
            device="cpu",
            seed=3,
        )
        assert loader.plan.n_blocks > 1
        batches.append([(s, x) for s, x, *_ in loader.batches(0)])
        assert len(batches[-1]) == len(loader) > 1
    for (s0, x0), (s1, x1) in zip(*batches, strict=True):
        np.testing.assert_array_equal(s0, s1)
        assert torch.equal(x0, x1)
