import json

import numpy as np
import pytest

from stzarr import StatsError, compute_stats, open_store, split_bounds, write_store
from stzarr.cli import main
from stzarr.store.stats import CACHE_ATTR, cache_stats, cached_stats, stats_key
from stzarr.testing.oracles import numpy_stats
from stzarr.testing.validators import make_series, make_series_with_nans, make_store


def _write(path, data, missing_value="zero", chunk_time=16):
    n_time, n_node, n_feature = data.shape
    return write_store(
        path,
        data,
        time=np.datetime64("2012-03-01", "ns") + np.arange(n_time) * np.timedelta64(5, "m"),
        node_ids=[str(i) for i in range(n_node)],
        feature_names=[f"f{i}" for i in range(n_feature)],
        edge_index=np.zeros((2, 0)),
        edge_weight=np.zeros(0),
        attrs={"missing_value": missing_value},
        chunk_time=chunk_time,
    )


@pytest.fixture
def data_with_nans():
    return make_series_with_nans()


@pytest.mark.parametrize("missing_value", ["zero", "nan"])
@pytest.mark.parametrize("per_node", [False, True])
def test_stats_equal_numpy_float64(tmp_path, data_with_nans, missing_value, per_node):
    store = _write(tmp_path / "s.zarr", data_with_nans, missing_value)
    lo, hi = split_bounds(300)["train"]
    got = compute_stats(store, bounds=(lo, hi), per_node=per_node)
    want = numpy_stats(data_with_nans[lo:hi], missing_value, per_node=per_node)
    assert got.mean.shape == ((6, 3) if per_node else (3,))
    np.testing.assert_array_equal(got.count, want.count)
    np.testing.assert_allclose(got.mean, want.mean, rtol=1e-13, atol=0)
    np.testing.assert_allclose(got.std, want.std, rtol=1e-12, atol=0)
    # missing readings were excluded: the zero convention ignores zeros, the nan one counts them
    zeros = (data_with_nans[lo:hi] == 0).sum(axis=(0,) if per_node else (0, 1))
    nans = np.isnan(data_with_nans[lo:hi]).sum(axis=(0,) if per_node else (0, 1))
    total = (hi - lo) * (1 if per_node else 6)
    expect = total - nans - (zeros if missing_value == "zero" else 0)
    np.testing.assert_array_equal(got.count, expect)


def test_stats_are_computed_block_by_block(tmp_path, monkeypatch):
    """Each task sees a block of whole chunks of at most ``BLOCK_BYTES`` (bounded memory for
    stores larger than RAM)."""
    import stzarr.store.stats as stats_module

    store = make_store(tmp_path / "s.zarr", n_time=500, chunk_time=32)
    monkeypatch.setattr(stats_module, "BLOCK_BYTES", 3 * 32 * 7 * 4)  # three 32-step chunks
    seen = []
    block_moments = stats_module._block_moments

    def recording(block, *args):
        seen.append(block.shape[0])
        return block_moments(block, *args)

    monkeypatch.setattr(stats_module, "_block_moments", recording)
    stats = compute_stats(store, bounds=(0, 350))
    # 350 steps in 96-step blocks: 4 blocks (the last partial), after the shift estimate
    # (first chunk) and dask's empty probe of the function's output type
    blocks = [n for n in seen[1:] if n]
    assert seen[0] == 32 and sorted(blocks) == [62, 96, 96, 96]  # in any order (threads)
    np.testing.assert_allclose(stats.mean, numpy_stats(store.read(0, 350), "zero").mean, rtol=1e-13)


def test_caching_is_an_explicit_step_keyed_by_split(tmp_path):
    path = tmp_path / "s.zarr"
    store = make_store(path, n_time=400)
    first = compute_stats(store, bounds=(0, 280))
    assert CACHE_ATTR not in open_store(path).attrs, "computing caches nothing"
    assert cached_stats(store, bounds=(0, 280)) is None
    assert cache_stats(store, first)
    reopened = open_store(path)
    entry = reopened.attrs[CACHE_ATTR][stats_key((0, 280), False)]
    np.testing.assert_array_equal(entry["mean"], first.mean)
    # the cache (not a new pass) answers: poison it and see it come back
    entry["mean"] = [123.0]
    assert cached_stats(reopened, bounds=(0, 280)).mean.tolist() == [123.0]
    # another split is a different key
    assert cached_stats(reopened, bounds=(0, 300)) is None
    other = compute_stats(reopened, bounds=(0, 300))
    assert cache_stats(reopened, other)
    assert other.key != first.key
    assert len(open_store(path).attrs[CACHE_ATTR]) == 2


def test_all_missing_feature_is_a_stats_error(tmp_path):
    data = make_series(200, 4, 2)
    data[:150, :, 1] = 0.0  # feature f1 all missing in the train split
    store = _write(tmp_path / "s.zarr", data)
    with pytest.raises(StatsError, match="feature 'f1' has no valid reading in time\\[0:140\\]"):
        compute_stats(store, bounds=(0, 140))
    assert CACHE_ATTR not in open_store(tmp_path / "s.zarr").attrs, "nothing cached on error"
    # the test split holds valid f1 readings but they must not be used
    with pytest.raises(StatsError):
        compute_stats(store, bounds=(0, 150), per_node=True)


def test_constant_feature_gets_unit_std(tmp_path):
    data = make_series(100, 3, 2)
    data[:, :, 1] = 5.0
    stats = compute_stats(_write(tmp_path / "s.zarr", data), bounds=(0, 70))
    assert stats.std[1] == 1.0 and stats.mean[1] == 5.0


def test_cli_stats_prints_and_caches(tmp_path, capsys):
    path = tmp_path / "s.zarr"
    make_store(path, n_time=400, n_feature=2)
    assert main(["stats", str(path), "--train", "0.6", "--val", "0.2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bounds"]["train"] == [0, 240] and out["cached"] is False
    want = numpy_stats(make_series(400, 7, 2)[:240], "zero")
    np.testing.assert_allclose(out["mean"], want.mean, rtol=1e-13)
    assert main(["stats", str(path), "--train", "0.6", "--val", "0.2"]) == 0
    text = capsys.readouterr().out
    assert "(cache)" in text and "speed" in text


def test_cli_stats_by_timestamps(tmp_path, capsys):
    path = tmp_path / "s.zarr"
    make_store(path, n_time=600)  # 5-minute steps from 2012-03-01 00:00
    code = main(
        [
            "stats",
            str(path),
            "--val-start",
            "2012-03-02",
            "--test-start",
            "2012-03-02T12:00",
            "--json",
            "--per-node",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bounds"] == {"train": [0, 288], "val": [288, 432], "test": [432, 600]}
    assert np.asarray(out["mean"]).shape == (7, 1)


def test_cli_stats_all_missing_is_one_line_exit_2(tmp_path, capsys):
    data = make_series(100, 3, 1)
    data[:80] = np.nan
    _write(tmp_path / "s.zarr", data)
    assert main(["stats", str(tmp_path / "s.zarr")]) == 2
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("stzarr")]
    assert "Traceback" not in err and len(ours) == 1
    assert ours[0].startswith("stzarr stats: error: feature 'f0' has no valid reading")
