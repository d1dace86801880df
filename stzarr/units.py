"""Byte sizes for people: one formatter for every message, table and log line, and the parser of
sizes given on the command line (``500MB``, ``2GiB``)."""

from __future__ import annotations

import re

from stzarr.errors import SpecError

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
_FACTORS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "kib": 2**10,
    "m": 10**6,
    "mb": 10**6,
    "mib": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gib": 2**30,
    "t": 10**12,
    "tb": 10**12,
    "tib": 2**40,
}


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units: ``"512 B"``, ``"1.5 KiB"``, ``"36.0 MiB"``, ``"2.0 GiB"``."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def parse_bytes(text: str) -> int:
    """Bytes of a size such as ``"2GB"``, ``"500MB"``, ``"1.5GiB"`` or ``"1048576"``.

    Decimal units (kB, MB, GB, TB) are powers of 1000, binary ones (KiB, MiB, GiB, TiB) powers
    of 1024; case is ignored.

    Raises
    ------
    SpecError
        When ``text`` is not a positive size.
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _FACTORS:
        raise SpecError(f"cannot read {text!r} as a size (e.g. 500MB, 2GB, 1.5GiB)")
    size = int(float(match.group(1)) * _FACTORS[unit])
    if size < 1:
        raise SpecError(f"a size must be at least one byte, got {text!r}")
    return size
