"""The bad-input suite: every probe that once lost data, gave a wrong answer with exit
0 or printed a traceback, with its expected one line, its exit code, and a check that nothing
that was there before changed (SHA-256 of every file) and nothing half-written is left behind.
docs/reliability.md lists the matrix.
"""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from stzarr.cli import main
from stzarr.converters.adjacency import load_adjacency
from stzarr.converters.synth import synth_traffic
from stzarr.errors import StoreDamagedError, StoreExistsError, StzarrWarning
from stzarr.store import manifest
from stzarr.store.atomic import MARKER_SUFFIX, stale_partials
from stzarr.store.format import INTEGRITY_KEY, StoreWriter, consolidate, open_store
from stzarr.store.stats import cache_stats, compute_stats
from stzarr.testing.cli import assert_one_line, no_hidden, run_cli, snapshot
from stzarr.testing.validators import make_series, make_store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "s.zarr", n_time=300, n_node=5, chunk_time=32)


# -- 1. nothing that stzarr did not write is replaced or deleted -----------------------------


def _user_dir(tmp_path: Path) -> Path:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    (target / "data.csv").write_text("1,2,3\n")
    return target


def test_rechunk_overwrite_refuses_a_directory_that_is_not_a_store(store, tmp_path, capsys):
    target = _user_dir(tmp_path)
    before = snapshot(tmp_path)
    code, err = run_cli(capsys, "rechunk", store.path, target, "--chunk-time", "16", "--overwrite")
    assert code == 2
    assert_one_line(err, str(target), "is not a stzarr store", "refusing to replace it")
    assert snapshot(tmp_path) == before
    assert no_hidden(tmp_path) == []


def test_rechunk_overwrite_refuses_a_plain_file(store, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    before = snapshot(tmp_path)
    code, err = run_cli(capsys, "rechunk", store.path, target, "--chunk-time", "16", "--overwrite")
    assert code == 2
    assert_one_line(err, "is not a stzarr store")
    assert snapshot(tmp_path) == before
    assert no_hidden(tmp_path) == []  # no .notes.txt.old-* stranded


def test_convert_overwrite_refuses_a_zarr_group_stzarr_did_not_write(tmp_path, capsys):
    h5 = synth_traffic(tmp_path / "x.h5", nodes=5, steps=50, progress=False).path
    foreign = tmp_path / "foreign.zarr"
    group = zarr.open_group(foreign, mode="w", zarr_format=3)
    group.create_array("x", shape=(4,), dtype="int32")[:] = np.arange(4)
    (foreign / "README").write_text("my other files")
    before = snapshot(tmp_path)
    code, err = run_cli(capsys, "convert", h5, foreign, "--overwrite", "--quiet")
    assert code == 2
    assert_one_line(err, "is not a stzarr store", "refusing to replace it")
    assert snapshot(tmp_path) == before
    assert no_hidden(tmp_path) == []


def test_convert_overwrite_replaces_a_stzarr_store_without_leftovers(tmp_path, capsys):
    h5 = synth_traffic(tmp_path / "x.h5", nodes=5, steps=50, progress=False).path
    assert run_cli(capsys, "convert", h5, tmp_path / "s.zarr", "--quiet")[0] == 0
    synth_traffic(tmp_path / "x.h5", nodes=5, steps=70, seed=3, overwrite=True, progress=False)
    assert run_cli(capsys, "convert", h5, tmp_path / "s.zarr", "--quiet", "--overwrite")[0] == 0
    assert open_store(tmp_path / "s.zarr").shape[0] == 70
    assert no_hidden(tmp_path) == []


def test_synth_overwrite_refuses_a_directory_and_writes_no_sidecar(tmp_path, capsys):
    target = _user_dir(tmp_path)
    before = snapshot(tmp_path)
    code, err = run_cli(capsys, "synth", target, "--nodes", "4", "--steps", "20", "--overwrite")
    assert code == 2
    assert_one_line(err, "is not an HDF5 file", "refusing to replace it")
    assert snapshot(tmp_path) == before  # the sidecar adjacency was not written either
    assert no_hidden(tmp_path) == []


def test_synth_bad_start_is_one_line(tmp_path, capsys):
    code, err = run_cli(
        capsys, "synth", tmp_path / "x.h5", "--nodes", "4", "--steps", "20", "--start", "notadate"
    )
    assert code == 2
    assert_one_line(err, "--start 'notadate' is not a timestamp")
    assert list(tmp_path.iterdir()) == []


def _log(path: Path) -> Path:
    log = {
        "config": {"model": "dcrnn", "mode": "single"},
        "epochs": [
            {"epoch": 1, "loss": 2.0, "train": {"mae": 2.0}, "val": {"mae": 2.5}, "end_s": 1.0},
            {"epoch": 2, "loss": 1.5, "train": {"mae": 1.6}, "val": {"mae": 2.0}, "end_s": 2.0},
        ],
        "memory_trace": {"interval_s": 0.1, "ranks": [{"trace": [[0.0, 2**20], [1.0, 2**21]]}]},
    }
    path.write_text(json.dumps(log))
    return path


def test_plot_to_an_unwritable_place_is_one_line(tmp_path, capsys):
    log = _log(tmp_path / "run.json")
    (tmp_path / "file").write_text("not a directory")
    before = snapshot(tmp_path)
    code, err = run_cli(capsys, "plot", log, "-o", tmp_path / "file" / "figs")
    assert code == 2
    assert_one_line(err, "cannot create the output directory")
    assert snapshot(tmp_path) == before


def test_plot_replaces_its_pngs_but_not_other_files(tmp_path, capsys):
    log = _log(tmp_path / "run.json")
    assert run_cli(capsys, "plot", log)[0] == 0
    capsys.readouterr()
    assert run_cli(capsys, "plot", log)[0] == 0  # its own PNGs: replaced
    (tmp_path / "run-curves.png").unlink()
    (tmp_path / "run-curves.png").write_text("my notes")
    before = snapshot(tmp_path)
    code, err = run_cli(capsys, "plot", log)
    assert code == 2
    assert_one_line(err, "run-curves.png exists and is not a PNG file")
    assert {k: v for k, v in snapshot(tmp_path).items() if "memory" not in k} == {
        k: v for k, v in before.items() if "memory" not in k
    }
    assert no_hidden(tmp_path) == []


# -- 2. a damaged store is never read as data ------------------------------------------------


def _damage(store_path: Path, rel: str, how: str) -> Path:
    path = store_path / rel
    data = bytearray(path.read_bytes())
    if how == "delete":
        path.unlink()
    elif how == "flip":
        mid = len(data) // 2
        for i in range(mid, mid + 8):
            data[i] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    return path


DAMAGE = [
    ("data/c/3/0/0", "delete", "array 'data' chunk c/3/0/0 is missing"),
    ("data/c/3/0/0", "flip", "array 'data' chunk c/3/0/0 fails its checksum"),
    ("data/c/3/0/0", "truncate", "array 'data' chunk c/3/0/0 fails its checksum"),
]


@pytest.mark.parametrize(("rel", "how", "message"), DAMAGE)
def test_damaged_data_chunk_fails_every_read_path_with_one_line(store, capsys, rel, how, message):
    path = Path(store.path)
    _damage(path, rel, how)
    damaged = open_store(path)  # metadata, coordinates and graph are intact
    lo, hi = 3 * 32, 4 * 32
    readers = {
        "zarr slice (loaders)": lambda: damaged.array[lo:hi],
        "Store.read (streaming)": lambda: damaged.read(0, hi),
        "dask (statistics)": lambda: damaged.data.isel(time=slice(lo, hi)).values,
        "compute_stats": lambda: compute_stats(damaged, bounds=(0, 300)),
    }
    for name, read in readers.items():
        with pytest.raises(StoreDamagedError, match=message):
            read()
        checked = name
    assert checked == "compute_stats"
    for argv in (
        ("stats", path, "--no-cache"),
        ("info", path, "--full"),
        ("rechunk", path, path.parent / "copy.zarr", "--chunk-time", "64"),
    ):
        code, err = run_cli(capsys, *argv)
        assert code == 2, argv
        line = assert_one_line(err, message)
        assert line.startswith(f"stzarr {argv[0]}: error: {path}")
    assert not (path.parent / "copy.zarr").exists()  # rechunk copied nothing
    assert no_hidden(path.parent) == []


@pytest.mark.parametrize(
    ("array", "rel"), [("edge_index", "edge_index/c/0/0"), ("time", "time/c/0")]
)
def test_damaged_coordinate_or_graph_chunk_is_an_error_at_open(store, capsys, array, rel):
    path = Path(store.path)
    _damage(path, rel, "delete")
    with pytest.raises(StoreDamagedError, match=f"array '{array}' chunk"):
        open_store(path)
    code, err = run_cli(capsys, "info", path)
    assert code == 2
    assert_one_line(err, f"array '{array}' chunk {rel.split('/', 1)[1]} is missing")


def test_training_on_a_damaged_store_stops_with_one_line(tmp_path, capsys):
    store = make_store(tmp_path / "s.zarr", n_time=300, n_node=5, chunk_time=32)
    # cached, so the loader is the first to read the chunk
    cache_stats(store, compute_stats(store, bounds=(0, 210)))
    _damage(Path(store.path), "data/c/8/0/0", "flip")
    code, err = run_cli(
        capsys, "train", store.path, "--epochs", "1", "--max-batches", "1", "--no-progress",
        "--input-steps", "4", "--horizon", "4", "--batch-size", "8",
    )  # fmt: skip
    assert code == 2
    assert_one_line(err, "array 'data' chunk c/8/0/0 fails its checksum")


def test_a_sharded_store_names_the_damaged_shard(tmp_path):
    store = make_store(tmp_path / "s.zarr", n_time=300, n_node=5, chunk_time=20, shard_time=100)
    _damage(Path(store.path), "data/c/1/0/0", "truncate")
    with pytest.raises(StoreDamagedError, match="array 'data' shard c/1/0/0 has a shard index"):
        open_store(store.path).read(0, 300)
    store = make_store(tmp_path / "t.zarr", n_time=300, n_node=5, chunk_time=20, shard_time=100)
    _damage(Path(store.path), "data/c/2/0/0", "flip")
    with pytest.raises(StoreDamagedError, match=r"array 'data' shard c/2/0/0 \(inner chunk"):
        open_store(store.path).read(200, 300)


def _writer(path: Path, data: np.ndarray | None = None) -> StoreWriter:
    """A writer of ``data`` (default: 50 steps of 3 nodes) to ``path``, not yet committed."""
    data = make_series(50, 3, 1) if data is None else data
    time = np.datetime64("2020-01-01", "ns") + np.arange(len(data)) * np.timedelta64(5, "m")
    writer = StoreWriter(
        path,
        time=time,
        node_ids=["a", "b", "c"],
        feature_names=["x"],
        edge_index=[[0], [1]],
        edge_weight=[1.0],
        attrs={"missing_value": "nan"},
        chunk_time=10,
    )
    writer.write(0, data)
    return writer


def test_an_all_missing_chunk_is_written_and_reads_as_nan(tmp_path):
    """Every chunk is on disk, all-NaN ones too, so 'missing file' can only mean damage."""
    data = make_series(100, 3, 1)
    data[20:40] = np.nan
    _writer(tmp_path / "s.zarr", data).commit()
    chunk_files = sorted(p.name for p in (tmp_path / "s.zarr" / "data" / "c").iterdir())
    assert chunk_files == [str(i) for i in range(10)]
    got = open_store(tmp_path / "s.zarr").read(0, 100)
    np.testing.assert_array_equal(got, data)  # NaN positions equal too
    assert open_store(tmp_path / "s.zarr").attrs[INTEGRITY_KEY]["chunk_files"]["data"] == 10


def _strip_checksums(path: Path) -> None:
    """Make ``path`` look like a store of an older stzarr: no integrity record."""
    group = zarr.open_group(path, mode="r+", zarr_format=3)
    del group.attrs[INTEGRITY_KEY]
    consolidate(path)
    (path / manifest.MANIFEST_NAME).unlink()  # nor a manifest


def test_a_store_without_checksums_stays_readable_with_a_warning(store, capsys):
    path = Path(store.path)
    _strip_checksums(path)
    with pytest.warns(StzarrWarning, match="no chunk checksums"):
        old = open_store(path)
    np.testing.assert_array_equal(old.read(0, 300), store.read(0, 300))
    code = main(["info", str(path)])
    err = capsys.readouterr().err.splitlines()
    assert code == 0
    assert_one_line(err, "stzarr info: warning:", "no chunk checksums")


# -- 3. graph values --------------------------------------------------------------------------


def _pickle(path: Path, ids: list[str], adj: np.ndarray) -> Path:
    with path.open("wb") as fh:
        pickle.dump([ids, {s: i for i, s in enumerate(ids)}, adj.astype(np.float32)], fh)
    return path


@pytest.mark.parametrize("bad", [np.nan, np.inf, -0.5])
def test_a_non_finite_or_negative_adjacency_weight_is_refused(tmp_path, capsys, bad):
    made = synth_traffic(tmp_path / "x.h5", nodes=4, steps=40, progress=False)
    ids, _ = load_adjacency(made.adjacency)
    adj = np.eye(4)
    adj[1, 2] = bad
    pkl = _pickle(tmp_path / "bad.pkl", ids, adj)
    before = snapshot(tmp_path)
    code, err = run_cli(
        capsys, "convert", made.path, tmp_path / "s.zarr", "--adjacency", pkl, "--quiet"
    )
    assert code == 2
    assert_one_line(err, f"edge {ids[1]} -> {ids[2]} has weight", "finite and non-negative")
    assert snapshot(tmp_path) == before


def test_a_self_loop_only_graph_converts_with_a_warning(tmp_path, capsys):
    made = synth_traffic(tmp_path / "x.h5", nodes=4, steps=40, progress=False)
    ids, _ = load_adjacency(made.adjacency)
    pkl = _pickle(tmp_path / "loops.pkl", ids, np.eye(4))
    code, err = run_cli(
        capsys, "convert", made.path, tmp_path / "s.zarr", "--adjacency", pkl, "--quiet"
    )
    assert code == 0
    assert_one_line(err, "warning", "all 4 edges are self-loops")


@pytest.mark.parametrize(
    ("edges", "weights", "message"),
    [
        ([[0, 1], [1, 2, 0]], [1.0, 1.0], "'edges' must be a list of [source, target] pairs"),
        ([[0, 1], [1, 2]], [1.0, float("nan")], "edge 1 -> 2 has weight nan"),
        ([[0, 1], [1, 2]], [1.0, "heavy"], "'weights' must be a list of numbers"),
    ],
)
def test_bad_json_graphs_are_one_line(tmp_path, capsys, edges, weights, message):
    src = tmp_path / "pedalme.json"
    src.write_text(json.dumps({"edges": edges, "weights": weights, "X": [[1.0, 2.0, 3.0]] * 6}))
    code, err = run_cli(capsys, "convert", src, tmp_path / "s.zarr", "--quiet")
    assert code == 2
    assert_one_line(err, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pedalme.json"]


def test_an_empty_json_graph_converts_with_a_warning(tmp_path, capsys):
    src = tmp_path / "pedalme.json"
    src.write_text(json.dumps({"edges": [], "weights": [], "X": [[1.0, 2.0, 3.0]] * 6}))
    code, err = run_cli(capsys, "convert", src, tmp_path / "s.zarr", "--quiet")
    assert code == 0
    assert_one_line(err, "warning", "the graph has no edges")


# -- 4. interruption and races ----------------------------------------------------------------


def test_the_loser_of_a_race_removes_its_partial(tmp_path):
    first, second = _writer(tmp_path / "s.zarr"), _writer(tmp_path / "s.zarr")
    assert len(_partials(tmp_path)) == 2  # two partials, both live
    assert stale_partials(tmp_path / "s.zarr") == []  # a running writer's partial is not stale
    first.commit()
    with pytest.raises(StoreExistsError, match="exists"):
        second.commit()
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]
    assert open_store(tmp_path / "s.zarr").shape == (50, 3, 1)


SLOW_CONVERT = textwrap.dedent(
    """
    import sys, time
    import stzarr.store.format as st
    write = st.StoreWriter.write
    def slow(self, start, block):
        write(self, start, block)
        print("WROTE", flush=True)
        time.sleep(60)
    st.StoreWriter.write = slow
    from stzarr.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _is_partial(path: Path) -> bool:
    return ".partial-" in path.name and not path.name.endswith(MARKER_SUFFIX)


def _partials(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if _is_partial(p)]


def _slow_convert(tmp_path: Path, dst: Path) -> subprocess.Popen:
    made = synth_traffic(tmp_path / "x.h5", nodes=4, steps=40, progress=False)
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_CONVERT, "convert", made.path, str(dst), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout.readline().strip() == "WROTE"  # the partial is on disk now
    assert len([p for p in tmp_path.iterdir() if _is_partial(p)]) == 1
    return proc


def test_sigterm_removes_the_partial_and_exits_143(tmp_path):
    proc = _slow_convert(tmp_path, tmp_path / "s.zarr")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert_one_line(err.splitlines(), "stzarr convert: terminated (SIGTERM)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.h5", "x_adj_mx.pkl"]


def test_a_killed_runs_partial_is_named_by_verify_and_removed_by_clean(tmp_path, capsys):
    dst = tmp_path / "s.zarr"
    proc = _slow_convert(tmp_path, dst)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.communicate(timeout=60)
    (partial,) = [p for p in tmp_path.iterdir() if _is_partial(p)]
    assert stale_partials(dst) == [partial]
    code = main(["verify", str(dst)])
    out = capsys.readouterr().out
    assert code == 1 and str(partial) in out and f"stzarr clean {dst}" in out
    assert main(["clean", str(dst)]) == 0
    assert f"removed {partial}" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.h5", "x_adj_mx.pkl"]


def test_the_next_convert_removes_a_stale_partial_and_says_so(tmp_path, capsys):
    dst = tmp_path / "s.zarr"
    proc = _slow_convert(tmp_path, dst)
    proc.kill()
    proc.communicate(timeout=60)
    (partial,) = [p for p in tmp_path.iterdir() if _is_partial(p)]
    code, err = run_cli(capsys, "convert", tmp_path / "x.h5", dst, "--quiet")
    assert code == 0
    assert_one_line(err, "stzarr convert: warning: removed", partial.name, "interrupted run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr", "x.h5", "x_adj_mx.pkl"]


@pytest.mark.parametrize(
    ("flag", "make", "message"),
    [
        ("--checkpoint", lambda p: p.write_text("x"), "is a file, not a directory"),
        ("--log", lambda p: p.mkdir(), "is a directory, not a file"),
        ("--log", lambda p: p.write_text("{}"), "is not a stzarr training log"),
    ],
)
def test_training_outputs_are_checked_before_training(store, tmp_path, capsys, flag, make, message):
    target = tmp_path / "target"
    make(target)
    before = snapshot(tmp_path)
    code, err = run_cli(capsys, "train", store.path, flag, target, "--no-progress")
    assert code == 2
    assert_one_line(err, message)
    assert snapshot(tmp_path) == before  # refused before anything ran (no statistics cached)


def test_a_closed_pipe_ends_quietly(store):
    proc = subprocess.Popen(
        [sys.executable, "-m", "stzarr", "info", store.path, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    proc.stdout.close()  # like `| head` that has already exited
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141
    assert b"Traceback" not in err and b"BrokenPipe" not in err


def test_an_os_error_is_one_line(tmp_path, capsys):
    log = _log(tmp_path / "run.json")
    shutil.copy(log, tmp_path / "copy.json")
    os.chmod(tmp_path / "copy.json", 0)
    if os.access(tmp_path / "copy.json", os.R_OK):  # root reads anything
        pytest.skip("running as root: permissions are not enforced")
    code, err = run_cli(capsys, "plot", tmp_path / "copy.json")
    assert code == 2
    assert_one_line(err, "copy.json")


def test_warnings_of_the_library_are_not_silenced(store):
    """The CLI formats stzarr's warnings; the library still raises them as warnings."""
    _strip_checksums(Path(store.path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        open_store(store.path)
    assert [w.category for w in caught] == [StzarrWarning]
