import pickle

import h5py
import numpy as np
import pandas as pd
import pytest

from stzarr.cli import main
from stzarr.converters.adjacency import load_adjacency
from stzarr.converters.synth import adjacency_path_for, synth_traffic
from stzarr.errors import StoreExistsError


@pytest.mark.parametrize("fmt", ["fixed", "table"])
@pytest.mark.parametrize("labels", ["str", "int"])
def test_pandas_reads_the_generated_layout(tmp_path, fmt, labels):
    dst = tmp_path / "pems-bay.h5"
    result = synth_traffic(dst, nodes=25, steps=300, key="speed", format=fmt, labels=labels)
    df = pd.read_hdf(dst, "speed")
    assert df.shape == (300, 25)
    assert isinstance(df.index, pd.DatetimeIndex)
    assert (np.diff(df.index.values) == np.timedelta64(5, "m")).all()
    assert df.index[0] == pd.Timestamp("2012-03-01")
    assert df.dtypes.eq(np.float64).all()
    want_type = int if labels == "int" else str
    assert all(isinstance(c, want_type) for c in df.columns.tolist())
    ids, _ = load_adjacency(result.adjacency)
    assert [str(c) for c in df.columns] == ids
    assert (df.values >= 0).all() and (df.values <= 85).all()
    assert result.missing_fraction == pytest.approx((df.values == 0).mean())


def test_fixed_layout_is_pandas_fixed_format(tmp_path):
    dst = tmp_path / "metr-la.h5"
    synth_traffic(dst, nodes=5, steps=40)
    reference = tmp_path / "reference.h5"
    df = pd.read_hdf(dst)
    df.to_hdf(reference, key="df")
    with h5py.File(dst) as ours, h5py.File(reference) as theirs:
        assert (
            sorted(ours["df"])
            == sorted(theirs["df"])
            == ["axis0", "axis1", "block0_items", "block0_values"]
        )
        for name in ("axis0", "axis1", "block0_values"):
            np.testing.assert_array_equal(ours["df"][name][:], theirs["df"][name][:])
        assert ours["df"].attrs["pandas_type"] == theirs["df"].attrs["pandas_type"]
    assert pd.read_hdf(dst).index.freq == pd.Timedelta("5min")


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    a = synth_traffic(tmp_path / "a.h5", nodes=10, steps=100, seed=3)
    b = synth_traffic(tmp_path / "b.h5", nodes=10, steps=100, seed=3)
    c = synth_traffic(tmp_path / "c.h5", nodes=10, steps=100, seed=4)
    va, vb, vc = (pd.read_hdf(r.path).values for r in (a, b, c))
    np.testing.assert_array_equal(va, vb)
    assert not np.array_equal(va, vc)


def test_signal_has_rush_hours_missing_zeros_and_spatial_correlation(tmp_path, shared_data):
    result = synth_traffic(tmp_path / "m.h5", steps=288 * 14, graph=shared_data / "adj_mx.pkl")
    df = pd.read_hdf(result.path)
    assert 0.05 < result.missing_fraction < 0.12
    speed = df.where(df > 0)
    weekday = speed[speed.index.day_of_week < 5]
    by_hour = weekday.groupby(weekday.index.hour).mean().mean(axis=1)
    assert by_hour[17] < by_hour[3] - 8  # evening rush-hour dip
    assert by_hour[8] < by_hour[3] - 4  # morning dip
    # whole-sensor outages: some sensor is missing for at least 2 hours in a row
    zero_runs = (df == 0).rolling(24).sum().max()
    assert (zero_runs == 24).any()
    ids, adj = load_adjacency(shared_data / "adj_mx.pkl")
    hourly = speed.resample("1h").mean()
    resid = hourly - hourly.groupby([hourly.index.day_of_week, hourly.index.hour]).transform("mean")
    corr = resid.corr().values
    r, c = np.nonzero(adj - np.diag(np.diag(adj)))
    iu = np.triu_indices(len(ids), 1)
    assert np.nanmean(corr[r, c]) > np.nanmean(corr[iu]) + 0.1


def test_random_graph_pickle_is_dcrnn_format(tmp_path):
    result = synth_traffic(tmp_path / "x.h5", nodes=60, steps=24)
    assert result.adjacency == str(adjacency_path_for(tmp_path / "x.h5"))
    with open(result.adjacency, "rb") as fh:
        ids, id_to_ind, adj = pickle.load(fh, encoding="latin1")
    assert len(ids) == 60 and all(isinstance(s, str) for s in ids)
    assert id_to_ind == {s: i for i, s in enumerate(ids)}
    assert adj.dtype == np.float32 and adj.shape == (60, 60)
    np.testing.assert_array_equal(np.diag(adj), 1.0)
    off = adj[~np.eye(60, dtype=bool)]
    assert ((off == 0) | ((off >= 0.1) & (off <= 1))).all()
    assert (off > 0).sum() >= 60  # every sensor has neighbours on average


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    synth_traffic(tmp_path / "x.h5", nodes=4, steps=10)
    with pytest.raises(StoreExistsError):
        synth_traffic(tmp_path / "x.h5", nodes=4, steps=10)
    synth_traffic(tmp_path / "x.h5", nodes=4, steps=12, overwrite=True)
    assert pd.read_hdf(tmp_path / "x.h5").shape == (12, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.h5", "x_adj_mx.pkl"]


def test_cli_synth_with_real_graph(tmp_path, shared_data, capsys):
    dst = tmp_path / "metr-la.h5"
    code = main(
        ["synth", str(dst), "--steps", "50", "--graph", str(shared_data / "adj_mx.pkl"), "--quiet"]
    )
    assert code == 0
    assert "50 steps x 207 sensors" in capsys.readouterr().out
    ids = (shared_data / "graph_sensor_ids.txt").read_text().strip().split(",")
    assert list(pd.read_hdf(dst).columns) == ids
    assert not adjacency_path_for(dst).exists()  # the real graph is not copied


def test_cli_synth_rejects_bad_arguments(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "x.h5"), "--steps", "10", "--quiet"]) == 2
    assert "--nodes" in capsys.readouterr().err
    assert (
        main(
            [
                "synth",
                str(tmp_path / "x.h5"),
                "--steps",
                "10",
                "--nodes",
                "3",
                "--graph",
                str(tmp_path / "nope.pkl"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
