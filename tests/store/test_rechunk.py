import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stzarr import SpecError, StoreExistsError, StzarrError, open_store
from stzarr.cli import main
from stzarr.store import rechunk as rechunk_mod
from stzarr.store.rechunk import advise_layout, rechunk_store
from stzarr.store.stats import cache_stats, compute_stats
from stzarr.testing.validators import make_series, make_store


@pytest.fixture
def src(tmp_path):
    store = make_store(tmp_path / "src.zarr", n_time=300, n_node=5, n_feature=2, chunk_time=16)
    cache_stats(store, compute_stats(store, bounds=(0, 210)))  # in the attributes
    return open_store(tmp_path / "src.zarr")


@pytest.mark.parametrize(("chunk_time", "shard_time"), [(10, None), (10, 30), (7, 70), (300, None)])
def test_rechunk_copies_everything_into_the_new_layout(
    src, tmp_path, monkeypatch, chunk_time, shard_time
):
    monkeypatch.setattr(rechunk_mod, "COPY_BLOCK_BYTES", 1000)  # many copy tasks, unaligned
    out = rechunk_store(
        src, tmp_path / "dst.zarr", chunk_time=chunk_time, shard_time=shard_time, progress=False
    )
    assert out.chunk_time == chunk_time and out.shard_time == shard_time
    np.testing.assert_array_equal(out.read(0, 300), make_series(300, 5, 2))
    np.testing.assert_array_equal(out.time, src.time)
    assert out.node_ids == src.node_ids and out.feature_names == src.feature_names
    np.testing.assert_array_equal(out.edge_index, src.edge_index)
    np.testing.assert_array_equal(out.edge_weight, src.edge_weight)
    assert out.attrs["stzarr_stats"] == src.attrs["stzarr_stats"]
    assert out.attrs["missing_value"] == src.attrs["missing_value"]


@pytest.mark.parametrize("compressor", ["lz4", "none"])
def test_rechunk_changes_the_compressor(src, tmp_path, compressor):
    out = rechunk_store(
        src, tmp_path / "dst.zarr", chunk_time=20, compressor=compressor, progress=False
    )
    np.testing.assert_array_equal(out.read(0, 300), make_series(300, 5, 2))
    codecs = [c.to_dict() for c in out.array.compressors]
    codecs = [c.get("configuration", {}).get("cname", c["name"]) for c in codecs]
    assert codecs == ([] if compressor == "none" else [compressor]) + ["crc32c"]


def test_rechunk_refuses_bad_layouts_and_existing_destinations(src, tmp_path):
    with pytest.raises(StzarrError, match="unknown compressor"):
        rechunk_store(src, tmp_path / "a.zarr", chunk_time=10, compressor="gzip", progress=False)
    with pytest.raises(StzarrError, match="multiple"):
        rechunk_store(src, tmp_path / "a.zarr", chunk_time=10, shard_time=25, progress=False)
    assert not (tmp_path / "a.zarr").exists()
    make_store(tmp_path / "other.zarr", n_time=20)
    with pytest.raises(StoreExistsError):
        rechunk_store(src, tmp_path / "other.zarr", chunk_time=10, progress=False)
    assert open_store(tmp_path / "other.zarr").shape[0] == 20
    with pytest.raises(SpecError, match="source"):
        rechunk_store(src, src.path, chunk_time=10, progress=False, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.zarr", "src.zarr"]


def test_advice_at_pems_scale_is_4mib_chunks_in_a_few_hundred_shards():
    advice = advise_layout(105_120, 11_160, 1, world_size=4, max_memory=2 * 10**9)
    assert 1 * 2**20 <= advice.chunk_bytes <= 8 * 2**20
    assert advice.shard_time is not None and advice.shard_time % advice.chunk_time == 0
    assert 100 <= advice.n_files <= 512
    assert advice.n_chunks > advice.n_files


def test_advice_for_a_small_store_is_unsharded_and_follows_the_partitions():
    metr = advise_layout(34_272, 207, 1)
    assert metr.shard_time is None and metr.n_files <= 256
    split = advise_layout(34_272, 207, 1, world_size=8)
    assert split.chunk_time * 16 <= 34_272 * 0.7 // 8 < metr.chunk_time * 16
    streamed = advise_layout(105_120, 11_160, 1, max_memory=100 * 2**20)
    assert streamed.chunk_time * 8 <= 100 * 2**20 // 3 // (11_160 * 4)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 10**6),
    st.integers(1, 20_000),
    st.integers(1, 4),
    st.integers(1, 64),
    st.one_of(st.none(), st.integers(2**20, 2**36)),
)
def test_advice_is_a_valid_layout(n_time, n_node, n_feature, world_size, max_memory):
    a = advise_layout(n_time, n_node, n_feature, world_size=world_size, max_memory=max_memory)
    assert 1 <= a.chunk_time <= n_time
    assert a.n_chunks == -(-n_time // a.chunk_time)
    if a.shard_time is not None:
        assert a.shard_time % a.chunk_time == 0
        assert a.shard_bytes <= rechunk_mod.MAX_SHARD_BYTES
    assert a.n_files <= a.n_chunks


def test_cli_advises_then_rechunks(src, tmp_path, capsys):
    assert main(["rechunk", src.path, "--world-size", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["current"]["chunk_time"] == 16
    assert report["advice"]["chunk_time"] >= 1
    dst = str(tmp_path / "dst.zarr")
    assert main(["rechunk", src.path, dst, "--chunk-time", "20", "--shard-time", "60"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert open_store(dst).shard_time == 60
    assert main(["rechunk", src.path, dst, "--chunk-time", "20"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["rechunk", src.path, "--max-memory", "lots"]) == 2
    assert "stzarr rechunk: error: cannot parse --max-memory" in capsys.readouterr().err


def test_layout_problems_name_what_the_access_pattern_needs(src, tmp_path):
    from stzarr.store.rechunk import layout_problems

    assert layout_problems(src) == [
        "1 partitions of 210 steps hold fewer than 16 chunks of 16 steps"
    ]
    fine = rechunk_store(src, tmp_path / "fine.zarr", chunk_time=13, progress=False)
    assert layout_problems(fine) == []
    assert any("partitions" in p for p in layout_problems(fine, world_size=4))
    assert any("streaming blocks" in p for p in layout_problems(fine, max_memory=2_000))
