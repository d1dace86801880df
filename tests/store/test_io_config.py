"""The codec pipeline: zarrs and zarr-python write the same bytes and read the same values;
which read path the choice selects (damage on every path: ``test_read_paths.py``).

The oracle is the raw NumPy series written, and the other pipeline's files byte for byte.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from stzarr import open_store
from stzarr.errors import StzarrError
from stzarr.store.format import COMPRESSORS, DEFAULT_COMPRESSOR, StoreWriter, compressor_name
from stzarr.store.io_config import (
    ENV_PIPELINE,
    ZARRS_PATH,
    active_pipeline,
    configure_io,
    zarrs_available,
)
from stzarr.store.rechunk import rechunk_store
from stzarr.testing.validators import make_series

needs_zarrs = pytest.mark.skipif(not zarrs_available(), reason="zarrs is not installed")
PIPES = ("zarr", "zarrs")


@pytest.fixture
def restore_pipeline():
    """Put back the process's pipeline after a test switches it."""
    before = active_pipeline()
    yield
    configure_io(before.requested, before.threads)


def _write(path: Path, data: np.ndarray, *, compressor: str, chunk_time: int, shard_time):
    """Write ``data`` block by block along time (what converters do: an append per block)."""
    n_time, n_node, n_feature = data.shape
    with StoreWriter(
        path,
        time=np.datetime64("2012-03-01", "ns") + np.arange(n_time) * np.timedelta64(5, "m"),
        node_ids=[str(i) for i in range(n_node)],
        feature_names=[f"f{i}" for i in range(n_feature)],
        edge_index=np.array([[0, 1], [1, 0]]),
        edge_weight=np.array([1.0, 0.5]),
        attrs={"missing_value": "zero", "created_by": "test"},
        chunk_time=chunk_time,
        shard_time=shard_time,
        compressor=compressor,
    ) as writer:
        step = writer.block_time
        for start in range(0, n_time, step):
            writer.write(start, data[start : start + step])


def _data_files(store: Path) -> dict[str, bytes]:
    root = store / "data"
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _read(path: Path, pipeline: str) -> np.ndarray:
    configure_io(pipeline, active_pipeline().threads)
    array = zarr.open_group(path, mode="r", zarr_format=3)["data"]
    expected = ZARRS_PATH if pipeline == "zarrs" else "BatchedCodecPipeline"
    assert type(array._async_array.codec_pipeline).__name__ in expected  # the one asked for ran
    return np.asarray(array[:])


def _inner_chunks(shard: bytes, n: int) -> list[bytes | None]:
    """The encoded inner chunks of a shard file, in chunk order (the index at the end: an
    (offset, nbytes) uint64 pair per chunk, all ones for an absent chunk, then a crc32c)."""
    index = np.frombuffer(shard[-(16 * n + 4) : -4], dtype="<u8").reshape(n, 2)
    absent = np.iinfo(np.uint64).max
    return [None if o == absent else shard[o : o + b] for o, b in index.tolist()]


@needs_zarrs
@pytest.mark.parametrize("compressor", sorted(COMPRESSORS))
@pytest.mark.parametrize("shard_time", [None, 96])
@pytest.mark.parametrize("threads", [1, None])
def test_pipelines_write_identical_bytes_and_read_identical_values(
    tmp_path, restore_pipeline, compressor, shard_time, threads
):
    """Same files whichever pipeline is chosen, every chunk among them, an all-missing one too
    (zarrs on its own skips it); every writer/reader pair reads the exact values, through zarr
    directly and through :meth:`Store.read`."""
    # 250 steps: the last chunk and the last shard are partial; steps 64-95 all missing
    data = make_series(250, 9, 2, missing_fraction=0.1, seed=3)
    data[17, 3, 1] = np.nan
    data[64:96] = np.nan
    paths = {}
    for pipe in PIPES:
        configure_io(pipe, threads)
        paths[pipe] = tmp_path / f"{pipe}.zarr"
        _write(paths[pipe], data, compressor=compressor, chunk_time=32, shard_time=shard_time)
    files = {pipe: _data_files(paths[pipe]) for pipe in PIPES}
    chunk_files = sorted(k for k in files["zarr"] if k != "zarr.json")
    assert len(chunk_files) == (3 if shard_time else 8)
    assert files["zarr"] == files["zarrs"]
    if shard_time:
        inner = [_inner_chunks(files["zarr"][name], 3) for name in chunk_files]
        assert sum(c is not None for shard in inner for c in shard) == 8
    checked = 0
    for written in PIPES:
        for reader in PIPES:
            got = _read(paths[written], reader)
            np.testing.assert_array_equal(got.view(np.uint32), data.view(np.uint32))
            got = open_store(paths[written]).read(0, 250)
            np.testing.assert_array_equal(got.view(np.uint32), data.view(np.uint32))
            checked += 1
    assert checked == 4


@needs_zarrs
def test_rechunk_through_either_pipeline_is_identical(tmp_path, restore_pipeline):
    data = make_series(300, 5, 1, seed=4)
    _write(tmp_path / "src.zarr", data, compressor="zstd", chunk_time=50, shard_time=None)
    outs = {}
    for pipe in PIPES:
        configure_io(pipe)
        outs[pipe] = tmp_path / f"{pipe}-rechunked.zarr"
        store = open_store(tmp_path / "src.zarr")
        rechunk_store(store, outs[pipe], chunk_time=20, shard_time=100, progress=False)
    assert _data_files(outs["zarr"]) == _data_files(outs["zarrs"])
    np.testing.assert_array_equal(_read(outs["zarrs"], "zarr"), data)


@pytest.mark.parametrize("pipeline", ["auto", "zarrs", "zarr"])
def test_the_read_path_follows_the_choice(restore_pipeline, pipeline):
    """stzarr's reader unless zarr's pipeline is chosen, at a URL as on a local path."""
    if pipeline == "zarrs" and not zarrs_available():
        pytest.skip("zarrs is not installed")
    configure_io(pipeline)
    data = make_series(40, 3, 1, seed=5)
    url = f"memory://stzarr-io-config-{pipeline}.zarr"
    _write(url, data, compressor="lz4", chunk_time=16, shard_time=None)
    store = open_store(url)
    assert store.read_pipeline == ("zarr" if pipeline == "zarr" else "stzarr")
    np.testing.assert_array_equal(store.read(0, 40), data)


def test_unknown_pipeline_and_bad_threads_are_refused(restore_pipeline):
    with pytest.raises(StzarrError, match="unknown codec pipeline 'fast'"):
        configure_io("fast")
    with pytest.raises(StzarrError, match="io threads must be >= 1"):
        configure_io("zarr", 0)


def test_choice_is_logged_and_set_in_zarr_and_the_environment(
    restore_pipeline, caplog, monkeypatch
):
    with caplog.at_level(logging.INFO, logger="stzarr.io"):
        cfg = configure_io("zarr", 3)
    assert cfg.pipeline == "zarr" and cfg.threads == 3
    assert "codec pipeline zarr, 3 threads" in caplog.text
    assert zarr.config.get("codec_pipeline.path").endswith("BatchedCodecPipeline")
    assert zarr.config.get("threading.max_workers") == 3
    assert os.environ[ENV_PIPELINE] == "zarr"
    expected = "zarrs" if zarrs_available() else "zarr"
    assert configure_io("auto").pipeline == expected


def test_auto_falls_back_to_zarr_without_zarrs(tmp_path):
    """In a process where ``zarrs`` cannot be imported, auto picks zarr's pipeline and reads."""
    data = make_series(30, 4, 1, seed=6)
    _write(tmp_path / "s.zarr", data, compressor="zstd", chunk_time=10, shard_time=None)
    np.save(tmp_path / "expected.npy", data)
    code = (  # as if zarrs were not installed: no module, no zarr entry point
        "import sys, warnings, importlib.metadata as md; sys.modules['zarrs'] = None\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "eps = md.EntryPoints(e for g in md.entry_points().values() for e in g\n"
        "                     if not e.value.startswith('zarrs'))\n"
        "md.entry_points = lambda **kw: eps.select(**kw) if kw else eps\n"
        "import numpy as np, stzarr\n"
        f"s = stzarr.open_store({str(tmp_path / 's.zarr')!r})\n"
        f"e = np.load({str(tmp_path / 'expected.npy')!r})\n"
        "assert stzarr.active_pipeline().pipeline == 'zarr', stzarr.active_pipeline()\n"
        "assert np.array_equal(s.read(0, 30), e)\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != ENV_PIPELINE}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_cli_option_sets_the_pipeline_and_logs_it(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "stzarr", "-v", "--codec-pipeline", "zarr", "info", "nowhere"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "stzarr.io: codec pipeline zarr" in proc.stderr
    assert "no store at nowhere" in proc.stderr


@pytest.mark.parametrize("pipeline", PIPES)
def test_the_log_says_which_path_decodes_a_stores_reads(tmp_path, pipeline):
    _write(
        tmp_path / "s.zarr", make_series(30, 3, 1), compressor="lz4", chunk_time=10, shard_time=None
    )
    proc = subprocess.run(
        [sys.executable, "-m", "stzarr", "-v", "--codec-pipeline", pipeline, "info", "s.zarr"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    path = "zarr" if pipeline == "zarr" else "stzarr"
    assert f"s.zarr: reads decode through the {path} read path" in proc.stderr


@pytest.mark.parametrize("compressor", sorted(COMPRESSORS))
def test_store_records_its_codec_and_every_codec_stays_readable(tmp_path, compressor):
    """A store written with any codec (the old default ``zstd`` among them) records it in its
    metadata and reads back its exact values with the current default in force."""
    data = make_series(120, 6, 1, seed=7)
    _write(tmp_path / "s.zarr", data, compressor=compressor, chunk_time=25, shard_time=None)
    meta = json.loads((tmp_path / "s.zarr" / "data" / "zarr.json").read_text())
    blosc = [c["configuration"] for c in meta["codecs"] if c["name"] == "blosc"]
    expected = COMPRESSORS[compressor]
    if expected is None:
        assert blosc == []
    else:
        assert [(b["cname"], b["clevel"], b["shuffle"]) for b in blosc] == [
            (expected.cname.value, expected.clevel, expected.shuffle.value)
        ]
    store = open_store(tmp_path / "s.zarr")
    assert compressor_name(store.array) == compressor
    np.testing.assert_array_equal(store.read(0, 120), data)


def test_default_codec_is_the_measured_choice():
    """docs/results/codecs.json names the winner; the store default is that codec."""
    report = Path(__file__).resolve().parents[2] / "docs" / "results" / "codecs.json"
    if not report.exists():
        pytest.skip("no codecs benchmark results")
    winner = json.loads(report.read_text())["choice"]["here_1_of_2_cores"]["winner"]
    cname, clevel, shuffle = winner.split("-")[0], None, winner.split("-")[-1]
    codec = COMPRESSORS[DEFAULT_COMPRESSOR]
    assert codec is not None and codec.cname.value == cname.rstrip("0123456789")
    clevel = int(cname[len(codec.cname.value) :] or codec.clevel)
    assert (codec.clevel, codec.shuffle.value) == (clevel, shuffle)
