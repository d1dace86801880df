"""``stzarr verify``: stores corrupted on purpose are reported by name with a non-zero exit; a
sound store passes, and its recomputed counts match counts taken from the raw values."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

import stzarr.store.format as store_mod
from stzarr.cli import main
from stzarr.converters import convert
from stzarr.converters.synth import synth_traffic
from stzarr.store import manifest
from stzarr.store.format import consolidate, write_store
from stzarr.store.verify import verify_store
from stzarr.testing.validators import make_series, make_store


def _statuses(report) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in report.findings:
        out[f.check] = "fail" if "fail" in (out.get(f.check), f.status) else f.status
    return out


def _failures(report) -> list[str]:
    return [f.detail for f in report.findings if f.status == "fail"]


@pytest.fixture(params=[None, 60], ids=["chunked", "sharded"])
def store(request, tmp_path):
    return make_store(
        tmp_path / "s.zarr", n_time=240, n_node=5, chunk_time=20, shard_time=request.param
    )


@pytest.mark.parametrize("shard_time", [None, 64])
def test_a_sound_store_passes_and_its_counts_match_the_raw_values(tmp_path, capsys, shard_time):
    made = synth_traffic(tmp_path / "x.h5", nodes=6, steps=300, progress=False)
    dst = str(tmp_path / "s.zarr")
    convert(
        made.path,
        dst,
        adjacency=made.adjacency,
        chunk_time=16,
        shard_time=shard_time,
        progress=False,
    )
    report = verify_store(dst, full=True)
    assert report.ok, _failures(report)
    assert _statuses(report) == {
        "metadata": "ok",
        "manifest": "ok",
        "format": "ok",
        "checksums": "ok",
        "chunk files": "ok",
        "time": "ok",
        "node": "ok",
        "feature": "ok",
        "graph": "ok",
        "chunks": "ok",
        "counts": "ok",
    }
    raw = pd.read_hdf(made.path, "df").to_numpy()  # the oracle: pandas on the source
    zeros, nans = np.count_nonzero(raw == 0), np.count_nonzero(np.isnan(raw))
    counts = next(f.detail for f in report.findings if f.check == "counts")
    assert counts == f"{raw.size} readings, {zeros} zero, {nans} NaN"
    assert main(["verify", dst, "--full", "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{dst}: ok"


def _corrupt(path: Path, how: str) -> str:
    """Damage the second data file; return the key verify must name."""
    rel = "data/c/1/0/0"
    target = path / rel
    data = bytearray(target.read_bytes())
    if how == "delete":
        target.unlink()
    elif how == "truncate":
        target.write_bytes(bytes(data[: len(data) - 7]))
    else:
        for i in range(len(data) // 3, len(data) // 3 + 8):
            data[i] ^= 0x5A
        target.write_bytes(bytes(data))
    return "c/1/0/0"


@pytest.mark.parametrize("how", ["delete", "truncate", "flip"])
def test_a_damaged_chunk_or_shard_is_reported_by_name(store, capsys, how):
    key = _corrupt(Path(store.path), how)
    quick = verify_store(store.path)
    full = verify_store(store.path, full=True)
    assert not full.ok
    named = [d for d in _failures(full) if "array 'data'" in d and key in d]
    assert named, _failures(full)
    if how == "flip":  # damage inside a file of the right size needs the full read
        assert quick.ok
    else:  # the listing alone finds a missing file, the manifest a truncated one
        assert not quick.ok and any(key in d for d in _failures(quick))
    assert main(["verify", store.path, "--full", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and key in out and "check(s) failed" in out


def test_recorded_counts_that_disagree_with_the_data_fail(store):
    group = zarr.open_group(store.path, mode="r+", zarr_format=3)
    missing = dict(group.attrs["missing"]) if "missing" in group.attrs else None
    if missing is None:  # make_store records none: record wrong ones
        missing = {"total": 1, "zero": 0, "nan": 0, "inf": 0}
    else:
        missing["zero"] += 1
    group.attrs["missing"] = missing
    consolidate(store.path)
    manifest.write(store.path)  # as a writer that recorded wrong counts would have sealed it
    report = verify_store(store.path, full=True)
    assert _statuses(report)["counts"] == "fail"


def _write(tmp_path, **overrides):
    n = 40
    kwargs = dict(
        time=np.datetime64("2020-01-01", "ns") + np.arange(n) * np.timedelta64(5, "m"),
        node_ids=["a", "b", "c"],
        feature_names=["x"],
        edge_index=[[0, 1], [1, 2]],
        edge_weight=[0.5, 1.0],
        attrs={"missing_value": "nan"},
        chunk_time=10,
    )
    kwargs.update(overrides)
    return write_store(tmp_path / "w.zarr", make_series(n, 3, 1), **kwargs).path


@pytest.mark.parametrize(
    ("overrides", "check", "message"),
    [
        (
            {"time": np.datetime64("2020-01-01", "ns") + np.r_[0:20, 19:39] * 300_000_000_000},
            "time",
            "not strictly increasing at 1 step(s), first at step 20",
        ),
        ({"node_ids": ["a", "b", "a"]}, "node", "duplicate node ids: a"),
        ({"edge_weight": [0.5, np.nan]}, "graph", "first edge 1 (1 -> 2) weight nan"),
        ({"edge_weight": [-1.0, 1.0]}, "graph", "first edge 0 (0 -> 1) weight -1.0"),
    ],
)
def test_bad_coordinates_and_graphs_fail(tmp_path, overrides, check, message):
    report = verify_store(_write(tmp_path, **overrides))
    assert _statuses(report)[check] == "fail"
    assert any(message in d for d in _failures(report)), _failures(report)


def test_other_format_versions_and_foreign_groups_fail(tmp_path, store):
    group = zarr.open_group(store.path, mode="r+", zarr_format=3)
    group.attrs["stzarr_format_version"] = 99
    manifest.write(store.path)  # as that version would have sealed it
    assert _failures(verify_store(store.path)) == ["format version 99, this stzarr reads 1"]
    zarr.open_group(tmp_path / "foreign.zarr", mode="w", zarr_format=3)
    assert "not a complete stzarr store" in _failures(verify_store(tmp_path / "foreign.zarr"))[0]
    assert "no store at" in _failures(verify_store(tmp_path / "nothing.zarr"))[0]


def test_a_store_without_checksums_warns_and_still_finds_undecodable_chunks(tmp_path, monkeypatch):
    """A store as older stzarr wrote it (no crc32c codec, no integrity record) cannot prove a
    chunk intact, but a truncated chunk still fails to decode and is named."""
    monkeypatch.setattr(store_mod, "codec_chain", lambda c: () if c is None else (c,))
    path = Path(_write(tmp_path))
    monkeypatch.undo()
    group = zarr.open_group(path, mode="r+", zarr_format=3)
    del group.attrs["stzarr_integrity"]
    consolidate(path)
    (path / manifest.MANIFEST_NAME).unlink()  # nor a manifest
    report = verify_store(path, full=True)
    assert report.ok and _statuses(report)["checksums"] == "warn"
    chunk = path / "data" / "c" / "2" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:9])
    report = verify_store(path, full=True)
    assert not report.ok
    assert any("array 'data' chunk c/2/0/0 cannot be decoded" in d for d in _failures(report))
