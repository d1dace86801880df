"""Sizes in bytes as people write them (``2GB``, ``500MB``, ``1.5GiB``), for memory budgets."""

from __future__ import annotations

import re

from dask.utils import parse_bytes

from stzarr.errors import SpecError


def parse_size(text: str | int, *, name: str = "size") -> int:
    """Bytes of a size such as ``2GB``, ``500MB``, ``1.5GiB`` or ``1000000``.

    ``kB``/``MB``/``GB``/``TB`` are powers of 1000, ``KiB``/``MiB``/``GiB``/``TiB`` powers of
    1024 (:func:`dask.utils.parse_bytes`); a bare number is bytes.

    Parameters
    ----------
    text : str or int
        The size.
    name : str
        What the size is, for the error message (e.g. ``"--max-memory"``).

    Raises
    ------
    SpecError
        When ``text`` is not a size or not positive.
    """
    if isinstance(text, bool):
        raise SpecError(f"{name} must be a size like 2GB or 500MB, got {text!r}")
    try:
        if isinstance(text, str) and not re.match(r"\s*-?[0-9.]", text):
            raise ValueError(text)  # dask reads a bare unit ("GB") as one of it
        value = parse_bytes(text) if isinstance(text, str) else int(text)
    except (ValueError, TypeError):
        raise SpecError(
            f"cannot read {name} {text!r}: write a number with a unit, like 2GB, 500MB or 1.5GiB"
        ) from None
    if value <= 0:
        raise SpecError(f"{name} must be positive, got {text!r}")
    return int(value)
