"""``stzarr append``: a store extended in time is the store of the whole series, and a failed
append leaves the store exactly as it was, readable throughout."""

import fcntl
import hashlib
import itertools
import os

import numpy as np
import pandas as pd
import pytest

from stzarr import open_store
from stzarr.cli import main
from stzarr.converters import append as append_module
from stzarr.converters import convert, streaming
from stzarr.converters.synth import synth_traffic
from stzarr.plan.windows import split_bounds
from stzarr.store.stats import CACHE_ATTR, cache_stats, compute_stats


def _snapshot(store_dir):
    """Every file of a store: relative path -> (inode, SHA-256 of its bytes)."""
    out = {}
    for root, _, files in os.walk(store_dir):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, store_dir)] = (
                    os.stat(path).st_ino,
                    hashlib.sha256(fh.read()).hexdigest(),
                )
    return out


@pytest.fixture
def parts(tmp_path):
    """A generated METR-LA-layout series split into a store (first 333 steps) and three files."""
    made = synth_traffic(tmp_path / "all.h5", nodes=9, steps=900, progress=False)
    df = pd.read_hdf(made.path)
    cuts = [0, 333, 500, 640, 900]
    paths = []
    for i, (a, b) in enumerate(itertools.pairwise(cuts)):
        path = tmp_path / f"part{i}.h5"
        df.iloc[a:b].to_hdf(path, key="df")
        paths.append(path)
    store = tmp_path / "s.zarr"
    convert(
        paths[0], store, adjacency=made.adjacency, chunk_time=50, shard_time=200, progress=False
    )
    return df, store, paths


def _raw_valid(values):
    return values[(values != 0) & ~np.isnan(values)]


def test_appended_store_is_the_whole_series_and_stats_are_recomputed(parts, capsys):
    df, store_path, paths = parts
    store = open_store(store_path)
    before = compute_stats(store, bounds=split_bounds(store.shape[0])["train"])
    assert cache_stats(store, before)
    assert CACHE_ATTR in open_store(store_path).attrs  # cached
    code = main(["append", str(store_path), str(paths[1]), "--quiet"])
    assert code == 0
    assert "cached statistics dropped" in capsys.readouterr().err
    code = main(["append", str(store_path), str(paths[2]), str(paths[3]), "--quiet"])
    assert code == 0
    store = open_store(store_path)
    assert store.shape == (900, 9, 1)
    np.testing.assert_array_equal(store.read(0, 900)[:, :, 0], df.to_numpy(np.float32))
    np.testing.assert_array_equal(store.time, df.index.to_numpy())
    assert CACHE_ATTR not in store.attrs  # invalidated
    # statistics over the new train split, against NumPy on the raw values
    train = split_bounds(900)["train"]
    stats = compute_stats(store, bounds=train)
    valid = _raw_valid(df.to_numpy()[train[0] : train[1]])
    assert stats.count[0] == valid.size
    np.testing.assert_allclose(stats.mean[0], valid.mean(), rtol=1e-6)
    np.testing.assert_allclose(stats.std[0], valid.std(), rtol=1e-5)
    assert stats.mean[0] != before.mean[0]
    # provenance: every file, its SHA-256, its steps
    sources = store.attrs["sources"]
    assert [s["file"] for s in sources] == [p.name for p in paths]
    assert [s["sha256"] for s in sources] == [
        hashlib.sha256(p.read_bytes()).hexdigest() for p in paths
    ]
    assert [s["steps"] for s in sources] == [[0, 333], [333, 500], [500, 640], [640, 900]]
    assert "appended_at" in sources[3] and "appended_at" not in sources[0]
    raw = df.to_numpy()
    missing = store.attrs["missing"]
    assert missing["total"] == raw.size and missing["zero"] == int((raw == 0).sum())
    # the graph and the integrity record survive; a full verify reads every chunk
    assert store.edge_index.shape[1] > 9
    assert main(["verify", str(store_path), "--full"]) == 0


def test_unchanged_chunks_are_shared_not_copied(parts):
    _, store_path, paths = parts
    old = _snapshot(store_path)
    result = append_module.append_sources(store_path, [paths[1]], progress=False)
    new = _snapshot(store_path)
    # shards of 200 steps: shard 0 lies before the old end (333) and is the same inode
    assert new["data/c/0/0/0"] == old["data/c/0/0/0"]
    assert new["data/c/1/0/0"][0] != old["data/c/1/0/0"][0]  # the boundary shard: a new file
    assert result.linked_files == 1 and result.copied_files > 0


def _failing_append(capsys, tmp_path, store_path, *srcs, match):
    old = _snapshot(store_path)
    siblings = sorted(p.name for p in tmp_path.iterdir())
    code = main(["append", str(store_path), *map(str, srcs), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("stzarr append: error: "), err
    assert match in err[0], err[0]
    assert _snapshot(store_path) == old  # byte for byte, inode for inode
    assert sorted(p.name for p in tmp_path.iterdir()) == siblings  # no partial left
    return err[0]


def test_bad_appends_leave_the_store_as_it_was(parts, tmp_path, capsys):
    df, store_path, paths = parts
    _failing_append(capsys, tmp_path, store_path, paths[2], match="gap of")
    _failing_append(capsys, tmp_path, store_path, paths[0], match="overlapping or out of order")
    df.iloc[333:400].rename(columns={df.columns[0]: "42"}).to_hdf(tmp_path / "o.h5", key="df")
    _failing_append(capsys, tmp_path, store_path, tmp_path / "o.h5", match="sensor ids differ")
    (tmp_path / "o.h5").unlink()
    # a bad value deep in a CSV: found while streaming, after new chunks were written
    bad = df.iloc[333:700].copy()
    bad.to_csv(tmp_path / "late.csv", index_label="time")
    text = (tmp_path / "late.csv").read_text().splitlines()
    text[-3] = text[-3].rsplit(",", 1)[0] + ",n/a?"
    (tmp_path / "late.csv").write_text("\n".join(text) + "\n")
    _failing_append(capsys, tmp_path, store_path, tmp_path / "late.csv", match="is not a number")
    (tmp_path / "late.csv").unlink()
    _failing_append(capsys, tmp_path, tmp_path / "nope.zarr", paths[1], match="no store at")


def test_an_interrupted_append_leaves_the_store_as_it_was(parts, tmp_path, monkeypatch):
    _, store_path, paths = parts
    old = _snapshot(store_path)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(append_module, "seal", interrupt)  # after every new chunk is written
    with pytest.raises(KeyboardInterrupt):
        append_module.append_sources(store_path, [paths[1]], progress=False)
    assert _snapshot(store_path) == old
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_the_store_stays_readable_while_appending(parts, monkeypatch):
    df, store_path, paths = parts
    checks = []
    real_write = append_module._Extension.write

    def write_then_read_live_store(self, start, block):
        real_write(self, start, block)
        live = open_store(store_path)  # what another process sees right now
        assert live.shape == (333, 9, 1)
        np.testing.assert_array_equal(
            live.read(0, 333)[:, :, 0], df.iloc[:333].to_numpy(np.float32)
        )
        checks.append(start)

    monkeypatch.setattr(append_module._Extension, "write", write_then_read_live_store)
    monkeypatch.setattr(streaming, "BLOCK_BYTES", 1)  # one shard per write: several writes
    append_module.append_sources(store_path, [paths[1], paths[2]], progress=False)
    assert checks == [333, 400, 600]  # cut on the 200-step shard boundaries
    assert open_store(store_path).shape == (640, 9, 1)


def test_a_concurrent_append_is_refused(parts, capsys, tmp_path):
    _, store_path, paths = parts
    fd = os.open(store_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _failing_append(capsys, tmp_path, store_path, paths[1], match="another process")
    finally:
        os.close(fd)


def test_append_without_time_column_continues_the_store(tmp_path, shared_data):
    raw = pd.read_csv(shared_data / "los_speed.csv")
    raw.iloc[:1000].to_csv(tmp_path / "a.csv", index=False)
    raw.iloc[1000:].to_csv(tmp_path / "b.csv", index=False)
    convert(tmp_path / "a.csv", tmp_path / "s.zarr", start="2012-03-01", freq="5min",
            progress=False)  # fmt: skip
    result = append_module.append_sources(tmp_path / "s.zarr", [tmp_path / "b.csv"], progress=False)
    assert result.shape == (2016, 207, 1)
    store = open_store(tmp_path / "s.zarr")
    assert store.time[-1] == np.datetime64("2012-03-07T23:55")
    np.testing.assert_array_equal(store.read(0, 2016)[:, :, 0], raw.to_numpy(np.float32))
    whole = compute_stats(store, bounds=split_bounds(2016)["train"])
    valid = raw.to_numpy()[: split_bounds(2016)["train"][1]]
    valid = valid[~np.isnan(valid)]
    np.testing.assert_allclose(whole.mean[0], valid.mean(), rtol=1e-6)
