"""``stzarr verify``: check a store's format, coordinates, graph and (``--full``) every chunk."""

from __future__ import annotations

import argparse
import json

from stzarr.errors import SpecError
from stzarr.store.verify import verify_store

MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``verify`` sub-command."""
    parser = subparsers.add_parser(
        "verify",
        help="check a store (format, coordinates, graph; --full: every chunk)",
        description="Check the format version, chunk checksums and chunk files, the "
        "coordinates (increasing time, unique node ids) and the graph (indices in range, "
        "finite non-negative weights), and name partial outputs left by killed runs. With "
        "--full, also read every chunk of every array (checksums verified) and compare the "
        "reading counts recorded at conversion. Exit 1 when a check fails.",
    )
    parser.add_argument("store", metavar="STORE", help="store path or URL")
    parser.add_argument("--full", action="store_true", help="read and check every chunk")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``stzarr verify``."""
    if args.quiet and not args.full:
        raise SpecError("--quiet does nothing without --full (only --full shows a progress bar)")
    report = verify_store(args.store, full=args.full, progress=not (args.quiet or args.json))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        width = max(len(f.check) for f in report.findings)
        for f in report.findings:
            print(f"{MARKS[f.status]}  {f.check:<{width}}  {f.detail}")
        failed = sum(f.status == "fail" for f in report.findings)
        print(f"{report.path}: " + ("ok" if report.ok else f"{failed} check(s) failed"))
    return 0 if report.ok else 1
