"""Sources parsed strictly: a malformed row, a cut number, bytes that are not UTF-8, an integer
index or a contradicting --freq are one line naming the file (and the line), never values that
shifted, a number cut short or a made-up time axis. A property test feeds random damage to every
source and graph format and requires exit 0 (the damage left a valid file) or exit 2 with one
line, never a traceback.
"""

import contextlib
import io
import itertools
import json
import pickle
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stzarr import open_store
from stzarr.cli import main
from stzarr.converters.synth import synth_traffic
from stzarr.store.verify import verify_store

N_NODE, N_STEP = 4, 60


def _cli(*argv) -> tuple[int, list[str]]:
    """Run the CLI in process: exit code and non-blank stderr lines (progress excluded)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in argv])
    lines = err.getvalue().replace("\r", "\n").splitlines()
    return code, [line for line in lines if line.strip() and "%|" not in line]


def _convert_csv(src, dst, *extra) -> tuple[int, list[str]]:
    """``stzarr convert`` of a CSV without a time column (``--start``/``--freq`` give it)."""
    return _cli("convert", src, dst, "--start", "2020-01-01", "--freq", "5min", *extra, "--quiet")


def _refused(code: int, err: list[str], *needles: str) -> None:
    assert code == 2, err
    assert len(err) == 1 and "Traceback" not in err[0], err
    for needle in needles:
        assert needle in err[0], (needle, err[0])


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    values = np.round(rng.uniform(20, 70, (N_STEP, N_NODE)), 8)
    return pd.DataFrame(values, columns=[f"s{i}" for i in range(N_NODE)])


def _csv_lines(frame: pd.DataFrame) -> list[str]:
    return frame.to_csv(index=False, float_format="%.8f").splitlines()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("extra", "a.csv:12: 5 fields, the header has 4"),
        ("missing", "a.csv:12: 3 fields, the header has 4"),
        ("cut", "a.csv:61: the file ends inside this line"),
        ("latin-1", "a.csv:12: not UTF-8 text"),
        ("word", "a.csv:12: 'fast' in column 1 is not a number"),
    ],
)
def test_a_malformed_csv_is_one_line_naming_the_line(tmp_path, frame, damage, message):
    lines = _csv_lines(frame)  # line 1 is the header: data row 10 is line 12 of the file
    body = "\n".join(lines) + "\n"
    if damage == "extra":
        lines[11] += ",55.5"
    elif damage == "missing":
        lines[11] = lines[11].rsplit(",", 1)[0]
    elif damage == "word":
        lines[11] = "fast," + lines[11].split(",", 1)[1]
    if damage == "cut":
        data = body[:-5].encode()  # inside the last number, no final newline
    else:
        data = ("\n".join(lines) + "\n").encode()
        if damage == "latin-1":
            data = data.replace(lines[11].encode(), lines[11].encode() + "é".encode("latin-1"))
    (tmp_path / "a.csv").write_bytes(data)
    code, err = _convert_csv(tmp_path / "a.csv", tmp_path / "s.zarr")
    _refused(code, err, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]


def test_an_integer_parquet_index_is_no_time_axis(tmp_path, frame):
    pytest.importorskip("pyarrow")
    indexed = frame.set_axis(np.arange(N_STEP) * 7)
    indexed.to_parquet(tmp_path / "i.parquet")
    indexed.rename_axis("index").reset_index().to_parquet(tmp_path / "c.parquet")
    for name in ("i.parquet", "c.parquet"):
        dst = tmp_path / f"{name}.zarr"
        code, err = _cli("convert", tmp_path / name, dst, "--quiet")
        _refused(code, err, "--start and --freq")
        assert not dst.exists()
        code, _ = _convert_csv(tmp_path / name, dst)
        assert code == 0
        store = open_store(dst)
        expected = pd.date_range("2020-01-01", periods=N_STEP, freq="5min").to_numpy()
        np.testing.assert_array_equal(store.time, expected)
        assert store.node_ids == list(frame.columns)  # the index is not a sensor


def test_append_refuses_a_freq_that_contradicts_the_store(tmp_path, frame):
    lines = _csv_lines(frame)
    (tmp_path / "a.csv").write_text("\n".join(lines[:41]) + "\n")
    (tmp_path / "b.csv").write_text("\n".join([lines[0], *lines[41:]]) + "\n")
    code, _ = _convert_csv(tmp_path / "a.csv", tmp_path / "s.zarr")
    assert code == 0
    before = (tmp_path / "s.zarr" / "zarr.json").read_bytes()
    code, err = _cli("append", tmp_path / "s.zarr", tmp_path / "b.csv", "--freq", "10min")
    _refused(code, err, "--freq 10min contradicts", "300 s")
    assert (tmp_path / "s.zarr" / "zarr.json").read_bytes() == before
    code, _ = _cli("append", tmp_path / "s.zarr", tmp_path / "b.csv", "--quiet")
    assert code == 0
    expected = pd.date_range("2020-01-01", periods=N_STEP, freq="5min").to_numpy()
    np.testing.assert_array_equal(open_store(tmp_path / "s.zarr").time, expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"from,to,cost\ns0,s1,1.0\ns1,s2,2.0,9\n", "d.csv:3: 4 fields, the header has 3"),
        (b"from,to,cost\ns0,s1,1.0\n\xffs1,s2,2.0\n", "d.csv:3: not UTF-8 text"),
    ],
)
def test_a_damaged_distance_csv_is_one_line(tmp_path, frame, text, message):
    (tmp_path / "a.csv").write_text("\n".join(_csv_lines(frame)) + "\n")
    (tmp_path / "d.csv").write_bytes(text)
    code, err = _convert_csv(tmp_path / "a.csv", tmp_path / "s.zarr", "--graph", tmp_path / "d.csv")
    _refused(code, err, message)
    assert not (tmp_path / "s.zarr").exists()


def test_a_blosc_compressed_hdf5_is_refused_saying_why(tmp_path, frame):
    indexed = frame.set_axis(pd.date_range("2020-01-01", periods=N_STEP, freq="5min"))
    indexed.to_hdf(tmp_path / "b.h5", key="df", complib="blosc", complevel=5)
    code, err = _cli("convert", tmp_path / "b.h5", tmp_path / "s.zarr", "--quiet")
    if code == 0:  # an HDF5 library with the Blosc filter: converted, and right
        np.testing.assert_array_equal(
            open_store(tmp_path / "s.zarr").read(0, N_STEP)[:, :, 0],
            indexed.to_numpy(np.float32),
        )
    else:
        _refused(code, err, "Blosc", "complib")


# -- random damage to every format ---------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> "Pristine":
    """Each format's bytes and the role it plays (``source`` or ``graph``)."""
    root = tmp_path_factory.mktemp("pristine")
    made = synth_traffic(root / "x.h5", nodes=N_NODE, steps=N_STEP, progress=False)
    frame = pd.read_hdf(made.path)
    ids = [str(c) for c in frame.columns]
    out = {"h5": (Path(made.path).read_bytes(), "source")}
    frame.to_csv(root / "x.csv")
    out["csv"] = ((root / "x.csv").read_bytes(), "source")
    try:
        frame.to_parquet(root / "x.parquet")
        out["parquet"] = ((root / "x.parquet").read_bytes(), "source")
    except ImportError:
        pass
    pgt = {
        "edges": [[0, 1], [1, 2], [2, 3]],
        "node_ids": {name: i for i, name in enumerate(ids)},
        "FX": frame.fillna(0).to_numpy().round(3).tolist(),
    }
    out["json"] = (json.dumps(pgt).encode(), "source")
    out["pkl"] = (Path(made.adjacency).read_bytes(), "graph")
    rows = "".join(
        f"{a},{b},{10.0 * (i + 1)}\n" for i, (a, b) in enumerate(itertools.pairwise(ids))
    )
    out["dist.csv"] = (f"from,to,cost\n{rows}".encode(), "graph")
    (root / "ids.txt").write_text(",".join(ids))
    out["npy"] = (_npy_bytes(np.eye(N_NODE, dtype=np.float32)), "graph")
    out["ids"] = ((root / "ids.txt").read_bytes(), "ids")
    out["_source"] = (Path(made.path).read_bytes(), "h5")
    return Pristine(out)


class Pristine(dict):
    """The undamaged files (a short repr: hypothesis prints it with a failing example)."""

    def __repr__(self) -> str:
        return f"Pristine({sorted(self)})"


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


DAMAGE = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(
        st.just("flip"),
        st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), min_size=1, max_size=8),
    ),
    st.tuples(st.just("insert"), st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=16))),
)


def _damaged(data: bytes, damage) -> bytes:
    kind, how = damage
    if kind == "truncate":
        return data[: int(how * len(data))]
    if kind == "flip":
        out = bytearray(data)
        for where, mask in how:
            out[min(int(where * len(out)), len(out) - 1)] ^= mask
        return bytes(out)
    where, garbage = how
    at = int(where * len(data))
    return data[:at] + garbage + data[at:]


@settings(
    max_examples=150,
    derandomize=True,  # the same 150 examples in every run (seeds found none failing)
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    fmt=st.sampled_from(["h5", "csv", "parquet", "json", "pkl", "dist.csv", "npy", "ids"]),
    damage=DAMAGE,
)
def test_random_damage_to_any_format_is_one_line_or_a_sound_store(
    pristine, tmp_path_factory, fmt, damage
):
    if fmt not in pristine:
        return
    root = tmp_path_factory.mktemp(f"damage-{uuid.uuid4().hex[:6]}")
    data, role = pristine[fmt]
    name = "x.ids.txt" if fmt == "ids" else f"x.{fmt}"
    (root / name).write_bytes(_damaged(data, damage))
    dst = root / "s.zarr"
    if role == "source":
        argv = ["convert", root / name, dst, "--quiet"]
        if fmt in ("csv", "parquet"):
            argv += ["--allow-gaps"]
    else:
        (root / "src.h5").write_bytes(pristine["_source"][0])
        graph = root / name
        argv = ["convert", root / "src.h5", dst, "--quiet", "--graph"]
        if fmt == "ids":
            (root / "g.npy").write_bytes(pristine["npy"][0])
            argv += [root / "g.npy", "--graph-ids", graph]
        elif fmt == "npy":
            (root / "ids.txt").write_bytes(pristine["ids"][0])
            argv += [graph, "--graph-ids", root / "ids.txt"]
        else:
            argv += [graph]
    code, err = _cli(*argv)
    assert code in (0, 2), (code, err)
    assert not any("Traceback" in line for line in err), err
    if code == 2:
        assert len(err) == 1, err
        assert not dst.exists()
    else:
        assert verify_store(dst).ok
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]


def test_the_pristine_files_convert(pristine, tmp_path):
    """The property above is not vacuous: every undamaged format converts."""
    for fmt in ("h5", "csv", "parquet", "json", "pkl", "dist.csv"):
        if fmt not in pristine:
            continue
        (tmp_path / f"x.{fmt}").write_bytes(pristine[fmt][0])
    (tmp_path / "src.h5").write_bytes(pristine["_source"][0])
    assert _cli("convert", tmp_path / "x.h5", tmp_path / "a.zarr", "--quiet")[0] == 0
    assert _cli("convert", tmp_path / "x.csv", tmp_path / "b.zarr", "--quiet")[0] == 0
    assert _cli("convert", tmp_path / "x.json", tmp_path / "c.zarr", "--quiet")[0] == 0
    for i, graph in enumerate(("x.pkl", "x.dist.csv")):
        code, err = _cli(
            "convert",
            tmp_path / "src.h5",
            tmp_path / f"g{i}.zarr",
            "--quiet",
            "--graph",
            tmp_path / graph,
        )
        assert code == 0, err
    pickle.loads(pristine["pkl"][0])  # the adjacency is a real pickle
