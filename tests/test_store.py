import numpy as np
import pytest
import xarray as xr
import zarr

from stzarr import FORMAT_VERSION, StoreExistsError, StoreFormatError, manifest, open_store
from stzarr.store import FORMAT_KEY, StoreWriter
from stzarr.testing import make_series, make_store


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
