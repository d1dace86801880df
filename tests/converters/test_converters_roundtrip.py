import hashlib
import json

import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from stzarr import open_store
from stzarr.converters import convert, detect_family
from stzarr.converters.adjacency import load_adjacency
from stzarr.converters.synth import synth_traffic
from stzarr.testing.validators import assert_graph_matches_dense, assert_store_matches_source

LAYOUTS = {"metr-la": ("df", 207), "pems-bay": ("speed", 325)}


def _reordered_dense(adj, adj_ids, node_ids):
    order = [adj_ids.index(s) for s in node_ids]
    return np.asarray(adj)[np.ix_(order, order)]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("fmt", ["fixed", "table"])
@pytest.mark.parametrize("labels", ["str", "int"])
def test_generated_traffic_file_round_trips(tmp_path, layout, fmt, labels):
    key, nodes = LAYOUTS[layout]
    src = tmp_path / f"{layout}.h5"
    made = synth_traffic(
        src, nodes=nodes, steps=300, key=key, format=fmt, labels=labels, seed=7, progress=False
    )
    result = convert(
        src, tmp_path / "s.zarr", adjacency=made.adjacency, chunk_time=64, progress=False
    )
    store = open_store(result.path)
    df = pd.read_hdf(src, key)
    assert_store_matches_source(store, df.to_numpy(), df.index.to_numpy(), df.columns, ["speed"])
    adj_ids, adj = load_adjacency(made.adjacency)
    assert_graph_matches_dense(store, _reordered_dense(adj, adj_ids, store.node_ids))
    source = store.attrs["source"]
    assert source["key"] == key and source["format"] == f"pandas-{fmt}"
    assert source["file"] == src.name
    assert source["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert store.attrs["sampling_interval_s"] == 300
    assert store.missing_value == "zero"
    missing = store.attrs["missing"]
    assert missing["zero"] == int((df.to_numpy() == 0).sum())
    assert missing["fraction"] == pytest.approx(made.missing_fraction)
    assert store.attrs["column_label_kind"] == ("integer" if labels == "int" else "string")


def test_data_columns_are_reordered_to_the_graph(tmp_path, shared_data):
    """A data file whose columns are a permutation of the pickle's ids is stored in graph order."""
    src = tmp_path / "metr-la.h5"
    synth_traffic(src, steps=40, graph=shared_data / "adj_mx.pkl", progress=False)
    df = pd.read_hdf(src)
    shuffled = df[list(np.random.default_rng(0).permutation(df.columns))]
    shuffled.to_hdf(tmp_path / "shuffled.h5", key="df")
    store = open_store(
        convert(
            tmp_path / "shuffled.h5",
            tmp_path / "s.zarr",
            adjacency=shared_data / "adj_mx.pkl",
            progress=False,
        ).path
    )
    adj_ids, adj = load_adjacency(shared_data / "adj_mx.pkl")
    assert store.node_ids == adj_ids != list(shuffled.columns)
    assert_graph_matches_dense(store, adj)
    assert_store_matches_source(
        store, shuffled[adj_ids].to_numpy(), shuffled.index.to_numpy(), adj_ids
    )


def test_real_metr_la_graph_with_generated_series(tmp_path, shared_data):
    src = tmp_path / "metr-la.h5"
    synth_traffic(src, steps=500, graph=shared_data / "adj_mx.pkl", progress=False)
    store = open_store(
        convert(
            src, tmp_path / "metr-la.zarr", adjacency=shared_data / "adj_mx.pkl", progress=False
        ).path
    )
    ids = (shared_data / "graph_sensor_ids.txt").read_text().strip().split(",")
    assert store.node_ids == ids
    _, adj = load_adjacency(shared_data / "adj_mx.pkl")
    assert store.edge_index.shape == (2, 1722)
    assert int((store.edge_index[0] == store.edge_index[1]).sum()) == 207  # self-loops kept
    assert_graph_matches_dense(store, adj)
    assert store.attrs["graph_source"]["sha256"] == (
        "a35687c6e15aa228dc45027b0ed2a0ea0f4ec78f573deb992c595092d12f61b3"
    )
    ds = xr.open_zarr(tmp_path / "metr-la.zarr")
    assert ds["data"].dims == ("time", "node", "feature")


def test_sharded_conversion_round_trips(tmp_path):
    made = synth_traffic(tmp_path / "x.h5", nodes=30, steps=1000, progress=False)
    store = open_store(
        convert(made.path, tmp_path / "s.zarr", chunk_time=50, shard_time=200, progress=False).path
    )
    assert (store.chunk_time, store.shard_time) == (50, 200)
    assert store.edge_index.shape == (2, 0)  # no adjacency given: no edges
    df = pd.read_hdf(made.path)
    assert_store_matches_source(store, df.to_numpy(), df.index.to_numpy(), df.columns)


def test_integer_index_in_us_and_multi_block_frames_round_trip(tmp_path):
    """pandas >= 3 writes microsecond indexes; frames with mixed dtypes have several blocks."""
    index = pd.date_range("2017-01-01", periods=20, freq="5min", unit="us")
    df = pd.DataFrame(
        {
            "400001": np.arange(20, dtype=np.int64),
            "400002": np.linspace(0, 1, 20),
            "400003": np.arange(20, dtype=np.float32),
        },
        index=index,
    )
    df.to_hdf(tmp_path / "mixed.h5", key="df")
    store = open_store(convert(tmp_path / "mixed.h5", tmp_path / "s.zarr", progress=False).path)
    assert_store_matches_source(store, df.to_numpy(dtype=float), index.to_numpy(), df.columns)


def _pgt(name, shared_data):
    return json.loads((shared_data / name).read_text())


def test_chickenpox_round_trips(tmp_path, shared_data):
    store = open_store(
        convert(shared_data / "chickenpox.json", tmp_path / "c.zarr", progress=False).path
    )
    raw = _pgt("chickenpox.json", shared_data)
    fx = np.asarray(raw["FX"])
    names = sorted(raw["node_ids"], key=raw["node_ids"].get)
    time = pd.date_range("2005-01-03", periods=len(fx), freq="7D").to_numpy()
    assert_store_matches_source(store, fx, time, names, ["cases"])
    adj = np.zeros((20, 20))
    for i, j in raw["edges"]:
        adj[i, j] = 1.0
    assert_graph_matches_dense(store, adj)
    assert store.missing_value == "nan"
    assert store.attrs["time_synthesised"] is True
    assert store.attrs["source"]["sha256"] == (
        "724b48cfb274b2ecbb855bdb99b970b5ef9dd3671694fa477435dc1e08293735"
    )


def test_pedalme_round_trips(tmp_path, shared_data):
    store = open_store(
        convert(shared_data / "pedalme_london.json", tmp_path / "p.zarr", progress=False).path
    )
    raw = _pgt("pedalme_london.json", shared_data)
    x = np.asarray(raw["X"])
    time = pd.date_range("2020-01-06", periods=len(x), freq="7D").to_numpy()
    assert_store_matches_source(store, x, time, [str(i) for i in range(x.shape[1])])
    adj = np.zeros((x.shape[1],) * 2)
    for (i, j), w in zip(raw["edges"], raw["weights"], strict=True):
        adj[i, j] = w
    assert_graph_matches_dense(store, adj)
    assert store.missing_value == "nan"
    assert store.attrs["missing"]["missing"] == 0  # zero deliveries are readings, not missing


def test_montevideo_round_trips(tmp_path, shared_data):
    store = open_store(
        convert(shared_data / "montevideo_bus.json", tmp_path / "m.zarr", progress=False).path
    )
    raw = _pgt("montevideo_bus.json", shared_data)
    ids = [str(n["id"]) for n in raw["nodes"]]
    y = np.array([n["X"]["y"] for n in raw["nodes"]]).T
    time = pd.date_range("2020-10-01", periods=y.shape[0], freq="1h").to_numpy()
    assert_store_matches_source(store, y, time, ids, ["y"])
    pos = {s: i for i, s in enumerate(ids)}
    adj = np.zeros((len(ids), len(ids)))
    for link in raw["links"]:
        adj[pos[str(link["source"])], pos[str(link["target"])]] = link["weight"]
    assert_graph_matches_dense(store, adj)
    assert store.attrs["sampling_interval_s"] == 3600


def test_families_are_detected_by_content_not_name(tmp_path, shared_data):
    (tmp_path / "data.bin").write_bytes((shared_data / "chickenpox.json").read_bytes())
    assert detect_family(tmp_path / "data.bin") == "pgt-json"
    synth_traffic(tmp_path / "x", nodes=3, steps=5, progress=False)
    assert detect_family(tmp_path / "x") == "pandas-hdf5"


def test_compressed_and_reordered_fixed_frames_round_trip(tmp_path):
    """Chunked+compressed values are read through h5py; block items in another order than the
    columns are put back in column order."""
    df = pd.read_hdf(synth_traffic(tmp_path / "x.h5", nodes=7, steps=120, progress=False).path)
    df.to_hdf(tmp_path / "z.h5", key="df", complevel=5, complib="zlib")
    store = open_store(convert(tmp_path / "z.h5", tmp_path / "z.zarr", progress=False).path)
    assert_store_matches_source(store, df.to_numpy(), df.index.to_numpy(), df.columns)
    with h5py.File(tmp_path / "x.h5", "r+") as h5:
        items, values = h5["df/block0_items"][:], h5["df/block0_values"][:]
        ds = h5["df/block0_items"]  # written in the file's own (null-terminated) string type
        ds.id.write(h5py.h5s.ALL, h5py.h5s.ALL, items[::-1].copy(), mtype=ds.id.get_type())
        h5["df/block0_values"][:] = values[:, ::-1]
    reread = pd.read_hdf(tmp_path / "x.h5")
    pd.testing.assert_frame_equal(reread, df)
    store = open_store(convert(tmp_path / "x.h5", tmp_path / "r.zarr", progress=False).path)
    assert_store_matches_source(store, df.to_numpy(), df.index.to_numpy(), df.columns)
