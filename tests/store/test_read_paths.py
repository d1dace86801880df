"""Every read path of a store's data: exact values, damage named, each file read once.

Paths: stzarr's reader on a local store and on a store at a URL (``memory://``), and zarr's own
pipeline through the checked store (``configure_io("zarr")``), each on an unsharded and a sharded
layout. The oracle is the NumPy series written; damage is made by editing the files; opens are
counted at the filesystem layer (a Python audit hook on ``open``, and fsspec's memory
filesystem), not by the reader.
"""

from __future__ import annotations

import sys
import tracemalloc
import uuid
from collections import Counter
from pathlib import Path

import fsspec
import google_crc32c
import numpy as np
import pytest
import zarr
from zarr.storage import FsspecStore, LocalStore

from stzarr import open_store
from stzarr.data.batcher import SeriesBatcher
from stzarr.errors import StoreDamagedError
from stzarr.plan.windows import WindowSpec
from stzarr.store.format import StoreWriter
from stzarr.store.io_config import active_pipeline, configure_io, zarrs_available
from stzarr.store.rechunk import rechunk_store
from stzarr.store.stats import compute_stats
from stzarr.store.verify import verify_store
from stzarr.testing.oracles import numpy_stats
from stzarr.testing.validators import make_series

N_TIME, N_NODE, N_FEATURE = 250, 9, 2
LAYOUTS = {"unsharded": (32, None), "sharded": (32, 96)}
PATHS = ("stzarr", "stzarr-url", "zarr")
RANGES = [(0, N_TIME), (5, 97), (64, 96), (31, 33), (200, 250), (249, 250)]


@pytest.fixture
def restore_pipeline():
    """Put back the process's pipeline after a test switches it."""
    before = active_pipeline()
    yield
    configure_io(before.requested, before.threads)


@pytest.fixture
def memory_root():
    """A fresh ``memory://`` folder, removed afterwards."""
    root = f"stzarr-reads-{uuid.uuid4().hex[:8]}"
    yield f"memory://{root}"
    fs = fsspec.filesystem("memory")
    if fs.exists(f"/{root}"):
        fs.rm(f"/{root}", recursive=True)


def _series() -> np.ndarray:
    """The oracle: steps 64-95 all missing (a whole chunk; in the sharded layout a whole inner
    chunk), a NaN and zeros elsewhere; 250 steps, so the last chunk and shard are partial."""
    data = make_series(N_TIME, N_NODE, N_FEATURE, missing_fraction=0.1, seed=3)
    data[17, 3, 1] = np.nan
    data[64:96] = np.nan
    return data


def _write(path: str | Path, data: np.ndarray, layout: str) -> None:
    chunk_time, shard_time = LAYOUTS[layout]
    n_time = data.shape[0]
    with StoreWriter(
        path,
        time=np.datetime64("2012-03-01", "ns") + np.arange(n_time) * np.timedelta64(5, "m"),
        node_ids=[str(i) for i in range(data.shape[1])],
        feature_names=[f"f{i}" for i in range(data.shape[2])],
        edge_index=np.array([[0, 1], [1, 0]]),
        edge_weight=np.array([1.0, 0.5]),
        attrs={"missing_value": "zero"},
        chunk_time=chunk_time,
        shard_time=shard_time,
    ) as writer:
        for start in range(0, n_time, writer.block_time):
            writer.write(start, data[start : start + writer.block_time])


def _store_at(path_kind: str, layout: str, tmp_path: Path, memory_root: str, data: np.ndarray):
    """Write ``data`` where ``path_kind`` reads from, choose its pipeline, and open it."""
    where = f"{memory_root}/s.zarr" if path_kind == "stzarr-url" else tmp_path / "s.zarr"
    _write(where, data, layout)
    configure_io("zarr" if path_kind == "zarr" else "auto")
    store = open_store(where)
    assert store.read_pipeline == ("zarr" if path_kind == "zarr" else "stzarr")
    return store


def _same(got: np.ndarray, expected: np.ndarray) -> None:
    """Bit for bit, NaN included."""
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("path_kind", PATHS)
def test_every_path_reads_the_written_bytes(
    tmp_path, memory_root, restore_pipeline, path_kind, layout
):
    data = _series()
    store = _store_at(path_kind, layout, tmp_path, memory_root, data)
    for lo, hi in RANGES:
        _same(store.read(lo, hi), data[lo:hi])
    out = np.full((40, N_NODE, N_FEATURE), 7.0, np.float32)
    assert store.read(90, 130, out=out) is out
    _same(out, data[90:130])
    _same(np.asarray(store.data.values), data)  # the dask view (statistics) over read blocks
    for threads in (1, 2, 5):
        configure_io(active_pipeline().requested, threads)
        _same(store.read(0, N_TIME), data)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_store_of_only_missing_readings_reads_as_nan(tmp_path, layout):
    data = np.full((100, 3, 1), np.nan, np.float32)
    _write(tmp_path / "s.zarr", data, layout)
    store = open_store(tmp_path / "s.zarr")
    assert store.read_pipeline == "stzarr"
    _same(store.read(0, 100), data)
    _same(store.read(33, 97), data[33:97])


def _shard_index(raw: bytearray, n_inner: int) -> np.ndarray:
    return np.frombuffer(raw[-(16 * n_inner + 4) : -4], dtype="<u8").copy().reshape(-1, 2)


def _damage(fs: fsspec.AbstractFileSystem, root: str, layout: str, damage: str) -> str:
    """Damage the second file of ``data`` (steps 32-63, or the shard of steps 96-191, at its
    inner chunk of steps 128-159); return how errors must name it."""
    sharded = layout == "sharded"
    key = "c/1/0/0"
    path = f"{root}/data/{key}"
    raw = bytearray(fs.cat_file(path))
    if damage == "missing file":
        fs.rm(path)
    elif damage == "flipped byte":
        offset, nbytes = _shard_index(raw, 3)[1] if sharded else (0, len(raw))
        raw[int(offset + nbytes // 2)] ^= 0xFF
        fs.pipe_file(path, bytes(raw))
    elif damage == "missing inner chunk":  # absent in the index, the index checksum valid
        index = _shard_index(raw, 3)
        index[1] = np.iinfo(np.uint64).max
        body = index.tobytes()
        raw[-(16 * 3 + 4) :] = body + google_crc32c.value(body).to_bytes(4, "little")
        fs.pipe_file(path, bytes(raw))
    else:  # truncated
        fs.pipe_file(path, bytes(raw[: len(raw) - 100]))
    return f"array 'data' {'shard' if sharded else 'chunk'} {key}"


DAMAGES = [
    ("unsharded", "flipped byte"),
    ("unsharded", "missing file"),
    ("unsharded", "truncated"),
    ("sharded", "flipped byte"),
    ("sharded", "missing file"),
    ("sharded", "missing inner chunk"),
    ("sharded", "truncated"),
]


@pytest.mark.parametrize(("layout", "damage"), DAMAGES)
@pytest.mark.parametrize("path_kind", PATHS)
def test_damage_is_named_on_every_path(
    tmp_path, memory_root, restore_pipeline, path_kind, layout, damage
):
    data = make_series(N_TIME, N_NODE, 1, seed=8)
    store = _store_at(path_kind, layout, tmp_path, memory_root, data)
    fs, root = fsspec.core.url_to_fs(str(store.path))
    name = _damage(fs, root, layout, damage)
    damaged, hit = (32, 40) if layout == "unsharded" else (96, 140)  # file start, a step hit
    for lo, hi in [(0, N_TIME), (hit - 10, hit + 30), (hit, hit + 1)]:
        with pytest.raises(StoreDamagedError, match=name):
            store.read(lo, hi)
    with pytest.raises(StoreDamagedError, match=name):
        compute_stats(store, bounds=(0, N_TIME))
    with pytest.raises(StoreDamagedError, match=name):
        SeriesBatcher.from_store(store, numpy_stats(data, "zero"), WindowSpec(4, 4))
    if path_kind != "stzarr-url":
        with pytest.raises(StoreDamagedError, match=name):
            rechunk_store(store, tmp_path / "copy.zarr", chunk_time=50, progress=False)
        assert not (tmp_path / "copy.zarr").exists()
    _same(store.read(0, damaged), data[:damaged])  # the files before it still read


@pytest.mark.skipif(not zarrs_available(), reason="zarrs is not installed")
def test_zarrs_alone_reads_damage_as_values(tmp_path, restore_pipeline):
    """Why zarrs decodes no stzarr read: on its own it returns a missing inner chunk as the fill
    value and a corrupted one unchecked, without a word."""
    data = make_series(N_TIME, N_NODE, 1, seed=8)
    for damage in ("flipped byte", "missing inner chunk"):
        path = tmp_path / f"{damage}.zarr"
        _write(path, data, "sharded")
        fs, root = fsspec.core.url_to_fs(str(path))
        _damage(fs, root, "sharded", damage)
        configure_io("zarrs")
        plain = zarr.open_array(LocalStore(path, read_only=True), path="data", mode="r")
        assert type(plain._async_array.codec_pipeline).__name__ == "ZarrsCodecPipeline"
        assert not np.array_equal(plain[128:160], data[128:160], equal_nan=True)


class _Opens:
    """Counts ``open`` audit events (``open()``, ``os.open``, ``io.open``) of files under a
    folder while active (audit hooks cannot be removed: it is switched off instead)."""

    hooked: _Opens | None = None

    def __init__(self, root: Path) -> None:
        self.root = str(root) + "/"
        self.counts: Counter[str] = Counter()
        self.active = False
        if _Opens.hooked is None:
            sys.addaudithook(_Opens._hook)
        _Opens.hooked = self

    @staticmethod
    def _hook(event: str, args: tuple) -> None:
        me = _Opens.hooked
        if event == "open" and me is not None and me.active and isinstance(args[0], str):
            if args[0].startswith(me.root):
                me.counts[args[0][len(me.root) :]] += 1


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_local_file_is_opened_once_per_read(tmp_path, layout):
    data = _series()
    _write(tmp_path / "s.zarr", data, layout)
    store = open_store(tmp_path / "s.zarr")
    store.read(0, 1)  # metadata, coordinates: opened before
    opens = _Opens(tmp_path / "s.zarr" / "data")
    file_time = LAYOUTS[layout][1] or LAYOUTS[layout][0]
    for lo, hi in [(0, N_TIME), (5, 97), (100, 101), (150, 250)]:
        opens.counts.clear()
        before = _bytes_read()
        opens.active = True
        try:
            got = store.read(lo, hi)
        finally:
            opens.active = False
        read = _bytes_read() - before
        _same(got, data[lo:hi])
        expected = {f"c/{i}/0/0" for i in range(lo // file_time, -(-hi // file_time))}
        assert set(opens.counts) == expected
        assert set(opens.counts.values()) == {1}
        # and no byte twice, native readers included: the kernel's count of bytes read
        on_disk = sum((tmp_path / "s.zarr" / "data" / key).stat().st_size for key in expected)
        assert read <= on_disk + _IO_STAT_BYTES
        if (lo, hi) == (0, N_TIME):
            assert read >= on_disk


def _bytes_read() -> int:
    """Bytes this process has read through read() system calls so far (the kernel's count,
    which counts the reads of this count too: up to :data:`_IO_STAT_BYTES`)."""
    text = Path("/proc/self/io").read_text()
    return int(text.split("rchar:")[1].split()[0])


_IO_STAT_BYTES = 256


def test_each_url_file_is_fetched_once_per_read(memory_root, monkeypatch):
    """A URL store's files are each fetched in one request when read whole (counted by
    wrapping the fsspec store's ``get``)."""
    data = _series()
    url = f"{memory_root}/s.zarr"
    _write(url, data, "sharded")
    store = open_store(url)
    store.read(0, 1)
    calls: Counter[str] = Counter()
    real = FsspecStore.get

    async def counted(self, key, *args, **kwargs):
        calls[key] += 1
        return await real(self, key, *args, **kwargs)

    monkeypatch.setattr(FsspecStore, "get", counted)
    _same(store.read(0, N_TIME), data)
    assert calls == Counter({"data/c/0/0/0": 1, "data/c/1/0/0": 1, "data/c/2/0/0": 1})
    calls.clear()
    _same(store.read(100, 101), data[100:101])  # part of a shard: its index, then the chunk
    assert calls == Counter({"data/c/1/0/0": 2})


def test_a_read_holds_a_bounded_number_of_files(tmp_path, restore_pipeline):
    """Above its output, a read of 40 files holds at most the files in flight (four at two
    threads) and two chunk temporaries, measured by tracemalloc (NumPy reports to it)."""
    data = make_series(40 * 32, 200, seed=2)
    _write(tmp_path / "s.zarr", data, "unsharded")
    configure_io("auto", 2)
    store = open_store(tmp_path / "s.zarr")
    out = np.empty((len(data) - 10, 200, 1), np.float32)
    store.read(0, 1)
    chunk_bytes = 32 * 200 * 4
    tracemalloc.start()
    try:
        store.read(5, len(data) - 5, out=out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _same(out, data[5:-5])
    assert peak <= (4 + 2) * chunk_bytes + 64 * 2**10  # 40 files: 1 MiB if all were held


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_verify_full_opens_each_data_file_once(tmp_path, layout):
    """``verify --full`` binds each data file to the manifest on the bytes its chunk check
    reads: one open per file, not one for the manifest and another for the chunks."""
    data = _series()
    _write(tmp_path / "s.zarr", data, layout)
    opens = _Opens(tmp_path / "s.zarr" / "data")
    opens.active = True
    try:
        report = verify_store(tmp_path / "s.zarr", full=True)
    finally:
        opens.active = False
    assert report.ok, report.to_dict()
    chunk_files = {k for k in opens.counts if k.startswith("c/")}
    file_time = LAYOUTS[layout][1] or LAYOUTS[layout][0]
    assert chunk_files == {f"c/{i}/0/0" for i in range(-(-N_TIME // file_time))}
    assert {opens.counts[k] for k in chunk_files} == {1}
