"""Trained models in use: checkpoints carry their data record, evaluate and predict run on the
store trained on or a compatible one, and refuse anything else in one line.

Oracles: windows are built with plain NumPy from the store's values as xarray reads them and
the checkpoint's statistics, the model is called directly on them, metrics and the historical
average are computed with NumPy/pandas here.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import stzarr
from stzarr.cli import main
from stzarr.errors import StzarrError
from stzarr.store import manifest
from stzarr.store.format import write_store
from stzarr.testing.validators import make_series, make_store
from stzarr.training.checkpoint import load_checkpoint
from stzarr.training.config import TrainConfig
from stzarr.training.models import build_model
from stzarr.training.train import train

N_TIME, N_NODE, T_IN, H = 900, 6, 6, 4
SPAN = T_IN + H
TEST_STARTS = np.arange(720, N_TIME - SPAN + 1)  # 70/10/20 % of 900 steps: test is [720, 900)


def _config(checkpoint: Path, **extra) -> TrainConfig:
    options = {
        "model": "pgt-batched-dcrnn",
        "model_options": {"hidden": 8},
        "input_steps": T_IN,
        "horizon": H,
        "batch_size": 16,
        "max_batches": 8,
        "epochs": 1,
        "checkpoint_dir": str(checkpoint),
        "progress": False,
        **extra,
    }
    return TrainConfig.of(**options)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store, a model trained on it for one epoch, and the training result."""
    root = tmp_path_factory.mktemp("trained")
    store = make_store(root / "a.zarr", n_time=N_TIME, n_node=N_NODE, chunk_time=64)
    result = train(store, _config(root / "ck"))
    return store, root / "ck", result


def _raw(path) -> tuple[np.ndarray, np.ndarray, xr.Dataset]:
    """The store's values and time as xarray reads them (not through stzarr)."""
    ds = xr.open_zarr(path, consolidated=True)
    return ds["data"].values.astype(np.float64), ds["time"].values, ds


def _direct_forecast(store_path, checkpoint: Path, starts: np.ndarray) -> np.ndarray:
    """The checkpoint's model called directly on windows built with NumPy: raw values (NaN as
    0, the store's "zero" convention), standardised with the checkpoint's float32 statistics,
    plus the time-of-day channel; forecasts de-standardised. ``(b, H, n, f)`` float64."""
    ck = torch.load(checkpoint, weights_only=False)
    record = ck["data"]
    mean = np.asarray(record["stats"]["mean"], dtype=np.float32)
    std = np.asarray(record["stats"]["std"], dtype=np.float32)
    raw, when, ds = _raw(store_path)
    pad = max(0, int(starts.max()) + SPAN - len(when))  # past the end: missing readings
    raw = np.concatenate([raw, np.full((pad, *raw.shape[1:]), np.nan)])
    when = np.concatenate([when, when[-1] + np.arange(1, pad + 1) * np.timedelta64(5, "m")])
    z = ((np.nan_to_num(raw).astype(np.float32) - mean) / std).astype(np.float32)
    stamps = pd.DatetimeIndex(when)
    tod = ((stamps.hour * 3600 + stamps.minute * 60 + stamps.second) / 86400).to_numpy()
    x = np.stack([z[s : s + T_IN] for s in starts])
    cal = np.broadcast_to(tod[np.add.outer(starts, np.arange(T_IN))][..., None, None], x.shape)
    x = np.concatenate([x, cal.astype(np.float32)], axis=-1)
    model = build_model(
        "pgt-batched-dcrnn",
        N_NODE,
        2,
        1,
        T_IN,
        H,
        torch.from_numpy(ds["edge_index"].values),
        torch.from_numpy(ds["edge_weight"].values),
        hidden=8,
    )
    model.load_state_dict(ck["model"])
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    return (pred * std + mean).astype(np.float64)


def _targets(raw: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.stack([raw[s + T_IN : s + SPAN] for s in starts])
    return y, np.isfinite(y) & (y != 0)


def _metrics(pred: np.ndarray, y: np.ndarray, valid: np.ndarray) -> dict:
    err = np.where(valid, pred - np.nan_to_num(y), 0.0)
    ape = valid & (np.abs(y) >= 1e-6)
    return {
        "mae": np.abs(err).sum() / valid.sum(),
        "rmse": np.sqrt((err**2).sum() / valid.sum()),
        "mape": 100 * (np.abs(err)[ape] / np.abs(y[ape])).sum() / ape.sum(),
        "mae_by_step": np.abs(err).sum((0, 2, 3)) / valid.sum((0, 2, 3)),
    }


def _historical_average(raw: np.ndarray, when: np.ndarray, lo: int, hi: int, targets) -> np.ndarray:
    """Per (day of week, 5-minute slot) mean of the valid readings of steps [lo, hi) with pandas,
    the node's mean where a slot has none; returned at the time steps ``targets``."""
    stamps = pd.DatetimeIndex(when)
    slot = stamps.day_of_week * 288 + (stamps.hour * 60 + stamps.minute) // 5
    out = np.empty((*targets.shape, N_NODE))
    for node in range(N_NODE):
        frame = pd.DataFrame({"slot": slot[lo:hi], "v": raw[lo:hi, node, 0]})
        frame = frame[np.isfinite(frame.v) & (frame.v != 0)]
        means = frame.groupby("slot").v.mean()
        table = means.reindex(range(7 * 288)).fillna(frame.v.mean()).to_numpy()
        out[..., node] = table[np.asarray(slot)[targets]]
    return out[..., None]


# -- checkpoints carry everything -------------------------------------------------------------


def test_checkpoint_records_model_window_statistics_features_and_store(trained):
    store, ck, _ = trained
    record = load_checkpoint(ck).data
    raw, when, ds = _raw(store.path)
    assert record["model"] == {"name": "pgt-batched-dcrnn", "options": {"hidden": 8}}
    assert record["window"] == {"input_steps": T_IN, "horizon": H, "stride": 1}
    valid = raw[:630][np.isfinite(raw[:630]) & (raw[:630] != 0)]
    np.testing.assert_allclose(record["stats"]["mean"], [valid.mean()], rtol=1e-12)
    np.testing.assert_allclose(record["stats"]["std"], [valid.std()], rtol=1e-9)
    assert record["features"]["input"] == ["speed"] and record["features"]["target"] == ["speed"]
    assert record["features"]["calendar"] == ["time_of_day"]
    identity = record["store"]
    assert identity["shape"] == [N_TIME, N_NODE, 1]
    assert identity["node_ids"] == [str(v) for v in ds["node"].values]
    digest = hashlib.sha256(
        ds["edge_index"].values.astype(np.int64).tobytes()
        + ds["edge_weight"].values.astype(np.float32).tobytes()
    ).hexdigest()
    assert identity["graph_sha256"] == digest
    assert identity["train_steps"] == [0, 630]
    assert identity["train_time"] == [
        str(np.datetime_as_string(when[i], unit="s")) for i in (0, 629)
    ]
    assert identity["manifest_root"] is not None  # every store stzarr writes has a manifest


def _one_line_exit_2(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def _copy_trained(trained, tmp_path) -> Path:
    """A copy of the trained checkpoint directory (resume rewrites it)."""
    _, ck, _ = trained
    dst = tmp_path / "ck"
    dst.mkdir()
    (dst / "last.pt").write_bytes((ck / "last.pt").read_bytes())
    return dst


@pytest.mark.parametrize(
    ("kind", "named"),
    [
        ("features", "features"),
        ("nodes", "node_ids"),
        ("longer", "shape"),
        ("readings", "manifest_root"),  # the store's data digest
        ("readings, no manifest", "train statistics"),  # as a store at a URL has none
    ],
)
def test_resume_on_another_store_is_one_line_naming_the_difference(
    trained, tmp_path, capsys, kind, named
):
    ck = _copy_trained(trained, tmp_path)
    other = tmp_path / "other.zarr"
    if kind == "features":
        make_store(other, n_time=N_TIME, n_node=N_NODE, n_feature=2, chunk_time=64)
    elif kind == "nodes":
        _rewrite(trained[0], other, node_ids=[f"9{i}" for i in range(N_NODE)])
    elif kind == "longer":
        make_store(other, n_time=N_TIME + 100, n_node=N_NODE, chunk_time=64)
    else:
        make_store(other, n_time=N_TIME, n_node=N_NODE, chunk_time=64, seed=5)
        if kind == "readings, no manifest":
            (other / manifest.MANIFEST_NAME).unlink()
    before = (ck / "last.pt").read_bytes()
    err = _one_line_exit_2(
        [
            "train", str(other), "--model", "pgt-batched-dcrnn", "--hidden", "8",
            "--input-steps", str(T_IN), "--horizon", str(H), "--batch-size", "16",
            "--max-batches", "8", "--epochs", "2", "--checkpoint", str(ck), "--resume",
            "--no-progress",
        ],
        capsys,
    )  # fmt: skip
    assert "trained on another store" in err and named in err
    assert (ck / "last.pt").read_bytes() == before


def test_resume_on_the_same_store_still_continues(trained, tmp_path):
    store, _, _ = trained
    ck = _copy_trained(trained, tmp_path)
    result = train(store, _config(ck, epochs=2, resume=True))
    assert [r["epoch"] for r in result.history] == [1, 2]


def _strip_record(src: Path, dst: Path) -> Path:
    """A checkpoint as stzarr wrote them before they carried a data record."""
    data = torch.load(src, weights_only=False)
    del data["data"]
    dst.mkdir(parents=True, exist_ok=True)
    torch.save(data, dst / "last.pt")
    return dst


def test_checkpoint_written_before_the_record_resumes_and_evaluate_refuses_in_one_line(
    trained, tmp_path, capsys
):
    store, ck, _ = trained
    old = _strip_record(ck / "last.pt", tmp_path / "old")
    err = _one_line_exit_2(["evaluate", store.path, "--checkpoint", str(old)], capsys)
    assert "older stzarr" in err and "no store identity" in err
    with pytest.warns(stzarr.StzarrWarning, match="does not record its store"):
        result = train(store, _config(old, epochs=2, resume=True))
    assert len(result.history) == 2
    assert "store" in load_checkpoint(old).data  # the resumed run's checkpoint has one


# -- evaluate ---------------------------------------------------------------------------------


def test_evaluate_equals_the_model_called_directly_and_numpy_historical_average(trained):
    store, ck, result = trained
    out = stzarr.evaluate(store.path, ck)
    assert out["windows"] == TEST_STARTS.size
    raw, when, _ = _raw(store.path)
    y, valid = _targets(raw, TEST_STARTS)
    pred = _direct_forecast(store.path, ck / "last.pt", TEST_STARTS)
    want = _metrics(pred, y, valid)
    got = out["model"]
    for key in ("mae", "rmse", "mape"):
        assert got[key] == pytest.approx(want[key], rel=1e-5), key
    by_step = [got["horizons"][str(h)]["mae"] for h in range(1, H + 1)]
    np.testing.assert_allclose(by_step, want["mae_by_step"], rtol=1e-5)
    # the test metrics of the training run itself, on the same windows
    assert got["mae"] == pytest.approx(result.test["mae"], rel=1e-6)
    steps = np.add.outer(TEST_STARTS, np.arange(T_IN, SPAN))
    ha = _metrics(_historical_average(raw, when, 0, 630, steps), y, valid)
    for key in ("mae", "rmse", "mape"):
        assert out["historical_average"][key] == pytest.approx(ha[key], rel=1e-9), key


def _rewrite(store, path, *, data=None, time_axis=None, node_ids=None, edge_weight=None):
    """``store`` written again at ``path`` with some parts replaced."""
    raw, when, ds = _raw(store.path)
    return write_store(
        path,
        (raw if data is None else data).astype(np.float32),
        time=when if time_axis is None else time_axis,
        node_ids=node_ids or [str(v) for v in ds["node"].values],
        feature_names=[str(v) for v in ds["feature"].values],
        edge_index=ds["edge_index"].values,
        edge_weight=ds["edge_weight"].values if edge_weight is None else edge_weight,
        attrs={"missing_value": "zero", "sampling_interval_s": 300},
        chunk_time=64,
    )


def test_evaluate_a_later_year_appended_uses_the_checkpoint_statistics(trained, tmp_path):
    store, ck, _ = trained
    raw, when, _ = _raw(store.path)
    extra = make_series(300, N_NODE, seed=9) + 7.0  # later readings, another level
    longer = _rewrite(
        store,
        tmp_path / "longer.zarr",
        data=np.concatenate([raw, extra]),
        time_axis=when[0] + np.arange(N_TIME + 300) * np.timedelta64(5, "m"),
    )
    t0 = str(np.datetime_as_string(longer.time[N_TIME], unit="s"))
    out = stzarr.evaluate(longer, ck, start=t0)
    starts = np.arange(N_TIME, N_TIME + 300 - SPAN + 1)
    assert out["windows"] == starts.size
    full, when2, _ = _raw(longer.path)
    y, valid = _targets(full, starts)
    want = _metrics(_direct_forecast(longer.path, ck / "last.pt", starts), y, valid)
    assert out["model"]["mae"] == pytest.approx(want["mae"], rel=1e-5)
    # the baseline is fitted on the checkpoint's train time range, present in the longer store
    steps = np.add.outer(starts, np.arange(T_IN, SPAN))
    ha = _metrics(_historical_average(full, when2, 0, 630, steps), y, valid)
    assert out["historical_average"]["mae"] == pytest.approx(ha["mae"], rel=1e-9)
    # the longer store's own statistics differ: had they been used, the result would differ
    own = stzarr.compute_stats(longer, bounds=(0, 630 + 210))
    assert not np.allclose(own.mean, load_checkpoint(ck).data["stats"]["mean"])


@pytest.mark.parametrize(
    ("kind", "named"),
    [
        ("nodes", "node_ids"),
        ("graph", "graph_sha256"),
        ("features", "features"),
        ("short", "fewer than one window"),
    ],
)
def test_evaluate_and_predict_refuse_another_store_in_one_line(
    trained, tmp_path, capsys, kind, named
):
    store, ck, _ = trained
    other = tmp_path / "other.zarr"
    if kind == "nodes":
        _rewrite(store, other, node_ids=[f"5{i}" for i in range(N_NODE)])
    elif kind == "graph":
        _rewrite(store, other, edge_weight=np.ones(2 * N_NODE, np.float32))
    elif kind == "features":
        make_store(other, n_time=N_TIME, n_node=N_NODE, n_feature=2, chunk_time=64)
    else:
        raw, when, _ = _raw(store.path)
        _rewrite(store, other, data=raw[: SPAN - 1], time_axis=when[: SPAN - 1])
    err = _one_line_exit_2(["evaluate", str(other), "--checkpoint", str(ck)], capsys)
    assert named in err
    out = tmp_path / "f.zarr"
    err = _one_line_exit_2(
        ["predict", str(other), "--checkpoint", str(ck), "--out", str(out)], capsys
    )
    assert named in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.zarr"]


def test_selection_errors_are_one_line(trained, capsys):
    store, ck, _ = trained
    base = ["evaluate", store.path, "--checkpoint", str(ck)]
    both = [*base, "--split", "val", "--start", "2012-03-02"]
    assert "not both" in _one_line_exit_2(both, capsys)
    assert "fewer than one window" in _one_line_exit_2(
        [*base, "--start", "2012-03-02T00:00", "--stop", "2012-03-02T00:30"], capsys
    )
    assert "no checkpoint" in _one_line_exit_2(
        ["evaluate", store.path, "--checkpoint", str(ck / "nothing.pt")], capsys
    )


def test_evaluate_cli_prints_every_horizon_and_json(trained, capsys):
    store, ck, _ = trained
    file = str(ck / "last.pt")
    assert main(["evaluate", store.path, "--checkpoint", file, "--split", "val"]) == 0
    text = capsys.readouterr().out
    assert "historical average" in text and "split val" in text
    assert all(f"\n{h:>8} " in text for h in range(1, H + 1))
    assert main(["evaluate", store.path, "--checkpoint", str(ck), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out["model"]["horizons"]) == [str(h) for h in range(1, H + 1)]


# -- predict ----------------------------------------------------------------------------------


def test_predict_writes_forecasts_equal_to_the_model_called_directly(trained, tmp_path):
    store, ck, _ = trained
    ds = stzarr.predict(store.path, ck, tmp_path / "f.zarr")
    again = xr.open_zarr(tmp_path / "f.zarr")
    assert ds["forecast"].dims == ("time", "horizon", "node", "feature") == again["forecast"].dims
    raw, when, src = _raw(store.path)
    np.testing.assert_array_equal(ds["time"].values, when[TEST_STARTS + T_IN - 1])
    np.testing.assert_array_equal(ds["horizon"].values, np.arange(1, H + 1))
    assert [str(v) for v in ds["node"].values] == [str(v) for v in src["node"].values]
    want = _direct_forecast(store.path, ck / "last.pt", TEST_STARTS)
    np.testing.assert_allclose(ds["forecast"].values, want, rtol=1e-5, atol=1e-4)
    # horizon h targets time + h * interval
    _, valid = _targets(raw, TEST_STARTS)
    for h in (1, H):
        at = ds["time"].values + np.timedelta64(5 * h, "m")
        idx = np.searchsorted(when, at)
        np.testing.assert_array_equal(when[idx], at)
        got = ds["target"].sel(horizon=h).values
        np.testing.assert_array_equal(np.isnan(got), ~valid[:, h - 1])
        np.testing.assert_array_equal(got[valid[:, h - 1]], raw[idx][valid[:, h - 1]])
    np.testing.assert_array_equal(ds["missing"].values, ~valid)
    steps = np.add.outer(TEST_STARTS, np.arange(T_IN, SPAN))
    np.testing.assert_allclose(
        ds["historical_average"].values, _historical_average(raw, when, 0, 630, steps), rtol=1e-6
    )
    attrs = ds.attrs
    digest = hashlib.sha256((ck / "last.pt").read_bytes()).hexdigest()
    assert attrs["checkpoint"]["sha256"] == digest
    assert attrs["checkpoint"]["model"] == {"name": "pgt-batched-dcrnn", "options": {"hidden": 8}}
    assert attrs["source"]["store"] == store.path
    assert attrs["source"]["provenance"]["format"] == "testing"


def _store_bytes(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


@pytest.mark.slow
def test_predict_with_two_workers_writes_the_same_store_as_with_one(trained, tmp_path):
    store, ck, _ = trained
    # a budget that cuts the output into several chunks, so both ranks write
    kw = {"split": "train", "max_memory": 200_000, "batch_size": 32}
    one = stzarr.predict(store.path, ck, tmp_path / "one.zarr", workers=1, **kw)
    two = stzarr.predict(store.path, ck, tmp_path / "two.zarr", workers=2, **kw)
    assert len(one["forecast"].chunks[0]) >= 2
    a, b = _store_bytes(tmp_path / "one.zarr"), _store_bytes(tmp_path / "two.zarr")
    assert a.keys() == b.keys()
    differ = [k for k in a if a[k] != b[k]]
    assert differ == [], differ
    xr.testing.assert_identical(one.load(), two.load())


def test_predict_refuses_to_replace_what_it_did_not_write(trained, tmp_path, capsys):
    store, ck, _ = trained
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("precious")
    base = ["predict", store.path, "--checkpoint", str(ck), "--out", str(keep)]
    assert "exists" in _one_line_exit_2(base, capsys)
    assert "not a stzarr forecast store" in _one_line_exit_2([*base, "--overwrite"], capsys)
    assert (keep / "notes.txt").read_text() == "precious"
    out = tmp_path / "f.zarr"
    assert main(["predict", store.path, "--checkpoint", str(ck), "--out", str(out)]) == 0
    assert main(["predict", store.path, "--checkpoint", str(ck), "--out", str(out),
                 "--overwrite", "--split", "val"]) == 0  # fmt: skip
    assert xr.open_zarr(out).attrs["selection"] == "split val"


def test_predict_interrupted_in_a_batch_leaves_nothing(trained, tmp_path, monkeypatch):
    store, ck, _ = trained
    from stzarr.inference import forecasts

    calls = []
    real = forecasts._ChunkWriter.write

    def interrupted(self, *args):
        calls.append(1)
        real(self, *args)  # a chunk is on disk, then the user presses Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(forecasts._ChunkWriter, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        stzarr.predict(store.path, ck, tmp_path / "f.zarr")
    assert calls and list(tmp_path.iterdir()) == []


def test_predict_terminated_by_sigterm_leaves_nothing(trained, tmp_path):
    store, ck, _ = trained
    out = tmp_path / "f.zarr"
    # many small batches: long enough to be caught while it writes
    cmd = [sys.executable, "-m", "stzarr", "predict", store.path, "--checkpoint", str(ck),
           "--out", str(out), "--split", "train", "--batch-size", "1",
           "--max-memory", "40kB"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".f.zarr.partial-") for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "predict ended too soon"
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "partial output removed" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_plot_draws_one_sensor_and_refuses_an_unknown_one(trained, tmp_path, capsys):
    store, ck, _ = trained
    stzarr.predict(store.path, ck, tmp_path / "f.zarr")
    assert main(["plot", str(tmp_path / "f.zarr"), "--node", "400002", "--horizon", "2"]) == 0
    png = Path(capsys.readouterr().out.strip())
    assert png == tmp_path / "f-400002-h2.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    err = _one_line_exit_2(["plot", str(tmp_path / "f.zarr"), "--node", "nope"], capsys)
    assert "no sensor 'nope'" in err
    err = _one_line_exit_2(
        ["plot", str(tmp_path / "f.zarr"), "--node", "400002", "--horizon", str(H + 1)], capsys
    )
    assert "horizon" in err
    assert "not a stzarr forecast store" in _one_line_exit_2(
        ["plot", store.path, "--node", "400002"], capsys
    )


def test_stzarr_python_api_returns_the_opened_dataset(trained, tmp_path):
    store, ck, _ = trained
    ds = stzarr.predict(store, ck / "last.pt", tmp_path / "f.zarr", split="val")
    assert isinstance(ds, xr.Dataset) and ds.sizes["horizon"] == H
    assert os.path.isdir(tmp_path / "f.zarr")
    with pytest.raises(StzarrError, match="exists"):
        stzarr.predict(store, ck, tmp_path / "f.zarr")


def test_predict_and_evaluate_under_a_budget_stream_and_give_the_same_numbers(
    trained, tmp_path, monkeypatch
):
    store, ck, _ = trained
    from stzarr.data.streaming import StreamingLoader

    free = stzarr.predict(store.path, ck, tmp_path / "free.zarr", split="train", batch_size=8)
    blocks = []
    real = StreamingLoader._load

    def counted(self, b):
        blocks.append(b)
        return real(self, b)

    monkeypatch.setattr(StreamingLoader, "_load", counted)
    # 630 steps x 24 bytes of series and 4 batches of 3 kB do not fit what is left of 30 kB
    tight = stzarr.predict(
        store.path, ck, tmp_path / "tight.zarr", split="train", batch_size=8, max_memory=30_000
    )
    assert len(blocks) > 2  # streamed in several blocks
    xr.testing.assert_identical(free.load(), tight.load())
    blocks.clear()
    a = stzarr.evaluate(store.path, ck, split="train", batch_size=8)
    b = stzarr.evaluate(store.path, ck, split="train", batch_size=8, max_memory=30_000)
    assert len(blocks) > 2 and a["model"] == b["model"]


def test_predict_future_forecasts_from_the_last_steps_past_the_end(trained, tmp_path, capsys):
    store, ck, _ = trained
    ds = stzarr.predict(
        store.path, ck, tmp_path / "f.zarr", future=True, max_memory=30_000, batch_size=8
    )
    _, when, _ = _raw(store.path)
    starts = np.concatenate([TEST_STARTS, np.arange(N_TIME - SPAN + 1, N_TIME - T_IN + 1)])
    assert ds.sizes["time"] == starts.size == TEST_STARTS.size + H
    assert ds["time"].values[-1] == when[-1]  # the last forecast is issued at the last step
    want = _direct_forecast(store.path, ck / "last.pt", starts)
    np.testing.assert_allclose(ds["forecast"].values, want, rtol=1e-5, atol=1e-4)
    # window k of the last H targets k steps beyond the end at horizon H
    beyond = np.add.outer(starts[-H:], np.arange(T_IN, SPAN)) >= N_TIME
    missing = ds["missing"].values[-H:, :, 0, 0]
    assert missing[beyond].all() and np.isnan(ds["target"].values[-H:, :, 0, 0][beyond]).all()
    assert beyond.sum() == H * (H + 1) // 2
    err = _one_line_exit_2(
        ["predict", store.path, "--checkpoint", str(ck), "--out", str(tmp_path / "g.zarr"),
         "--future", "--split", "val"],
        capsys,
    )  # fmt: skip
    assert "--future" in err
