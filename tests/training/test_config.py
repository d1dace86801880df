"""The composed configuration: each option declared once (the flags are generated from the
fields), round-trips as data, comes from files, and ``--resume`` compares it as data."""

import dataclasses
import json
import typing

import pytest

from stzarr.cli import build_parser, main
from stzarr.cli.options import given_options, train_config
from stzarr.errors import SpecError
from stzarr.plan.windows import WindowSpec
from stzarr.training.config import (
    PARTS,
    BatchOptions,
    RunOptions,
    SplitSpec,
    TrainConfig,
    read_config,
)
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


def test_resumed_changes_only_the_options_given():
    saved = TrainConfig.of(batch_size=16, epochs=1, horizon=3, model_options={"hidden": 8})
    resumed = TrainConfig.resumed(saved.to_dict(), {"epochs": 80, "checkpoint_dir": "ck"})
    assert resumed == saved.replace(epochs=80, checkpoint_dir="ck", resume=True)
    assert resumed.resume_changes(saved.to_dict()) == ["run.epochs: 1 -> 80"]
    other = saved.replace(epochs=2, batch_size=8, log_path="l.json", checkpoint_dir="elsewhere")
    assert other.resume_changes(saved.to_dict()) == [
        "run.epochs: 1 -> 2",
        "run.log_path: None -> 'l.json'",
    ]
    with pytest.raises(SpecError, match=r"run.batch_size: 16 -> 8; run.lr: 0.01 -> 0.1"):
        TrainConfig.resumed(saved.to_dict(), {"batch_size": 8, "lr": 0.1, "checkpoint_dir": "c"})
    with pytest.raises(SpecError, match="model_options"):  # a key changed, the others kept
        TrainConfig.resumed(saved.to_dict(), {"model_options": {"k": 2}, "checkpoint_dir": "c"})


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
        ({"horizons": (3, 0)}, "horizons must be a positive integer, got 0"),
        ({"memory_interval": 0.0}, "memory_interval must be positive"),
    ],
)
def test_bad_options_are_spec_errors(options, match):
    with pytest.raises(SpecError, match=match):
        TrainConfig.of(**options)


def _flags_by_dest(command):
    """The actions of sub-command ``command``'s parser by destination."""
    parser = build_parser([command])
    (sub,) = parser._subparsers._group_actions
    return {a.dest: a for a in sub.choices[command]._actions}


def test_every_option_has_a_flag_and_defaults_are_the_dataclasses():
    flags = _flags_by_dest("train")
    for kind in PARTS.values():
        for f in dataclasses.fields(kind):
            assert f.name in flags, f"no flag for {f.name}"
            assert flags[f.name].help, f"no help for {f.name}"
    # no flag without an option (but the mapping's key flags, --config and --json)
    options = {f.name for kind in PARTS.values() for f in dataclasses.fields(kind)}
    extra = {d for d in flags if d not in options and not d.startswith("model_options:")}
    assert extra == {"help", "config", "json", "store"}
    assert train_config(build_parser().parse_args(["train", "S"])) == TrainConfig()


def _text(value):
    """A value as a user types it on the command line (the oracle of the parsers)."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


SAMPLES = {int: 3, float: 0.25, str: "abc", tuple[int, ...]: (4, 5), tuple[str, ...]: ("a", "b")}


def test_every_flag_parses_into_its_fields_type():
    flags = _flags_by_dest("train")
    for kind in PARTS.values():
        hints = typing.get_type_hints(kind)
        for f in dataclasses.fields(kind):
            hint = hints[f.name]
            args = typing.get_args(hint)
            inner = next(a for a in args if a is not type(None)) if type(None) in args else hint
            flag = flags[f.name].option_strings[0]
            if inner is bool:
                for argv, expected in (([flag], True), (["--no-" + flag[2:]], False)):
                    parsed = given_options(build_parser().parse_args(["train", "S", *argv]))
                    assert parsed == {f.name: expected}
                continue
            value = {"model_options": {"hidden": 4}, "max_memory": 2 * 10**9}.get(
                f.name, SAMPLES.get(inner)
            )
            text = "2GB" if f.name == "max_memory" else _text(value)
            parsed = given_options(build_parser().parse_args(["train", "S", flag, text]))
            assert parsed == {f.name: value}, f.name
            assert type(parsed[f.name]) is type(value)


def test_flags_build_the_same_config_as_the_library():
    argv = "--horizon 6 --stride 3 --val 0.2 --hidden 8 --target-features speed "
    argv += "--no-time-of-day --max-memory 2GB --mode full -w 2 --no-progress --checkpoint ck"
    assert train_config(build_parser().parse_args(["train", "S", *argv.split()])) == TrainConfig(
        WindowSpec(12, 6, 3),
        SplitSpec(val=0.2),
        BatchOptions(target_features=("speed",), time_of_day=False),
        RunOptions(
            model_options={"hidden": 8},
            max_memory=2 * 10**9,
            mode="full",
            workers=2,
            progress=False,
            checkpoint_dir="ck",
        ),
    )
    argv = ["--model-options", '{"hidden": 4, "k": 2}', "--hidden", "8"]
    args = build_parser().parse_args(["train", "S", *argv])
    assert given_options(args) == {"model_options": {"hidden": 8, "k": 2}}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "x"], "argument --epochs: 'x': not an integer"),
        (["--epochs", "0"], "epochs must be a positive integer, got 0"),
        (["--lr", "fast"], "argument --lr: 'fast': not a number"),
        (["--mode", "fast"], "unknown mode 'fast'"),
        (["--max-memory", "lots"], "argument --max-memory: 'lots': cannot read"),
        (["--horizons", "1,x"], "argument --horizons: 'x': not an integer"),
        (["--model-options", "[1]"], "not a JSON object"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_flags_are_one_line_errors(tmp_path, capsys, argv, message):
    try:
        code = main(["train", str(tmp_path / "none.zarr"), *argv])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err


SHARED = {
    "plan": ("input_steps", "horizon", "stride", "train", "val", "val_start", "test_start",
             "exclude_gaps", "cross_splits", "workers", "batch_size"),
    "stats": ("train", "val", "val_start", "test_start", "exclude_gaps", "cross_splits"),
    "evaluate": ("workers", "batch_size", "max_memory"),
    "predict": ("workers", "batch_size", "max_memory"),
}  # fmt: skip


ARGV = {
    "input_steps": ["--input-steps", "6"],
    "horizon": ["--horizon", "3"],
    "stride": ["--stride", "2"],
    "train": ["--train", "0.6"],
    "val": ["--val", "0.2"],
    "val_start": ["--val-start", "2012-01-02"],
    "test_start": ["--test-start", "2012-01-03"],
    "exclude_gaps": ["--exclude-gaps"],
    "cross_splits": ["--no-cross-splits"],
    "workers": ["-w", "2"],
    "batch_size": ["--batch-size", "8"],
    "max_memory": ["--max-memory", "1MB"],
}


@pytest.mark.parametrize("command", sorted(SHARED))
def test_sub_commands_share_their_flags(command):
    train, other = _flags_by_dest("train"), _flags_by_dest(command)
    for name in SHARED[command]:
        a, b = train[name], other[name]
        assert (a.option_strings, a.help, a.default) == (b.option_strings, b.help, b.default)
    given = [word for name in SHARED[command] for word in ARGV[name]]
    extra = {"evaluate": ["--checkpoint", "c"], "predict": ["--checkpoint", "c", "--out", "o"]}
    argv = [command, "S", *given, *extra.get(command, [])]
    parsed = given_options(build_parser().parse_args(argv))
    assert parsed == given_options(build_parser().parse_args(["train", "S", *given]))
    assert set(parsed) == set(SHARED[command])


TOML = """
epochs = 3
[window]
horizon = 6
[run]
batch_size = 16
model_options = {hidden = 8}
max_memory = "1MB"
"""


def test_config_file_takes_any_option_and_flags_override_it(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(TOML)
    assert read_config(path) == {
        "epochs": 3,
        "horizon": 6,
        "batch_size": 16,
        "model_options": {"hidden": 8},
        "max_memory": 10**6,
    }
    args = build_parser().parse_args(["train", "S", "--config", str(path), "--epochs", "5"])
    assert train_config(args) == TrainConfig.of(
        epochs=5, horizon=6, batch_size=16, model_options={"hidden": 8}, max_memory=10**6
    )
    args = build_parser().parse_args(["plan", "S", "--config", str(path), "--horizon", "2"])
    from stzarr.cli.options import option_value, window_spec

    assert window_spec(args) == WindowSpec(horizon=2) and option_value(args, "batch_size") == 16


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epoch = 3", "run.toml: epoch is not a training option (did you mean epochs?)"),
        ("[run]\nhorizon = 3", "run.toml: run.horizon: horizon belongs to [window]"),
        ("epochs = 'three'", "run.toml: epochs must be an integer, got 'three'"),
        ("lr_milestones = [1, 'a']", "run.toml: lr_milestones must be a list of integers"),
        ("progress = 1", "run.toml: progress must be true or false, got 1"),
        ("epochs = ", "not valid toml"),
        ("epochs = 0", "epochs must be a positive integer, got 0"),
    ],
)
def test_bad_config_file_is_a_one_line_error(tmp_path, capsys, text, message):
    path = tmp_path / "run.toml"
    path.write_text(text)
    assert main(["train", str(tmp_path / "none.zarr"), "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_json_and_yaml_configs_read_like_toml(tmp_path):
    config = TrainConfig.of(epochs=2, horizon=3, target_features=("a",), clip_grad_norm=5.0)
    (tmp_path / "c.json").write_text(json.dumps(config.to_dict()))
    log = {"config": config.to_dict(), "epochs": []}
    (tmp_path / "log.json").write_text(json.dumps(log))
    (tmp_path / "c.yaml").write_text("epochs: 2\nwindow:\n  horizon: 3\ntarget_features: [a]\n")
    for name in ("c.json", "log.json"):
        assert TrainConfig.of(**read_config(tmp_path / name)) == config
    assert TrainConfig.of(**read_config(tmp_path / "c.yaml")) == TrainConfig.of(
        epochs=2, horizon=3, target_features=("a",)
    )
    (tmp_path / "c.txt").write_text("epochs = 2")
    with pytest.raises(SpecError, match=r"expected a \.toml"):
        read_config(tmp_path / "c.txt")
