"""What a conversion produced (plain data), and the destination checks every converter runs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stzarr.errors import SourceFormatError
from stzarr.store.format import check_store_target


def source_paths(
    src: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> list[str | os.PathLike[str]]:
    """One source path or several, as a non-empty list (one line when empty)."""
    srcs = [src] if isinstance(src, str | os.PathLike) else list(src)
    if not srcs:
        raise SourceFormatError("no source file given")
    return srcs


def check_destination(dst: Path, overwrite: bool) -> None:
    """Refuse early (before any source is read) a destination that cannot or must not be written.

    Raises
    ------
    StoreExistsError
        ``dst`` exists and ``overwrite`` is false.
    StzarrError
        The parent directory is missing or not writable, or ``dst`` exists but is not a store
        stzarr wrote (never replaced, even with ``overwrite``).
    """
    check_store_target(dst, overwrite)


@dataclass(frozen=True)
class ConversionResult:
    """Summary of one conversion.

    Attributes
    ----------
    path : str
        The store written.
    family : str
        Source family (registry name).
    shape : tuple of int
        ``(time, node, feature)``.
    n_edges : int
        Edges stored.
    missing : dict
        Reading counts (``total``, ``zero``, ``nan``, ``inf``, ``missing``, ``fraction``).
    time : dict
        The time axis found (start, end, interval, irregular steps).
    warnings : list of str
        Things the user should know (NaN/inf kept as missing, irregular steps accepted).
    """

    path: str
    family: str
    shape: tuple[int, int, int]
    n_edges: int
    missing: dict
    time: dict
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain-data view for JSON."""
        return asdict(self)


def data_warnings(missing: dict, time: dict) -> list[str]:
    """Human-readable notes about NaN/inf readings and accepted irregular spacing."""
    notes = []
    if missing["nan"] or missing["inf"]:
        notes.append(
            f"{missing['nan']} NaN and {missing['inf']} infinite reading(s) kept as missing (NaN)"
        )
    if time.get("irregular_steps"):
        notes.append(
            f"{time['irregular_steps']} irregular time step(s) kept (first at "
            f"{time['first_irregular']}); windows spanning them mix intervals"
        )
    return notes
