import numpy as np
import pytest
import xarray as xr
import zarr

from stzarr import FORMAT_VERSION, StoreExistsError, StoreFormatError, open_store
from stzarr.store import format as store_module
from stzarr.store import manifest
from stzarr.store.format import FORMAT_KEY, StoreWriter, default_layout
from stzarr.testing.validators import make_series, make_store


def test_store_opens_with_xarray_named_dims(tmp_path):
    store = make_store(tmp_path / "s.zarr", n_time=200, n_node=5, n_feature=2, chunk_time=32)
    ds = xr.open_zarr(tmp_path / "s.zarr")
    assert ds["data"].dims == ("time", "node", "feature")
    assert ds["data"].dtype == np.float32
    assert np.issubdtype(ds["time"].dtype, np.datetime64)
    assert list(ds["node"].values) == store.node_ids
    assert store.chunk_time == 32
    np.testing.assert_array_equal(ds["data"].values, make_series(200, 5, 2))


def test_sharded_store_round_trips(tmp_path):
    store = make_store(tmp_path / "s.zarr", n_time=300, chunk_time=16, shard_time=64)
    assert store.shard_time == 64
    np.testing.assert_array_equal(store.read(0, 300), make_series(300, 7))


def test_existing_store_is_not_overwritten(tmp_path):
    make_store(tmp_path / "s.zarr")
    with pytest.raises(StoreExistsError):
        make_store(tmp_path / "s.zarr")


def test_interrupted_write_leaves_nothing(tmp_path):
    dst = tmp_path / "s.zarr"
    with (
        pytest.raises(KeyboardInterrupt),
        StoreWriter(
            dst,
            time=np.arange(10).astype("datetime64[m]"),
            node_ids=["a"],
            feature_names=["speed"],
            edge_index=np.zeros((2, 0)),
            edge_weight=np.zeros(0),
            attrs={"missing_value": "zero"},
        ) as writer,
    ):
        writer.write(0, np.ones((5, 1, 1)))
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_other_format_version_is_refused(tmp_path):
    make_store(tmp_path / "s.zarr")
    zarr.open_group(tmp_path / "s.zarr", mode="r+").attrs[FORMAT_KEY] = FORMAT_VERSION + 1
    manifest.write(tmp_path / "s.zarr")  # as that version would have sealed it
    with pytest.raises(StoreFormatError, match="format version"):
        open_store(tmp_path / "s.zarr")


def test_missing_store_is_refused(tmp_path):
    with pytest.raises(StoreFormatError, match="no store"):
        open_store(tmp_path / "nope.zarr")


def test_the_default_layout_shards_only_above_256_chunk_files(tmp_path, monkeypatch):
    """The rules of docs/parallel-filesystems.md, worked by hand: ~4 MiB chunks; above 256 of
    them, shard files holding whole chunks, about 256 files, none above 512 MiB."""
    assert default_layout(60_000, 2_000, 1) == (524, None)  # 115 files: unsharded
    chunk, shard = default_layout(105_120, 11_160, 1)
    assert chunk == 4 * 2**20 // (11_160 * 4) == 93  # 1,131 chunks
    assert shard is not None and shard % chunk == 0
    assert -(-105_120 // shard) <= 256 and shard * 11_160 * 4 <= 512 * 2**20
    assert shard == 5 * 93  # ceil(1131 / 256) chunks per shard
    # a store written without a layout follows it (chunks made small to need no big write)
    monkeypatch.setattr(store_module, "default_chunk_time", lambda n_node, n_feature: 2)
    store = make_store(tmp_path / "s.zarr", n_time=600, n_node=3, chunk_time=None)
    assert (store.chunk_time, store.shard_time) == (2, 4)  # 300 chunks > 256: 2 per shard
    assert len(list((tmp_path / "s.zarr" / "data" / "c").iterdir())) == 150
    np.testing.assert_array_equal(store.read(0, 600), make_series(600, 3))
