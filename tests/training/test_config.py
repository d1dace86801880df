"""The composed configuration: each option declared once, round-trips as data, ``--resume``
compares it as data, and the sub-commands share their flags and defaults."""

import dataclasses
import json

import pytest

from stzarr.cli import build_parser
from stzarr.cli.options import train_config
from stzarr.errors import SpecError
from stzarr.plan.windows import WindowSpec
from stzarr.training.config import PARTS, BatchOptions, RunOptions, SplitSpec, TrainConfig
from stzarr.training.models import MODELS


def test_each_option_belongs_to_exactly_one_part():
    names = [f.name for kind in PARTS.values() for f in dataclasses.fields(kind)]
    assert len(names) == len(set(names)), "an option name is declared in two parts"
    config = TrainConfig.of(horizon=6, stride=2, val=0.2, day_of_week=True, epochs=3, lr=0.1)
    assert config.window == WindowSpec(12, 6, 2)
    assert config.split == SplitSpec(val=0.2)
    assert config.batch == BatchOptions(day_of_week=True)
    assert (config.run.epochs, config.run.lr, config.run.model) == (3, 0.1, MODELS[0])
    assert set(config.options()) == set(names)
    with pytest.raises(SpecError, match=r"unknown training option.*bogus"):
        TrainConfig.of(bogus=1)


def test_round_trips_through_json():
    config = TrainConfig.of(
        target_features=["speed"], horizons=(1, 2), model_options={"hidden": 4}, max_memory=10**9
    )
    data = json.loads(json.dumps(config.to_dict()))
    assert TrainConfig.from_dict(data) == config
    assert data["batch"]["target_features"] == ["speed"] and data["run"]["horizons"] == [1, 2]


def test_resume_compares_configurations_as_data():
    saved = TrainConfig.of(batch_size=16, epochs=1, log_path="a.json").to_dict()
    # free options (epochs, where the log goes, threads, ...) may change on resume
    ours = TrainConfig.of(batch_size=16, epochs=5, log_path="b.json", threads=2)
    assert ours.resume_diff(saved) == []
    diff = TrainConfig.of(batch_size=8, stride=2, epochs=5).resume_diff(saved)
    assert diff == ["window.stride: 1 -> 2", "run.batch_size: 16 -> 8"]
    assert TrainConfig().resume_diff({}) != []  # a checkpoint without a configuration


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"mode": "fast"}, "unknown mode"),
        ({"model": "nope"}, "unknown model"),
        ({"workers": 2}, "runs one process"),
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"max_memory": -1}, "max_memory"),
        ({"resume": True}, "--resume needs --checkpoint"),
        ({"val_start": "2012-03-02"}, "both val_start and test_start"),
        ({"train": 0.9, "val": 0.2}, "split fractions"),
        ({"horizon": 0}, "horizon must be a positive integer"),
    ],
)
def test_bad_options_are_spec_errors(options, match):
    with pytest.raises(SpecError, match=match):
        TrainConfig.of(**options)


SHARED = {
    "plan": (
        "input_steps",
        "horizon",
        "stride",
        "train",
        "val",
        "val_start",
        "test_start",
        "exclude_gaps",
        "cross_splits",
        "workers",
        "batch_size",
    ),
    "stats": ("train", "val", "val_start", "test_start", "exclude_gaps", "cross_splits"),
}


@pytest.mark.parametrize("command", sorted(SHARED))
def test_plan_stats_and_train_share_flags_and_defaults(command):
    parser = build_parser()
    train = vars(parser.parse_args(["train", "S"]))
    other = vars(parser.parse_args([command, "S"]))
    for name in SHARED[command]:
        assert other[name] == train[name], f"--{name} defaults differ"
    flags = ["--input-steps", "6", "--horizon", "3", "--stride", "2", "--train", "0.6",
             "--val", "0.2", "--exclude-gaps", "--cross-splits", "--workers", "2",
             "--batch-size", "8"]  # fmt: skip
    accepted = [f for f in flags if f.lstrip("-").replace("-", "_") in SHARED[command]]
    parsed = vars(parser.parse_args([command, "S", *_with_values(flags, accepted)]))
    trained = vars(parser.parse_args(["train", "S", *_with_values(flags, accepted)]))
    for name in SHARED[command]:
        assert parsed[name] == trained[name]


def _with_values(flags, accepted):
    out, i = [], 0
    while i < len(flags):
        has_value = i + 1 < len(flags) and not flags[i + 1].startswith("--")
        if flags[i] in accepted:
            out += flags[i : i + 1 + has_value]
        i += 1 + has_value
    return out


def test_cli_builds_the_same_config_as_the_library():
    args = build_parser().parse_args(
        [
            "train",
            "S",
            "--horizon",
            "6",
            "--stride",
            "3",
            "--val",
            "0.2",
            "--hidden",
            "8",
            "--target-features",
            "speed",
            "--no-time-of-day",
            "--max-memory",
            "2GB",
            "--mode",
            "full",
            "--workers",
            "2",
        ]
    )
    assert train_config(args) == TrainConfig(
        WindowSpec(12, 6, 3),
        SplitSpec(val=0.2),
        BatchOptions(target_features=("speed",), time_of_day=False),
        RunOptions(model_options={"hidden": 8}, max_memory=2 * 10**9, mode="full", workers=2),
    )
    assert train_config(build_parser().parse_args(["train", "S"])) == TrainConfig()
