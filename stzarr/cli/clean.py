"""``stzarr clean``: remove the partial outputs that killed runs left next to a destination."""

from __future__ import annotations

import argparse

from stzarr.errors import StzarrError
from stzarr.store.atomic import partials_of, remove_stale_partials
from stzarr.store.format import is_local


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``clean`` sub-command."""
    parser = subparsers.add_parser(
        "clean",
        help="remove partial outputs left next to DST by killed runs",
        description="Remove the hidden partial outputs (.DST.partial-*) that runs killed "
        "without a chance to clean up (SIGKILL, power loss) left next to DST. Partials a "
        "running command still holds are kept. DST itself is never touched.",
    )
    parser.add_argument("dst", metavar="DST", help="the destination (store, file) they belong to")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``stzarr clean``."""
    if not is_local(args.dst):
        raise StzarrError(f"{args.dst}: clean works on local paths only")
    dst = args.dst.removeprefix("file://")
    removed = remove_stale_partials(dst, announce=False)
    for path in removed:
        print(f"removed {path}")
    for path in sorted(set(partials_of(dst)) - set(removed)):
        print(f"kept {path} (a running command is writing it)")
    if not removed:
        print(f"{dst}: no stale partial outputs")
    return 0
