"""The demo's verdict names every metric and horizon where the model wins and where it loses."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "demo", Path(__file__).resolve().parents[2] / "examples" / "demo.py"
)
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)


def _metrics(mae, rmse, mape, horizons):
    return {
        "mae": mae,
        "rmse": rmse,
        "mape": mape,
        "horizons": {h: {"mae": a, "rmse": b, "mape": c} for h, (a, b, c) in horizons.items()},
    }


def test_a_model_better_on_mae_only_is_not_said_to_beat_the_baseline():
    """The case the demo once reported as "beats": lower MAE, higher RMSE, MAPE and 15-min MAE."""
    model = _metrics(
        2.814, 4.935, 7.92, {"3": (3.219, 5.0, 8.0), "6": (2.7, 4.9, 7.9), "12": (2.6, 4.8, 7.8)}
    )
    base = _metrics(
        2.917,
        4.530,
        7.42,
        {"3": (2.917, 4.5, 7.4), "6": (2.917, 4.5, 7.4), "12": (2.917, 4.5, 7.4)},
    )
    head, *lines = demo.verdict("M", model, base)
    assert head == "M beats the historical average on 3 of 12 measures and loses on the other 9:"
    assert lines[0] == (
        " overall: MAE wins (2.814 vs 2.917), RMSE LOSES (4.935 vs 4.530), "
        "MAPE LOSES (7.920% vs 7.420%)"
    )
    assert lines[1].startswith("  15 min: MAE LOSES (3.219 vs 2.917)")
    assert [line.split(":")[0].strip() for line in lines] == [
        "overall",
        "15 min",
        "30 min",
        "60 min",
    ]


def test_all_wins_and_all_losses_are_said_plainly():
    good = _metrics(1.0, 1.0, 1.0, {"3": (1.0, 1.0, 1.0)})
    bad = _metrics(2.0, 2.0, 2.0, {"3": (2.0, 2.0, 2.0)})
    assert demo.verdict("M", good, bad)[0] == (
        "M beats the historical average on every metric and horizon:"
    )
    assert demo.verdict("M", bad, good)[0] == (
        "M does NOT beat the historical average on any metric or horizon:"
    )
