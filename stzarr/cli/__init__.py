"""The ``stzarr`` command line. Each sub-command lives in its own module of this package and
exposes ``register(subparsers)``, which adds its parser and sets ``func`` (args -> exit code).

User mistakes (any :class:`stzarr.errors.StzarrError`) print one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import re
import signal
import sys
import typing
import warnings
from collections.abc import Callable, Sequence
from typing import TextIO

from stzarr import __version__
from stzarr.errors import StzarrError, StzarrWarning, Terminated
from stzarr.store.atomic import abort_all, commands_commit, defer_signal
from stzarr.store.io_config import PIPELINES, active_pipeline, configure_io

COMMANDS = (
    "synth",
    "convert",
    "append",
    "info",
    "verify",
    "clean",
    "stats",
    "plan",
    "rechunk",
    "train",
    "evaluate",
    "predict",
    "plot",
)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors (a bad flag or value) are one line and exit 2."""

    def error(self, message: str) -> typing.NoReturn:
        """Print ``PROG: error: MESSAGE`` on one line and exit 2."""
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def build_parser(commands: Sequence[str] = COMMANDS) -> Parser:
    """The top-level parser with ``commands`` (default: every one) registered.

    Each sub-command's module imports what it runs, so registering only the command being run
    keeps ``stzarr info`` from importing what ``stzarr train`` needs.
    """
    parser = Parser(
        prog="stzarr", description="Zarr-backed data engine for spatiotemporal GNN training."
    )
    parser.add_argument("--version", action="version", version=f"stzarr {__version__}")
    parser.add_argument(
        "--codec-pipeline",
        choices=PIPELINES,
        default=None,
        help="codec pipeline (default: $STZARR_CODEC_PIPELINE or auto); store reads use stzarr's "
        "own read path unless 'zarr' is chosen (see stzarr.store.io_config)",
    )
    parser.add_argument(
        "--io-threads",
        type=int,
        default=None,
        help="codec and read threads (default: $STZARR_IO_THREADS or one per CPU; reads one more)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log the I/O set-up (codec pipeline) on stderr"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in commands:
        try:
            module = importlib.import_module(f"stzarr.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"stzarr.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def _warning_printer(command: str) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints stzarr's own warnings as one line each."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, StzarrWarning):
            text = f"stzarr {command}: warning: {message}"
        else:
            text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
        print(text, file=file or sys.stderr)

    return show


WRITERS = frozenset({"synth", "convert", "append", "rechunk"})  # whose change is one commit


def _terminate(signum: int, frame: object) -> None:
    if not defer_signal(Terminated()):
        raise Terminated


def _interrupt(signum: int, frame: object) -> None:
    if not defer_signal(KeyboardInterrupt()):
        raise KeyboardInterrupt


def _one_line(exc: BaseException | str) -> str:
    """The message of ``exc`` on one line (a library's message may span several)."""
    return re.sub(r"\s*\n\s*", " ", str(exc)).strip()


def _said(command: str, held: BaseException | None) -> None:
    """One line when a signal arrived after the command's change was committed."""
    if held is not None:
        name = "SIGTERM" if isinstance(held, Terminated) else "SIGINT"
        print(f"stzarr {command}: {name} arrived after the output was committed", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code.

    User mistakes (:class:`~stzarr.errors.StzarrError`) and operating-system errors (a path that
    cannot be read or written) print one line and return 2; Ctrl-C returns 130 and SIGTERM
    143, after every partial output was removed (writers clean up on any exception); a closed
    pipe (``stzarr info STORE | head``) ends quietly with 141. A writer (synth, convert, append,
    rechunk) whose output was committed exits 0 whatever signal arrives after: the signal is
    held from the commit on and named in one line.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_commands_named(argv)).parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    previous = signal.signal(signal.SIGTERM, _terminate)
    previous_int = signal.signal(signal.SIGINT, _interrupt)
    show = warnings.showwarning
    warnings.showwarning = _warning_printer(args.command)
    hold = commands_commit() if args.command in WRITERS else contextlib.nullcontext()
    try:
        with hold as state:
            try:
                code = _run(args)
            finally:
                held = None if state is None else state.pending
            _said(args.command, held)
            return code
    except StzarrError as exc:
        print(f"stzarr {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Terminated:
        print(
            f"stzarr {args.command}: terminated (SIGTERM); partial output removed", file=sys.stderr
        )
        return 143
    except KeyboardInterrupt:
        print(f"stzarr {args.command}: interrupted; partial output removed", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away: stop writing, and keep Python from complaining at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(
            f"stzarr {args.command}: error: cannot access{where}: "
            + _one_line(exc.strerror or exc),
            file=sys.stderr,
        )
        return 2
    finally:
        abort_all()
        warnings.showwarning = show
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def _commands_named(argv: Sequence[str]) -> Sequence[str]:
    """The sub-commands to register for ``argv``: the one it runs (the first word that names a
    command: the top-level options take no such value), none for ``--version``, else all (for
    the help)."""
    for word in argv:
        if word in COMMANDS:
            return (word,)
    return () if "--version" in argv else COMMANDS


def _run(args: argparse.Namespace) -> int:
    if args.codec_pipeline is not None or args.io_threads is not None:
        configure_io(args.codec_pipeline, args.io_threads)
    else:
        logging.getLogger("stzarr.io").info(active_pipeline().describe())
    code = int(args.func(args) or 0)
    sys.stdout.flush()
    return code
