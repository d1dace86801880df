"""Real datasets as users hold them: several files, wide CSV / Parquet, graph sources.

Oracles are independent of the converters: pandas reads of the source files, hashlib, and a
dense NumPy transcription of DCRNN's ``gen_adj_mx``.
"""

import hashlib
import itertools
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from stzarr import open_store
from stzarr.cli import main
from stzarr.converters import convert
from stzarr.converters.graphs import dense_graph, load_graph
from stzarr.converters.synth import synth_largest, synth_traffic
from stzarr.plan.windows import split_bounds
from stzarr.store.stats import compute_stats


def _frame(n=60, nodes=5, start="2012-03-01", freq="5min", seed=0):
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=n, freq=freq)
    values = np.round(40 + 20 * rng.random((n, nodes)), 3)
    return pd.DataFrame(values, index=index, columns=[f"{700000 + 7 * i}" for i in range(nodes)])


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stored(store):
    return store.read(0, store.shape[0])[:, :, 0]


def _fails(capsys, tmp_path, *argv, match, command="convert"):
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main([command, *map(str, argv), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1, err
    assert err[0].startswith(f"stzarr {command}: error: "), err[0]
    assert match in err[0], err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "something was left behind"
    return err[0]


# -- several files -------------------------------------------------------------------------


def test_three_files_of_three_formats_concatenate_in_time(tmp_path):
    df = _frame(n=90)
    a, b, c = df.iloc[:30], df.iloc[30:55], df.iloc[55:]
    a.to_hdf(tmp_path / "a.h5", key="df")
    b[list(reversed(b.columns))].to_csv(tmp_path / "b.csv", index_label="timestamp")
    c[list(np.random.default_rng(1).permutation(c.columns))].to_parquet(tmp_path / "c.parquet")
    paths = [tmp_path / "a.h5", tmp_path / "b.csv", tmp_path / "c.parquet"]
    result = convert(paths, tmp_path / "s.zarr", progress=False)
    store = open_store(result.path)
    assert store.node_ids == list(df.columns)  # no graph: the first file's order
    np.testing.assert_array_equal(_stored(store), df.to_numpy(np.float32))
    np.testing.assert_array_equal(store.time, df.index.to_numpy())
    sources = store.attrs["sources"]
    assert [s["file"] for s in sources] == ["a.h5", "b.csv", "c.parquet"]
    assert [s["sha256"] for s in sources] == [_sha(p) for p in paths]
    assert [s["steps"] for s in sources] == [[0, 30], [30, 55], [55, 90]]
    assert [s["format"] for s in sources] == ["pandas-fixed", "wide-csv", "parquet"]
    assert store.attrs["source"]["files"] == 3 and store.attrs["time_regular"]
    # train-split statistics of the concatenation, against NumPy on the raw values
    lo, hi = split_bounds(90)["train"]
    stats = compute_stats(store, bounds=(lo, hi))
    raw = df.to_numpy()[lo:hi]
    np.testing.assert_allclose([stats.mean[0], stats.std[0]], [raw.mean(), raw.std()], rtol=1e-6)
    assert stats.count[0] == raw.size


def test_columns_follow_the_graph_order_in_every_file(tmp_path, shared_data):
    made = synth_traffic(tmp_path / "m.h5", steps=80, graph=shared_data / "adj_mx.pkl")
    df = pd.read_hdf(made.path)
    rng = np.random.default_rng(2)
    for i, part in enumerate((df.iloc[:40], df.iloc[40:])):
        part[list(rng.permutation(df.columns))].to_hdf(tmp_path / f"p{i}.h5", key="df")
    code = main(
        ["convert", str(tmp_path / "p0.h5"), str(tmp_path / "p1.h5"), str(tmp_path / "s.zarr"),
         "--adjacency", str(shared_data / "adj_mx.pkl"), "--quiet"]
    )  # fmt: skip
    assert code == 0
    store = open_store(tmp_path / "s.zarr")
    ids = (shared_data / "graph_sensor_ids.txt").read_text().strip().split(",")
    assert store.node_ids == ids
    np.testing.assert_array_equal(_stored(store), df[ids].to_numpy(np.float32))


@pytest.mark.parametrize(
    ("second", "match"),
    [
        (slice(25, 60), "overlapping or out of order"),  # overlaps the first file
        (slice(0, 10), "overlapping or out of order"),  # before it
        (slice(35, 60), "gap of 30min"),  # 5 steps missing
    ],
)
def test_overlap_order_and_gap_are_errors(tmp_path, capsys, second, match):
    df = _frame()
    df.iloc[10:30].to_hdf(tmp_path / "a.h5", key="df")
    df.iloc[second].to_hdf(tmp_path / "b.h5", key="df")
    _fails(capsys, tmp_path, tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "s.zarr", match=match)


def test_a_gap_is_accepted_with_allow_gaps_and_recorded(tmp_path):
    df = _frame()
    df.iloc[:20].to_hdf(tmp_path / "a.h5", key="df")
    df.iloc[26:].to_hdf(tmp_path / "b.h5", key="df")
    result = convert(
        [tmp_path / "a.h5", tmp_path / "b.h5"], tmp_path / "s.zarr", allow_gaps=True, progress=False
    )
    store = open_store(result.path)
    assert store.shape[0] == 54 and store.attrs["irregular_steps"] == 1
    assert not store.attrs["time_regular"] and store.attrs["sampling_interval_s"] == 300


def test_sensor_sets_and_intervals_must_agree(tmp_path, capsys):
    df = _frame()
    df.iloc[:30].to_hdf(tmp_path / "a.h5", key="df")
    df.iloc[30:].rename(columns={df.columns[2]: "123"}).to_hdf(tmp_path / "b.h5", key="df")
    line = _fails(
        capsys, tmp_path, tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "s.zarr",
        match="sensor ids differ between b.h5 and a.h5",
    )  # fmt: skip
    assert "123" in line and df.columns[2] in line
    (tmp_path / "b.h5").unlink()
    later = _frame(n=10, start=df.index[30], freq="10min")
    later.to_hdf(tmp_path / "c.h5", key="df")
    _fails(
        capsys, tmp_path, tmp_path / "a.h5", tmp_path / "c.h5", tmp_path / "s.zarr",
        match="sampled every 10min",
    )  # fmt: skip


def test_a_file_listed_twice_and_json_among_several_are_refused(tmp_path, capsys, shared_data):
    _frame().to_hdf(tmp_path / "a.h5", key="df")
    _fails(capsys, tmp_path, tmp_path / "a.h5", tmp_path / "a.h5", tmp_path / "s.zarr",
           match="listed twice")  # fmt: skip
    _fails(capsys, tmp_path, shared_data / "chickenpox.json", tmp_path / "a.h5",
           tmp_path / "s.zarr", match="one at a time")  # fmt: skip


# -- wide CSV and Parquet ------------------------------------------------------------------


def test_tgcn_los_speed_csv_with_start_and_freq(tmp_path, shared_data):
    src = shared_data / "los_speed.csv"
    code = main(
        ["convert", str(src), str(tmp_path / "los.zarr"), "--start", "2012-03-01",
         "--freq", "5min", "--adjacency", str(shared_data / "adj_mx.pkl"), "--quiet"]
    )  # fmt: skip
    assert code == 0
    raw = pd.read_csv(src)
    store = open_store(tmp_path / "los.zarr")
    assert store.shape == (2016, 207, 1) and store.node_ids == list(raw.columns)
    np.testing.assert_array_equal(_stored(store), raw.to_numpy(np.float32))
    assert store.time[0] == np.datetime64("2012-03-01T00:00")
    assert store.time[-1] == np.datetime64("2012-03-07T23:55")
    assert store.attrs["time_synthesised"] and store.missing_value == "nan"
    assert store.attrs["source"]["sha256"] == _sha(src)
    assert store.edge_index.shape[1] == 1722


def test_csv_and_parquet_with_a_time_column(tmp_path):
    df = _frame(n=40)
    df.to_csv(tmp_path / "x.csv", index_label="time")
    df.reset_index(names="when").to_parquet(tmp_path / "x.parquet")
    for src, extra in ((tmp_path / "x.csv", {}), (tmp_path / "x.parquet", {})):
        store = open_store(
            convert(src, tmp_path / f"{src.suffix[1:]}.zarr", progress=False, **extra).path
        )
        np.testing.assert_array_equal(_stored(store), df.to_numpy(np.float32))
        np.testing.assert_array_equal(store.time, df.index.to_numpy())
        assert not store.attrs["time_synthesised"]


def test_parquet_nulls_are_missing_and_time_column_by_name(tmp_path):
    df = _frame(n=20).reset_index(names="stamp")
    df.iloc[3, 2] = np.nan
    df.to_parquet(tmp_path / "x.parquet", index=False)
    store = open_store(
        convert(
            tmp_path / "x.parquet", tmp_path / "s.zarr", time_column="stamp", progress=False
        ).path
    )
    assert store.attrs["missing"]["nan"] == 1
    np.testing.assert_array_equal(_stored(store), df.drop(columns="stamp").to_numpy(np.float32))


@pytest.mark.parametrize(
    ("text", "extra", "match"),
    [
        ("a,b\n1,2\n", [], "has no time column: pass --start and --freq"),
        ("time,a,b\n2012-03-01,1,2\n", ["--start", "2012-03-01"], "apply only to sources without"),
        (
            "a,b\n1,2\n3,oops\n",
            ["--start", "2012", "--freq", "5min"],
            "x.csv:3: 'oops' in column 2 is not a number",
        ),
        ("a,a\n1,2\n", ["--start", "2012", "--freq", "5min"], "duplicate sensor column"),
        ("a,b\n1,2\n", ["--start", "2012", "--freq", "often"], "--freq 'often' is not"),
        ("time,a\nyesterday,1\n", [], "unparseable timestamp"),
        ("time,a\n2012-03-01 00:05,1\n2012-03-01 00:00,2\n", [], "not increasing"),
        ("", [], "is empty"),
    ],
)
def test_bad_csv_inputs(tmp_path, capsys, text, extra, match):
    (tmp_path / "x.csv").write_text(text)
    _fails(capsys, tmp_path, tmp_path / "x.csv", tmp_path / "s.zarr", *extra, match=match)


def test_bad_parquet_inputs(tmp_path, capsys):
    pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]}).to_parquet(tmp_path / "t.parquet")
    _fails(capsys, tmp_path, tmp_path / "t.parquet", tmp_path / "s.zarr", "--start", "2012",
           "--freq", "1h", match="sensor column 'b' is")  # fmt: skip
    (tmp_path / "t.parquet").write_bytes(b"PAR1 but not really parquet")
    _fails(capsys, tmp_path, tmp_path / "t.parquet", tmp_path / "s.zarr",
           match="not a readable Parquet file")  # fmt: skip


# -- graph sources -------------------------------------------------------------------------


def _dense(n, seed=0, density=0.1):
    rng = np.random.default_rng(seed)
    adj = np.where(rng.random((n, n)) < density, rng.random((n, n)), 0.0).astype(np.float32)
    np.fill_diagonal(adj, 1.0)
    return adj


def _edges_as_dense(store):
    n = store.shape[1]
    out = np.zeros((n, n), np.float32)
    ei, ew = store.edge_index, store.edge_weight
    out[ei[0], ei[1]] = ew
    return out


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_largest_dense_adjacency_with_meta_csv(tmp_path, suffix):
    df = _frame(n=30, nodes=12)
    ids = list(np.random.default_rng(3).permutation(df.columns))  # graph order != data order
    adj = _dense(12)
    meta = pd.DataFrame({"ID": [int(s) for s in ids], "Lat": 34.0, "Lng": -118.0, "ID2": range(12)})
    meta.to_csv(tmp_path / "meta.csv", index=False)
    if suffix == ".npy":
        np.save(tmp_path / "adj.npy", adj)
    else:
        np.savez_compressed(tmp_path / "adj.npz", adj=adj)
    df.to_hdf(tmp_path / "his.h5", key="t")
    result = convert(
        tmp_path / "his.h5", tmp_path / "s.zarr", adjacency=tmp_path / f"adj{suffix}",
        graph_ids=tmp_path / "meta.csv", progress=False,
    )  # fmt: skip
    store = open_store(result.path)
    assert store.node_ids == ids
    np.testing.assert_array_equal(_edges_as_dense(store), adj)
    np.testing.assert_array_equal(_stored(store), df[ids].to_numpy(np.float32))
    graph = store.attrs["graph_source"]
    assert graph["format"] == f"dense{suffix}" and graph["ids_file"] == "meta.csv"
    assert graph["sha256"] == _sha(tmp_path / f"adj{suffix}")


def test_a_dense_float64_adjacency_is_never_held_whole(tmp_path):
    n = 3000
    adj = np.zeros((n, n))
    adj[np.arange(n), (np.arange(n) * 7) % n] = 0.5
    np.save(tmp_path / "big.npy", adj)
    del adj
    tracemalloc.start()
    try:
        matrix = dense_graph(tmp_path / "big.npy", [str(i) for i in range(n)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert matrix.nnz == n
    assert peak < 0.5 * n * n * 8, peak  # one row block (1024 rows) is about a third


def _dcrnn_gen_adj_mx(distance_df, sensor_ids, normalized_k):
    """DCRNN's scripts/gen_adj_mx.py get_adjacency_matrix, transcribed densely."""
    num = len(sensor_ids)
    dist_mx = np.full((num, num), np.inf, dtype=np.float32)
    index = {s: i for i, s in enumerate(sensor_ids)}
    for row in distance_df.values:
        if row[0] not in index or row[1] not in index:
            continue
        dist_mx[index[row[0]], index[row[1]]] = row[2]
    distances = dist_mx[~np.isinf(dist_mx)].flatten()
    std = distances.std()
    adj_mx = np.exp(-np.square(dist_mx / std))
    adj_mx[adj_mx < normalized_k] = 0
    return adj_mx


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("threshold", [None, 0.3])
def test_distance_csv_is_dcrnn_gaussian_kernel(tmp_path, header, threshold):
    df = _frame(n=20, nodes=15)
    ids = list(df.columns)
    rng = np.random.default_rng(5)
    pairs = [(a, b) for a in ids for b in ids if rng.random() < 0.4] + [(ids[0], ids[1])]
    rows = pd.DataFrame(
        {
            "from": [a for a, _ in pairs] + ["999", ids[2]],
            "to": [b for _, b in pairs] + [ids[3], "998"],
            "cost": [*np.round(rng.random(len(pairs)) * 5000, 1), 1.0, 2.0],
        }
    )
    rows.to_csv(tmp_path / "distances.csv", index=False, header=header)
    df.to_hdf(tmp_path / "x.h5", key="df")
    store = open_store(
        convert(tmp_path / "x.h5", tmp_path / "s.zarr", adjacency=tmp_path / "distances.csv",
                graph_threshold=threshold, progress=False).path
    )  # fmt: skip
    want = _dcrnn_gen_adj_mx(rows, ids, 0.1 if threshold is None else threshold)
    np.testing.assert_allclose(_edges_as_dense(store), want, rtol=1e-6)
    assert (want > 0).sum() == store.edge_index.shape[1] > 0
    attrs = store.attrs["graph_source"]
    assert attrs["rows_skipped"] == 2 and attrs["format"] == "distance-csv"


def test_distance_csv_with_an_id_list_orders_the_nodes(tmp_path, shared_data):
    df = _frame(n=10, nodes=4)
    ids = list(reversed(df.columns))
    (tmp_path / "ids.txt").write_text(",".join(ids) + "\n")
    pd.DataFrame({"from": ids[:3], "to": ids[1:], "cost": [10.0, 20.0, 300.0]}).to_csv(
        tmp_path / "d.csv", index=False
    )
    df.to_hdf(tmp_path / "x.h5", key="df")
    store = open_store(
        convert(tmp_path / "x.h5", tmp_path / "s.zarr", adjacency=tmp_path / "d.csv",
                graph_ids=tmp_path / "ids.txt", progress=False).path
    )  # fmt: skip
    assert store.node_ids == ids
    assert store.edge_index.tolist() == [[0, 1], [1, 2]]  # 300 is beyond the kernel


@pytest.mark.parametrize(
    ("make", "extra", "match"),
    [
        ("npy", [], "holds no sensor ids: pass --graph-ids"),
        ("npy-wrong-shape", ["--graph-ids", "meta.csv"], "adjacency has shape (3, 3)"),
        ("npy-nan", ["--graph-ids", "meta.csv"], "non-finite weight at [1, 2]"),
        ("meta-no-id", ["--graph-ids", "nometa.csv"], "needs a column named ID"),
        ("meta-dup", ["--graph-ids", "dupmeta.csv"], "duplicate sensor id"),
        ("csv-text-cost", [], "line 3: cost 'far' is not a number"),
        ("csv-negative", [], "negative distance"),
        ("csv-two-columns", [], "3 columns (from,to,cost)"),
        ("csv-unknown-ids", [], "no row names two of the 4 sensors"),
        ("csv-threshold", ["--graph-threshold", "1.5"], "--graph-threshold must be in [0, 1)"),
        ("pkl-threshold", ["--graph-threshold", "0.2"], "applies only to a distance CSV"),
        ("unknown", [], "unknown graph source"),
        ("npz-two", ["--graph-ids", "meta.csv"], "expected one array in the .npz, found 2"),
    ],
)
def test_bad_graph_sources(tmp_path, capsys, shared_data, make, extra, match):
    df = _frame(n=10, nodes=4)
    df.to_hdf(tmp_path / "x.h5", key="df")
    ids = [int(s) for s in df.columns]
    pd.DataFrame({"ID": ids}).to_csv(tmp_path / "meta.csv", index=False)
    pd.DataFrame({"Lat": [1.0] * 4}).to_csv(tmp_path / "nometa.csv", index=False)
    pd.DataFrame({"ID": ids[:3] + ids[:1]}).to_csv(tmp_path / "dupmeta.csv", index=False)
    graph = {
        "npy": "g.npy",
        "npy-wrong-shape": "g3.npy",
        "npy-nan": "gnan.npy",
        "meta-no-id": "g.npy",
        "meta-dup": "g.npy",
        "npz-two": "two.npz",
        "pkl-threshold": str(shared_data / "adj_mx.pkl"),
        "unknown": "g.graphml",
    }.get(make, "d.csv")
    np.save(tmp_path / "g.npy", _dense(4))
    np.save(tmp_path / "g3.npy", _dense(3))
    bad = _dense(4)
    bad[1, 2] = np.nan
    np.save(tmp_path / "gnan.npy", bad)
    np.savez(tmp_path / "two.npz", a=_dense(4), b=_dense(4))
    (tmp_path / "g.graphml").write_text("<graphml/>")
    s = [str(i) for i in ids]
    lines = {
        "csv-text-cost": f"from,to,cost\n{s[0]},{s[1]},10\n{s[1]},{s[2]},far\n",
        "csv-negative": f"{s[0]},{s[1]},10\n{s[1]},{s[2]},-3\n",
        "csv-two-columns": f"{s[0]},{s[1]}\n",
        "csv-unknown-ids": "1,2,10\n3,4,20\n",
        "csv-threshold": f"{s[0]},{s[1]},10\n{s[1]},{s[2]},30\n",
    }
    (tmp_path / "d.csv").write_text(lines.get(make, "1,2,3\n"))
    extra = [str(tmp_path / e) if e.endswith(".csv") else e for e in extra]
    _fails(capsys, tmp_path, tmp_path / "x.h5", tmp_path / "s.zarr", "--adjacency",
           tmp_path / graph, *extra, match=match)  # fmt: skip


def test_load_graph_reads_dcrnn_id_files(shared_data):
    """The real DCRNN id list and locations CSV give the pickle's order."""
    ids_pkl = load_graph(shared_data / "adj_mx.pkl", data_ids=[]).ids
    from stzarr.converters.graphs import read_sensor_ids

    assert read_sensor_ids(shared_data / "graph_sensor_ids.txt") == ids_pkl
    assert read_sensor_ids(shared_data / "graph_sensor_locations.csv") == ids_pkl


# -- LargeST layout ------------------------------------------------------------------------


def test_synth_largest_layout_converts_as_largest_is_read(tmp_path, capsys):
    code = main(["synth", "--layout", "largest", str(tmp_path / "ca"), "--years", "2019", "2020",
                 "--nodes", "30", "--quiet"])  # fmt: skip
    assert code == 0
    out = tmp_path / "ca"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["ca_his_raw_2019.h5", "ca_his_raw_2020.h5", "ca_meta.csv", "ca_rn_adj.npy"]
    meta = pd.read_csv(out / "ca_meta.csv")
    assert list(meta.columns) == [
        "ID", "Lat", "Lng", "District", "County", "Fwy", "Lane", "Type", "Direction", "ID2",
    ]  # fmt: skip
    # as LargeST's notebooks read them: pd.read_hdf, columns = meta.ID as str, adj rows = meta rows
    y19 = pd.read_hdf(out / "ca_his_raw_2019.h5", key="t")
    y20 = pd.read_hdf(out / "ca_his_raw_2020.h5")
    assert y19.shape == (105_120, 30) and y20.shape == (105_408, 30)
    assert list(y19.columns) == meta.ID.astype(str).tolist()
    assert y20.index[0] - y19.index[-1] == pd.Timedelta("5min")
    adj = np.load(out / "ca_rn_adj.npy")
    assert adj.shape == (30, 30) and adj.dtype == np.float32 and (np.diag(adj) == 1).all()
    code = main(["convert", str(out / "ca_his_raw_2019.h5"), str(out / "ca_his_raw_2020.h5"),
                 str(tmp_path / "ca.zarr"), "--graph", str(out / "ca_rn_adj.npy"), "--graph-ids",
                 str(out / "ca_meta.csv"), "--chunk-time", "4096", "--quiet"])  # fmt: skip
    assert code == 0
    store = open_store(tmp_path / "ca.zarr")
    assert store.shape == (210_528, 30, 1)
    np.testing.assert_array_equal(_edges_as_dense(store), adj)
    both = pd.concat([y19, y20]).iloc[105_000:105_300].to_numpy(np.float32)
    np.testing.assert_array_equal(store.read(105_000, 105_300)[:, :, 0], both)


def test_synth_largest_rejects_bad_arguments(tmp_path, capsys):
    _fails(capsys, tmp_path, tmp_path, "--layout", "largest", "--years", "2019", "2021",
           match="consecutive years", command="synth")  # fmt: skip
    _fails(capsys, tmp_path, tmp_path, "--layout", "largest", "--steps", "5",
           match="takes --years", command="synth")  # fmt: skip
    synth_largest(tmp_path, years=[2019], nodes=3, progress=False)
    _fails(capsys, tmp_path, tmp_path, "--layout", "largest", "--years", "2019", "--nodes", "3",
           match="exists (pass --overwrite", command="synth")  # fmt: skip


@pytest.mark.parametrize(
    ("src", "extra", "match"),
    [
        ("x.h5", ["--graph-ids", "ids.txt"], "need --adjacency"),
        ("x.h5", ["--time-column", "t"], "--time-column does not apply to HDF5"),
        ("x.csv", ["--key", "df"], "--key does not apply to wide-csv"),
        ("x.csv", ["--time-column", "when"], "no column 'when'"),
    ],
)
def test_options_that_do_not_apply_are_refused(tmp_path, capsys, src, extra, match):
    df = _frame(n=10, nodes=3)
    df.to_hdf(tmp_path / "x.h5", key="df")
    df.to_csv(tmp_path / "x.csv", index_label="time")
    (tmp_path / "ids.txt").write_text(",".join(df.columns))
    extra = [str(tmp_path / e) if e.endswith(".txt") else e for e in extra]
    _fails(capsys, tmp_path, tmp_path / src, tmp_path / "s.zarr", *extra, match=match)


def test_several_files_stream_in_blocks(tmp_path, monkeypatch):
    """Every file is read in blocks of at most one store block, front to back, once."""
    from stzarr.converters import streaming
    from stzarr.converters.pandas_hdf5 import FixedFrameReader

    df = _frame(n=1000, nodes=4)
    for i, (a, b) in enumerate([(0, 300), (300, 700), (700, 1000)]):
        df.iloc[a:b].to_hdf(tmp_path / f"p{i}.h5", key="df")
    calls = []
    real_read = FixedFrameReader.read

    def recording_read(self, t0, t1):
        calls.append((self.path.name, t0, t1))
        return real_read(self, t0, t1)

    monkeypatch.setattr(FixedFrameReader, "read", recording_read)
    monkeypatch.setattr(streaming, "BLOCK_BYTES", 1)  # one chunk (64 steps) per block
    paths = [tmp_path / f"p{i}.h5" for i in range(3)]
    store = open_store(convert(paths, tmp_path / "s.zarr", chunk_time=64, progress=False).path)
    np.testing.assert_array_equal(_stored(store), df.to_numpy(np.float32))
    assert max(t1 - t0 for _, t0, t1 in calls) <= 64
    for i, n in enumerate((300, 400, 300)):
        ranges = [(t0, t1) for name, t0, t1 in calls if name == f"p{i}.h5"]
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))  # contiguous, in order
