"""Bad input: one clear line on stderr, a non-zero exit, and nothing left behind."""

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from stzarr import open_store
from stzarr.cli import main
from stzarr.converters import convert, streaming
from stzarr.converters.pandas_hdf5 import FixedFrameReader
from stzarr.converters.synth import synth_traffic


def _frame(n=30, nodes=4, start="2012-03-01", freq="5min"):
    index = pd.date_range(start, periods=n, freq=freq)
    values = 50 + np.arange(n * nodes, dtype=float).reshape(n, nodes) % 17
    return pd.DataFrame(values, index=index, columns=[f"{400000 + i}" for i in range(nodes)])


def _run(capsys, *argv):
    code = main(["convert", *map(str, argv), "--quiet"])
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), captured.out


def _fails(capsys, tmp_path, src, *extra, match):
    dst = tmp_path / "out.zarr"
    before = {p.name for p in tmp_path.iterdir()}
    code, err, _ = _run(capsys, src, dst, *extra)
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("stzarr convert: error: ")
    assert match in err[0], err[0]
    assert {p.name for p in tmp_path.iterdir()} == before, "something was left behind"
    return err[0]


def test_missing_file(tmp_path, capsys):
    _fails(capsys, tmp_path, tmp_path / "nope.h5", match="does not exist")


def test_not_hdf5(tmp_path, capsys):
    (tmp_path / "speed.h5").write_bytes(b"this is not an HDF5 file\n" * 40)
    _fails(capsys, tmp_path, tmp_path / "speed.h5", match="is not an HDF5 file")
    (tmp_path / "speed.dat").write_text("a,b\n1,2\n")
    _fails(capsys, tmp_path, tmp_path / "speed.dat", match="unrecognised source")


def test_truncated_hdf5(tmp_path, capsys):
    src = tmp_path / "t.h5"
    synth_traffic(src, nodes=50, steps=400, progress=False)
    (tmp_path / "t_adj_mx.pkl").unlink()
    with open(src, "r+b") as fh:
        fh.truncate(src.stat().st_size // 2)
    _fails(capsys, tmp_path, src, match="truncated or corrupt")


def test_wrong_and_ambiguous_key(tmp_path, capsys):
    src = tmp_path / "two.h5"
    _frame().to_hdf(src, key="speed")
    _frame().to_hdf(src, key="other")
    line = _fails(capsys, tmp_path, src, match="several DataFrames")
    assert "--key" in line
    _fails(capsys, tmp_path, src, "--key", "df", match="no key 'df'")
    pd.Series([1.0, 2.0]).to_hdf(src, key="series")
    _fails(capsys, tmp_path, src, "--key", "series", match="not a DataFrame")
    code, _, _ = _run(capsys, src, tmp_path / "ok.zarr", "--key", "speed")
    assert code == 0


@pytest.mark.parametrize("fmt", ["fixed", "table"])
def test_no_datetime_index(tmp_path, capsys, fmt):
    df = _frame().reset_index(drop=True)
    df.to_hdf(tmp_path / "x.h5", key="df", format=fmt)
    _fails(capsys, tmp_path, tmp_path / "x.h5", match="not a DatetimeIndex")


def test_duplicate_timestamps(tmp_path, capsys):
    df = _frame()
    df.index = df.index[[0, 1, 2, 2, *range(4, 30)]]
    df.to_hdf(tmp_path / "x.h5", key="df")
    _fails(capsys, tmp_path, tmp_path / "x.h5", match="duplicate timestamps")


def test_non_monotonic_timestamps(tmp_path, capsys):
    df = _frame()
    df = df.iloc[[0, 1, 3, 2, *range(4, 30)]]
    df.to_hdf(tmp_path / "x.h5", key="df")
    _fails(capsys, tmp_path, tmp_path / "x.h5", match="not increasing")


def test_irregular_spacing_needs_allow_gaps(tmp_path, capsys):
    df = _frame().drop(index=_frame().index[10:13])
    df.to_hdf(tmp_path / "x.h5", key="df", format="table")
    line = _fails(capsys, tmp_path, tmp_path / "x.h5", match="irregular time spacing")
    assert "--allow-gaps" in line and "a 20min step" in line
    code, err, _ = _run(capsys, tmp_path / "x.h5", tmp_path / "g.zarr", "--allow-gaps")
    assert code == 0
    assert len(err) == 1 and "1 irregular time step" in err[0]
    store = open_store(tmp_path / "g.zarr")
    assert store.attrs["time_regular"] is False and store.attrs["irregular_steps"] == 1
    np.testing.assert_array_equal(store.time, df.index.to_numpy())


def test_nan_and_inf_are_kept_as_missing_and_counted(tmp_path, capsys):
    df = _frame()
    df.iloc[3, 1] = np.nan
    df.iloc[4, 2] = np.inf
    df.iloc[5, 0] = -np.inf
    df.iloc[6, 3] = 1e300  # beyond float32: infinite once stored
    df.iloc[7, 3] = 0.0
    df.to_hdf(tmp_path / "x.h5", key="df")
    code, err, _ = _run(capsys, tmp_path / "x.h5", tmp_path / "s.zarr")
    assert code == 0
    assert err == ["stzarr convert: warning: 1 NaN and 3 infinite reading(s) kept as missing (NaN)"]
    store = open_store(tmp_path / "s.zarr")
    data = store.read(0, 30)[:, :, 0]
    assert np.isnan(data[[3, 4, 5, 6], [1, 2, 0, 3]]).all()
    assert np.isfinite(data).sum() == data.size - 4
    missing = store.attrs["missing"]
    assert (missing["nan"], missing["inf"], missing["zero"], missing["missing"]) == (1, 3, 1, 5)


def test_sensor_id_mismatch_with_adjacency(tmp_path, capsys):
    made = synth_traffic(tmp_path / "x.h5", nodes=6, steps=20, progress=False)
    df = pd.read_hdf(made.path)
    df.rename(columns={df.columns[0]: "999999"}).to_hdf(tmp_path / "y.h5", key="df")
    line = _fails(
        capsys,
        tmp_path,
        tmp_path / "y.h5",
        "--adjacency",
        made.adjacency,
        match="sensor ids differ",
    )
    assert "999999" in line and df.columns[0] in line


def test_bad_adjacency_pickle(tmp_path, capsys):
    made = synth_traffic(tmp_path / "x.h5", nodes=6, steps=20, progress=False)
    (tmp_path / "bad.pkl").write_bytes(b"\x80\x04not a pickle")
    _fails(
        capsys,
        tmp_path,
        made.path,
        "--adjacency",
        tmp_path / "bad.pkl",
        match="not a readable adjacency pickle",
    )
    import pickle

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(os.system))
    _fails(
        capsys,
        tmp_path,
        made.path,
        "--adjacency",
        tmp_path / "evil.pkl",
        match="refusing to unpickle",
    )


def test_empty_frame(tmp_path, capsys):
    _frame().iloc[:0].to_hdf(tmp_path / "x.h5", key="df")
    _fails(capsys, tmp_path, tmp_path / "x.h5", match="empty frame")


def test_destination_exists(tmp_path, capsys):
    made = synth_traffic(tmp_path / "x.h5", nodes=6, steps=20, progress=False)
    assert _run(capsys, made.path, tmp_path / "out.zarr")[0] == 0
    first = open_store(tmp_path / "out.zarr").attrs["source"]["sha256"]
    _fails(capsys, tmp_path, made.path, match="exists (pass --overwrite")
    synth_traffic(tmp_path / "x.h5", nodes=6, steps=25, seed=1, overwrite=True, progress=False)
    assert _run(capsys, made.path, tmp_path / "out.zarr", "--overwrite")[0] == 0
    store = open_store(tmp_path / "out.zarr")
    assert store.shape[0] == 25 and store.attrs["source"]["sha256"] != first
    (tmp_path / "notastore").mkdir()
    code, err, _ = _run(capsys, made.path, tmp_path / "notastore", "--overwrite")
    assert code == 2 and "is not a stzarr store" in err[0]


def test_destination_not_writable(tmp_path, capsys):
    made = synth_traffic(tmp_path / "x.h5", nodes=6, steps=20, progress=False)
    (tmp_path / "file").write_text("")
    code, err, _ = _run(capsys, made.path, tmp_path / "file" / "out.zarr")
    assert code == 2 and "does not exist" in err[0] and len(err) == 1
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        # root ignores permission bits; /proc refuses new directories even to root
        target = locked if not os.access(locked, os.W_OK) else Path("/proc")
        if not target.is_dir():
            pytest.skip("no unwritable directory available on this system")
        code, err, _ = _run(capsys, made.path, target / "stzarr-test-out.zarr")
        assert code == 2 and len(err) == 1
        assert "not writable" in err[0] or "cannot write" in err[0]
        assert not any(
            p.name.startswith((".stzarr-test-out", "stzarr-test-out")) for p in target.iterdir()
        )
    finally:
        locked.chmod(0o700)


def test_interrupted_conversion_leaves_nothing(tmp_path, monkeypatch):
    made = synth_traffic(tmp_path / "x.h5", nodes=20, steps=2000, progress=False)
    calls = []
    real_read = FixedFrameReader.read

    def read_then_interrupt(self, t0, t1):
        calls.append(t0)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_read(self, t0, t1)

    monkeypatch.setattr(FixedFrameReader, "read", read_then_interrupt)
    monkeypatch.setattr(streaming, "BLOCK_BYTES", 100 * 20 * 4)  # one 100-step chunk per block
    with pytest.raises(KeyboardInterrupt):
        convert(made.path, tmp_path / "s.zarr", chunk_time=100, progress=False)
    assert len(calls) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.h5", "x_adj_mx.pkl"]


def test_option_of_another_family_is_refused(tmp_path, shared_data, capsys):
    _fails(
        capsys,
        tmp_path,
        shared_data / "chickenpox.json",
        "--key",
        "df",
        match="--key does not apply to pgt-json",
    )


def test_dynamic_graph_json_is_refused(tmp_path, shared_data, capsys):
    _fails(capsys, tmp_path, shared_data / "england_covid.json", match="dynamic graphs")


def test_cli_process_exits_2_with_one_line(tmp_path):
    src = tmp_path / "x.h5"
    src.write_bytes(b"\0" * 100)
    proc = subprocess.run(
        [sys.executable, "-m", "stzarr", "convert", str(src), str(tmp_path / "o.zarr")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stzarr convert: error: ")
    assert not (tmp_path / "o.zarr").exists()


def test_values_that_disagree_with_the_index_are_reported(tmp_path, capsys):
    """A file whose values block is shorter than its index names both sizes."""
    made = synth_traffic(tmp_path / "x.h5", nodes=8, steps=50, progress=False)
    with h5py.File(made.path, "r+") as h5:
        del h5["df/block0_values"]
        h5["df"].create_dataset("block0_values", data=np.zeros((10, 8)))  # too few rows
    _fails(capsys, tmp_path, made.path, match="holds 10 rows x 8 columns; the index has 50")
