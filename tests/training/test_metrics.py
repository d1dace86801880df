"""Masked metrics and the historical-average baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stzarr.plan.windows import WindowSpec, make_plan
from stzarr.store.format import write_store
from stzarr.training.metrics import (
    MaskedMetrics,
    evaluate_historical_average,
    fit_historical_average,
    masked_mae,
)


def _numpy_metrics(pred, y, valid):
    err = (pred - y)[valid]
    yy = y[valid]
    keep = np.abs(yy) >= 1e-6
    return {
        "mae": np.abs(err).mean(),
        "rmse": np.sqrt((err**2).mean()),
        "mape": 100 * np.mean(np.abs(err[keep]) / np.abs(yy[keep])),
        "count": valid.sum(),
    }


def test_masked_mae_ignores_missing_targets_even_nan_and_keeps_gradients_finite():
    pred = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    target = torch.tensor([2.0, float("nan"), 1.0, 0.0])
    mask = torch.tensor([True, False, True, False])
    loss = masked_mae(pred, target, mask)
    assert loss.item() == pytest.approx((1 + 2) / 2)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[1] == 0 and pred.grad[3] == 0


def test_masked_mae_with_nothing_valid_is_zero():
    pred = torch.ones(3, requires_grad=True)
    assert masked_mae(pred, torch.zeros(3), torch.zeros(3, dtype=torch.bool)).item() == 0


@settings(max_examples=25, deadline=None)
@given(
    batches=st.integers(1, 4),
    horizon=st.integers(1, 12),
    seed=st.integers(0, 2**16),
    missing=st.floats(0.0, 0.5),
)
def test_accumulated_metrics_equal_numpy_over_all_valid_targets(batches, horizon, seed, missing):
    rng = np.random.default_rng(seed)
    shape = (batches * 3, horizon, 4, 2)
    pred = rng.normal(50, 10, shape)
    y = rng.normal(50, 10, shape)
    valid = rng.random(shape) >= missing
    valid.flat[0] = True
    y[~valid] = np.nan  # whatever is there must not matter
    m = MaskedMetrics(horizon)
    for b in range(batches):
        sl = slice(3 * b, 3 * b + 3)
        m.update(torch.from_numpy(pred[sl]), torch.from_numpy(y[sl]), torch.from_numpy(valid[sl]))
    out = m.result(horizons=(1, 3, 12))
    want = _numpy_metrics(pred, y, valid)
    for key in ("mae", "rmse", "mape"):
        assert out[key] == pytest.approx(want[key], rel=1e-9)
    assert out["count"] == want["count"]
    assert set(out["horizons"]) == {str(h) for h in (1, 3, 12) if h <= horizon}
    for h, got in out["horizons"].items():
        k = int(h) - 1
        hv = valid[:, k]
        if hv.any():
            want_h = _numpy_metrics(pred[:, k], y[:, k], hv)
            assert got["mae"] == pytest.approx(want_h["mae"], rel=1e-9)
            assert got["rmse"] == pytest.approx(want_h["rmse"], rel=1e-9)


def test_metrics_shape_mismatch_is_an_error():
    m = MaskedMetrics(2)
    with pytest.raises(ValueError, match="share one"):
        m.update(torch.zeros(1, 2, 3, 1), torch.zeros(1, 2, 3, 2), torch.ones(1, 2, 3, 1).bool())


def _store(tmp_path, data, start="2012-03-05", freq="5min", missing_value="zero"):
    n_time, n_node, n_feature = data.shape
    step = np.timedelta64(int(pd_minutes(freq)), "m")
    time = np.datetime64(start, "ns") + np.arange(n_time) * step
    return write_store(
        tmp_path / "s.zarr",
        data.astype(np.float32),
        time=time,
        node_ids=[str(i) for i in range(n_node)],
        feature_names=[f"f{i}" for i in range(n_feature)],
        edge_index=np.array([[0], [min(1, n_node - 1)]]),
        edge_weight=np.ones(1),
        attrs={"missing_value": missing_value, "sampling_interval_s": pd_minutes(freq) * 60},
        chunk_time=100,
    )


def pd_minutes(freq: str) -> int:
    return int(freq.removesuffix("min"))


def test_historical_average_is_exact_on_a_weekly_periodic_series(tmp_path):
    steps_per_week = 7 * 24 * 4  # 15-minute steps
    rng = np.random.default_rng(0)
    week = rng.uniform(20, 70, (steps_per_week, 3, 1))
    data = np.tile(week, (5, 1, 1))
    store = _store(tmp_path, data, freq="15min")
    plan = make_plan(store.shape[0], WindowSpec(4, 4))
    ha = fit_historical_average(store, plan.bounds["train"])
    assert ha.steps_per_day == 96
    out = evaluate_historical_average(store, plan, "test", model=ha)
    assert out["mae"] == pytest.approx(0, abs=1e-4)
    assert out["count"] == plan.count("test") * 4 * 3


def test_historical_average_matches_a_brute_force_window_loop(tmp_path):
    rng = np.random.default_rng(1)
    n_time = 3 * 288
    t = np.arange(n_time)[:, None, None]
    data = 50 + 10 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 2, (n_time, 4, 2))
    data[rng.random(data.shape) < 0.1] = 0.0  # missing readings
    store = _store(tmp_path, data)
    spec = WindowSpec(3, 5)
    plan = make_plan(n_time, spec)
    ha = fit_historical_average(store, plan.bounds["train"])
    out = evaluate_historical_average(store, plan, "val", model=ha, horizons=(1, 5))

    # the oracle: every window's targets and forecasts stacked, scored in plain NumPy
    raw = store.read(0, n_time).astype(np.float64)
    pred_all = ha.predict(store.time)
    ys = np.stack([raw[s + 3 : s + 8] for s in plan.starts["val"]])
    ps = np.stack([pred_all[s + 3 : s + 8] for s in plan.starts["val"]])
    assert ys.shape[0] == plan.count("val") > 0
    want = _numpy_metrics(ps, ys, ys != 0)
    for key in ("mae", "rmse", "mape", "count"):
        assert out[key] == pytest.approx(want[key], rel=1e-9)
    want_5 = _numpy_metrics(ps[:, 4], ys[:, 4], ys[:, 4] != 0)
    assert out["horizons"]["5"]["mae"] == pytest.approx(want_5["mae"], rel=1e-9)


def test_historical_average_slot_means_use_only_train_and_valid_readings(tmp_path):
    # daily data: one slot per weekday; train = first 70 %
    n_time = 70
    data = np.ones((n_time, 2, 1)) * 10.0
    data[:49, 0] = 20.0  # train split of node 0 is 20, later 10
    data[7, 1] = 0.0  # a missing reading must not pull the mean down
    store = _store(tmp_path, data, freq="1440min")
    ha = fit_historical_average(store, (0, 49))
    assert ha.steps_per_day == 1
    np.testing.assert_allclose(ha.table[:, 0, 0], 20.0)
    np.testing.assert_allclose(ha.table[:, 1, 0], 10.0)
