import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stzarr import SpecError, WindowSpec, make_plan, split_bounds, split_bounds_at
from stzarr.plan.windows import gap_steps
from stzarr.testing.validators import window_plan_args


@settings(max_examples=150, deadline=None)
@given(window_plan_args())
def test_windows_stay_inside_their_split_and_series(args):
    n_time, spec, train, val, cross = args
    plan = make_plan(n_time, spec, train=train, val=val, cross_splits=cross)
    for name, (lo, hi) in plan.bounds.items():
        s = plan.starts[name]
        assert s.dtype == np.int64
        assert np.all(np.diff(s) == spec.stride), "starts are a stride apart, sorted"
        if s.size:
            assert s[0] == lo, "the first start is the split's first step"
            assert s.min() >= lo and s.max() + spec.span <= n_time
            if cross:
                assert s.max() < hi
            else:
                assert s.max() + spec.span <= hi, f"{name} window reads past its split (leak)"


@settings(max_examples=150, deadline=None)
@given(window_plan_args())
def test_counts_match_closed_form(args):
    n_time, spec, train, val, cross = args
    plan = make_plan(n_time, spec, train=train, val=val, cross_splits=cross)
    for name, (lo, hi) in plan.bounds.items():
        last = min(hi - 1, n_time - spec.span) if cross else hi - spec.span
        expect = max(0, (last - lo) // spec.stride + 1) if last >= lo else 0
        assert plan.count(name) == expect


@settings(max_examples=100, deadline=None)
@given(window_plan_args())
def test_no_split_leakage(args):
    """No time step read by a training window is read by a val/test window (default mode), and
    every split's starts are disjoint (both modes)."""
    n_time, spec, train, val, cross = args
    plan = make_plan(n_time, spec, train=train, val=val, cross_splits=cross)
    all_starts = np.concatenate([plan.starts[k] for k in ("train", "val", "test")])
    assert np.unique(all_starts).size == all_starts.size
    if not cross:
        reads = {}
        for name in ("train", "val", "test"):
            s = plan.starts[name]
            steps = (s[:, None] + np.arange(spec.span)).ravel()
            reads[name] = set(steps.tolist())
        assert not reads["train"] & reads["val"]
        assert not reads["train"] & reads["test"]
        assert not reads["val"] & reads["test"]


@settings(max_examples=100, deadline=None)
@given(window_plan_args(), st.data())
def test_read_range_covers_exactly_what_starts_read(args, data):
    n_time, spec, train, val, cross = args
    plan = make_plan(n_time, spec, train=train, val=val, cross_splits=cross)
    s = plan.starts["train"]
    subset = np.sort(data.draw(st.lists(st.sampled_from(s.tolist()), min_size=1, max_size=20)))
    lo, hi = plan.read_range(np.asarray(subset))
    steps = (np.asarray(subset)[:, None] + np.arange(spec.span)).ravel()
    assert (lo, hi) == (steps.min(), steps.max() + 1)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 100_000), st.floats(0.01, 1.0), st.floats(0.0, 1.0))
def test_split_bounds_partition_the_series(n_time, train, val):
    if train + val > 1 + 1e-9:
        with pytest.raises(SpecError):
            split_bounds(n_time, train, val)
        return
    b = split_bounds(n_time, train, val)
    assert b["train"][0] == 0 and b["test"][1] == n_time
    assert b["train"][1] == b["val"][0] and b["val"][1] == b["test"][0]
    assert 0 <= b["train"][1] <= b["val"][1] <= n_time
    assert abs(b["train"][1] - n_time * train) <= 0.5 + 1e-9


def test_stride_thins_starts_from_the_split_start():
    plan = make_plan(100, WindowSpec(3, 2, stride=4), train=0.5, val=0.2)
    assert plan.starts["train"].tolist() == list(range(0, 46, 4))
    assert plan.starts["val"].tolist() == [50, 54, 58, 62]
    assert plan.starts["test"].tolist() == list(range(70, 96, 4))


def test_cross_splits_lets_windows_read_into_the_next_split():
    plan = make_plan(100, WindowSpec(3, 2), train=0.5, val=0.2, cross_splits=True)
    assert plan.starts["train"].tolist() == list(range(50))
    assert plan.starts["test"].tolist() == list(range(70, 96))


def test_window_longer_than_series_is_a_spec_error():
    with pytest.raises(SpecError, match="longer than the series"):
        make_plan(20, WindowSpec(12, 12))


def test_split_without_a_full_window_is_a_spec_error():
    # val = 10 % of 100 steps = 10 steps < span 24
    with pytest.raises(SpecError, match=r"'val'.*no full window"):
        make_plan(100, WindowSpec(12, 12), train=0.7, val=0.1)


def test_empty_split_is_allowed():
    plan = make_plan(100, WindowSpec(2, 2), train=0.8, val=0.0)
    assert plan.count("val") == 0 and plan.count("train") == 77


@pytest.mark.parametrize(
    "bad",
    [
        dict(input_steps=0, horizon=1),
        dict(input_steps=2, horizon=-1),
        dict(input_steps=2, horizon=1, stride=0),
        dict(input_steps=2.5, horizon=1),
    ],
)
def test_invalid_spec_is_a_spec_error(bad):
    with pytest.raises(SpecError):
        WindowSpec(**bad)


def test_gap_windows_are_excluded():
    time = np.datetime64("2012-03-01", "ns") + np.arange(200) * np.timedelta64(5, "m")
    time[120:] += np.timedelta64(1, "h")  # a gap between steps 119 and 120
    assert gap_steps(time).nonzero()[0].tolist() == [119]
    spec = WindowSpec(4, 2)
    plan = make_plan(200, spec, train=1.0, val=0.0, time=time, exclude_gaps=True)
    s = plan.starts["train"]
    crossing = (s <= 119) & (s + spec.span - 1 >= 120)
    assert not crossing.any()
    assert plan.count("train") == (200 - spec.span + 1) - (spec.span - 1)
    with pytest.raises(SpecError, match="needs the time coordinate"):
        make_plan(200, spec, exclude_gaps=True)


def test_split_by_timestamps():
    time = np.datetime64("2012-03-01", "ns") + np.arange(288 * 10) * np.timedelta64(5, "m")
    b = split_bounds_at(time, "2012-03-08", "2012-03-09")
    assert b == {"train": (0, 288 * 7), "val": (288 * 7, 288 * 8), "test": (288 * 8, 2880)}
    with pytest.raises(SpecError):
        split_bounds_at(time, "2012-03-09", "2012-03-08")


def test_plan_and_spec_serialise_to_json():
    spec = WindowSpec(12, 12, stride=2)
    plan = make_plan(1000, spec)
    d = json.loads(json.dumps(plan.to_dict(include_starts=True)))
    assert d["spec"] == {"input_steps": 12, "horizon": 12, "stride": 2}
    assert d["splits"]["train"]["starts"] == plan.starts["train"].tolist()
    assert d["splits"]["val"]["read_range"] == list(plan.split_read_range("val"))
    assert spec.span == 24 and spec.halo == 23
