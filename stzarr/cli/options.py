"""Command-line flags generated from the configuration's fields (:mod:`stzarr.training.config`).

Every field of :class:`~stzarr.plan.windows.WindowSpec`, :class:`SplitSpec`,
:class:`BatchOptions` and :class:`RunOptions` is one flag, named for the field (``--batch-size``)
unless its metadata names it (``--checkpoint``), typed from its annotation (booleans are
``--x/--no-x``, tuples comma-separated lists, sizes such as ``2GB`` parsed by the field's
``parse``), helped by its metadata. Flags default to nothing: the parsed namespace holds only
the options given, so a configuration file (``--config``) or a checkpoint (``--resume``) can
supply the others, and the rest take the dataclasses' defaults. Values are checked once, by the
dataclasses.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from stzarr.errors import SpecError
from stzarr.plan.windows import WindowSpec
from stzarr.training.config import (
    PARTS,
    BatchOptions,
    RunOptions,
    SplitSpec,
    TrainConfig,
    config_options,
    merge_options,
    option_fields,
    read_config,
    unwrap_optional,
)

T = TypeVar("T")
KEY = ":"
"""Separates a mapping option from its key in a key flag's ``dest`` (``model_options:hidden``)."""


def _converter(kind: Any, parse: Callable[[str], Any] | None) -> Callable[[str], Any]:
    """``argparse`` type of a field's annotation: text to a value of that type."""
    if parse is not None:
        return _argument_type(parse)
    origin = typing.get_origin(kind) or kind
    if origin is tuple:
        item = _converter(typing.get_args(kind)[0], None)
        return _argument_type(lambda text: tuple(item(v.strip()) for v in text.split(",") if v))
    return _argument_type(SCALARS.get(origin, _json_object))  # else a mapping: a JSON object


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("not an integer") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("not a number") from None


SCALARS: dict[Any, Callable[[str], Any]] = {int: _int, float: _float, str: str}


def _json_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _argument_type(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """``convert`` whose failures argparse reports as one line naming the text."""

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except (ValueError, SpecError) as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None

    return parse


def _help(f: dataclasses.Field) -> str:
    """The field's help with its default (none for ``None`` and empty defaults)."""
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    text = f.metadata.get("help", "")
    if "choices" in f.metadata:
        text = f"{{{','.join(f.metadata['choices'])}}}: {text}"
    if isinstance(default, bool) or default is None or default in ((), {}):
        return text
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    return f"{text} (default {shown})"


def add_option(parser: argparse._ActionsContainer, f: dataclasses.Field, kind: Any) -> None:
    """Add the flag (and key flags) of the configuration field ``f`` of type ``kind``."""
    meta = f.metadata
    names = ["--" + meta.get("flag", f.name).replace("_", "-")]
    names += [meta["short"]] if "short" in meta else []
    kind, _ = unwrap_optional(kind)
    common = {"dest": f.name, "default": argparse.SUPPRESS, "help": _help(f)}
    if kind is bool:
        parser.add_argument(*names, action=argparse.BooleanOptionalAction, **common)
    else:
        metavar = meta.get("metavar", f.name.upper() if "choices" not in meta else "NAME")
        parser.add_argument(
            *names, type=_converter(kind, meta.get("parse")), metavar=metavar, **common
        )
    for key, (key_type, key_help) in meta.get("keys", {}).items():
        parser.add_argument(
            f"--{key.replace('_', '-')}",
            dest=f"{f.name}{KEY}{key}",
            type=_argument_type(SCALARS[key_type]),
            default=argparse.SUPPRESS,
            metavar="N",
            help=f"{key_help}; sets {key} in --{f.name.replace('_', '-')}",
        )


def add_options(
    parser: argparse.ArgumentParser, kind: type, names: Iterable[str] | None = None
) -> None:
    """Add the flags of the fields of ``kind`` (those in ``names``, default all), in a group."""
    hints = typing.get_type_hints(kind)
    title = {v: k for k, v in PARTS.items()}[kind]
    group = parser.add_argument_group(f"{title} options")
    wanted = None if names is None else set(names)
    for f in dataclasses.fields(kind):
        if wanted is None or f.name in wanted:
            add_option(group, f, hints[f.name])


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    """``--config FILE``: options from a file, which the flags given override."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="options from a .toml/.yaml/.json file, a training log or a checkpoint (.pt); "
        "flags given override them",
    )


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line, by field name (mapping keys gathered)."""
    fields = option_fields()
    out: dict[str, Any] = {}
    for dest, value in vars(args).items():
        name, _, key = dest.partition(KEY)
        if name not in fields:
            continue
        if key:
            out[name] = {**out.get(name, {}), key: value}
        elif isinstance(value, Mapping):
            out[name] = {**value, **out.get(name, {})}
        else:
            out[name] = value
    return out


def options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of ``--config`` (if given) with the flags given over them."""
    config = getattr(args, "config", None)
    return merge_options({} if config is None else config_file(config), given_options(args))


def config_file(path: str) -> dict[str, Any]:
    """The options of a configuration file, a training log, or a checkpoint (``.pt``)."""
    if not path.endswith(".pt"):
        return read_config(path)
    from stzarr.training.checkpoint import load_checkpoint  # torch: only for a checkpoint

    return config_options(load_checkpoint(Path(path).parent, Path(path).name).config, path)


def build(kind: type[T], args: argparse.Namespace) -> T:
    """The part ``kind`` of the parsed arguments (with ``--config``); other options ignored."""
    values = options(args)
    return kind(**{f.name: values[f.name] for f in dataclasses.fields(kind) if f.name in values})


def option_value(args: argparse.Namespace, name: str) -> Any:
    """Option ``name`` of the parsed arguments (with ``--config``), else its default."""
    values = options(args)
    if name in values:
        return values[name]
    return getattr(TrainConfig().run, name)


def window_spec(args: argparse.Namespace) -> WindowSpec:
    """The :class:`WindowSpec` of parsed arguments."""
    return build(WindowSpec, args)


def split_spec(args: argparse.Namespace) -> SplitSpec:
    """The :class:`SplitSpec` of parsed arguments."""
    return build(SplitSpec, args)


def batch_options(args: argparse.Namespace) -> BatchOptions:
    """The :class:`BatchOptions` of parsed arguments."""
    return build(BatchOptions, args)


def run_options(args: argparse.Namespace) -> RunOptions:
    """The :class:`RunOptions` of parsed arguments."""
    return build(RunOptions, args)


def add_train_args(parser: argparse.ArgumentParser) -> None:
    """Every option's flag, and ``--config``."""
    add_config_arg(parser)
    for kind in PARTS.values():
        add_options(parser, kind)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The whole :class:`TrainConfig` of parsed ``train`` arguments (with ``--config``)."""
    return TrainConfig.of(**options(args))
