"""Checks of what a command leaves behind: its stderr and the files under a folder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from stzarr.cli import main


def snapshot(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (relative path -> digest), links and dirs noted."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def run_cli(capsys, *argv) -> tuple[int, list[str]]:
    """Run the CLI in process; return its exit code and its stderr lines (progress excluded)."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.replace("\r", "\n").splitlines()
    err = [line for line in err if line.strip() and "%|" not in line]
    return code, err


def assert_one_line(err: list[str], *needles: str) -> str:
    """Exactly one line of stderr, containing every needle; never a traceback."""
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


def no_hidden(root: Path) -> list[str]:
    """Hidden entries (partials, old copies) anywhere under ``root``."""
    return [str(p) for p in root.rglob(".*")]
