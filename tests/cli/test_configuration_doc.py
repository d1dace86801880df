"""docs/configuration.md as written: its configuration file reads, its commands parse into the
configurations they say, and the error and warning lines it shows are the ones printed."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from stzarr.cli import build_parser, main
from stzarr.cli.options import given_options, option_value, train_config, window_spec
from stzarr.errors import SpecError
from stzarr.plan.windows import WindowSpec
from stzarr.training.config import PARTS, TrainConfig

DOC = Path(__file__).parents[2] / "docs" / "configuration.md"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.toml").write_text(blocks("toml")[0])
    return tmp_path


def _train_actions():
    parser = build_parser(["train"])
    (sub,) = parser._subparsers._group_actions
    return sub.choices["train"]._actions


def _argv(line: str) -> list[str]:
    return shlex.split(line.split("#")[0])[1:]


def test_the_file_and_the_commands_mean_what_the_doc_says(in_tmp):
    protocol = TrainConfig.of(
        epochs=100,
        lr_milestones=(20, 30, 40, 50),
        clip_grad_norm=5.0,
        patience=50,
        input_steps=12,
        horizon=12,
        model="dcrnn",
        batch_size=64,
        model_options={"hidden": 64},
        checkpoint_dir="ckpt",
        log_path="log.json",
    )
    first, five, plan = blocks("bash")[0].strip().splitlines()
    assert train_config(build_parser().parse_args(_argv(first))) == protocol
    assert train_config(build_parser().parse_args(_argv(five))) == protocol.replace(epochs=5)
    args = build_parser().parse_args(_argv(plan))
    assert window_spec(args) == WindowSpec(12, 12) and option_value(args, "workers") == 4


def test_the_error_lines_are_printed_as_shown(in_tmp, capsys):
    shown = blocks("text")[0].strip().splitlines()
    for text, line in zip(("epoch = 3", "epochs = 'three'"), shown, strict=True):
        (in_tmp / "run.toml").write_text(text)
        assert main(["train", "none.zarr", "--config", "run.toml"]) == 2
        assert capsys.readouterr().err.strip() == line


def test_the_resume_lines_are_the_ones_printed():
    saved = TrainConfig.of(epochs=50, checkpoint_dir="ckpt").to_dict()
    (resume,) = blocks("bash")[1].strip().splitlines()
    given = {"checkpoint_dir": "ckpt/", "epochs": 80, "resume": True}
    assert given_options(build_parser().parse_args(_argv(resume))) == given
    changes = TrainConfig.resumed(saved, given).resume_changes(saved)
    assert f"warning: --resume: changed {'; '.join(changes)}`" in DOC.read_text()
    with pytest.raises(SpecError) as exc:
        TrainConfig.resumed(saved, {**given, "batch_size": 32})
    assert blocks("text")[1].strip() == f"stzarr train: error: {exc.value}"


def _default(f: dataclasses.Field) -> str:
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if value is None or value in ((), {}):
        return "—"
    if isinstance(value, bool):
        return "`yes`" if value else "`no`"
    return f"`{','.join(map(str, value)) if isinstance(value, tuple) else value}`"


def test_the_table_lists_every_option_with_its_flag_and_default():
    table = DOC.read_text().split("## Every option")[1]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    want = [
        f"| `{part}.{f.name}` | `--{f.metadata.get('flag', f.name).replace('_', '-')}` | "
        f"{_default(f)} | {f.metadata['help']} |"
        for part, kind in PARTS.items()
        for f in dataclasses.fields(kind)
    ]
    assert rows == want
    flags = {a.dest: a.option_strings[0] for a in _train_actions() if a.option_strings}
    for row in rows:
        name, flag = (cell.strip(" `") for cell in row.split("|")[1:3])
        assert flags[name.split(".")[1]] == flag
