"""Source converters (installed as ``stzarr.converters``): one module per source family.

``convert(src, dst, **options)`` detects the family (HDF5 by its signature, JSON by its
structure) and runs the registered converter, which streams the source into a store through
:class:`stzarr.StoreWriter` (temporary sibling, renamed at the end).

Families
--------
``pandas-hdf5``
    METR-LA / PeMS-BAY / PeMS pandas HDF5 ("fixed" or "table"), optional DCRNN adjacency pickle.
``pgt-json``
    PyTorch Geometric Temporal JSON datasets with a static graph (chickenpox, PedalMe,
    Montevideo bus).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from stzarr.converters.pandas_hdf5 import convert_pandas_hdf5
from stzarr.converters.pgt_json import convert_pgt_json
from stzarr.converters.result import ConversionResult
from stzarr.errors import SourceFormatError, StzarrError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")

CONVERTERS: dict[str, Callable[..., ConversionResult]] = {
    "pandas-hdf5": convert_pandas_hdf5,
    "pgt-json": convert_pgt_json,
}


def detect_family(src: str | os.PathLike[str]) -> str:
    """The registry name of the source's family.

    HDF5 is recognised by its signature (at offset 0 or a user-block offset 512, 1024, ...),
    JSON by its first non-blank byte being ``{``.

    Raises
    ------
    SourceFormatError
        Missing, empty or unrecognised file.
    """
    path = Path(src)
    if not path.exists():
        raise SourceFormatError(f"{path} does not exist")
    if not path.is_file():
        raise SourceFormatError(f"{path} is not a file")
    size = path.stat().st_size
    if size == 0:
        raise SourceFormatError(f"{path} is empty")
    with path.open("rb") as fh:
        head = fh.read(64)
        offset = 512
        while head[:8] != HDF5_SIGNATURE and offset < min(size, 2**20):
            fh.seek(offset)
            head_at = fh.read(8)
            if head_at == HDF5_SIGNATURE:
                return "pandas-hdf5"
            offset *= 2
    if head[:8] == HDF5_SIGNATURE:
        return "pandas-hdf5"
    if head.lstrip()[:1] == b"{":
        return "pgt-json"
    if path.suffix.lower() in HDF5_SUFFIXES:
        raise SourceFormatError(f"{path} is not an HDF5 file (no HDF5 signature)")
    raise SourceFormatError(
        f"{path}: unrecognised source (not HDF5 and not JSON); supported: {', '.join(CONVERTERS)}"
    )


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    family: str | None = None,
    **options: object,
) -> ConversionResult:
    """Convert ``src`` into a store at ``dst`` with the converter of its family.

    Parameters
    ----------
    src, dst : path
        Source file and store to create.
    family : str, optional
        Registry name; detected from the file when omitted.
    **options
        Passed to the family's converter (``adjacency``, ``key``, ``chunk_time``,
        ``shard_time``, ``overwrite``, ``allow_gaps``, ``checksum``, ``progress``); an option the
        family does not take is an error.

    Returns
    -------
    ConversionResult
    """
    family = family or detect_family(src)
    if family not in CONVERTERS:
        known = ", ".join(CONVERTERS)
        raise SourceFormatError(f"unknown source family {family!r} (known: {known})")
    for name in ("chunk_time", "shard_time"):
        value = options.get(name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise StzarrError(f"--{name.replace('_', '-')} must be a positive integer, not {value}")
    converter = CONVERTERS[family]
    accepted = converter.__kwdefaults__ or {}
    given = {k: v for k, v in options.items() if k in accepted or v not in (None, False)}
    unsupported = sorted(k for k in given if k not in accepted)
    if unsupported:
        flags = ", ".join("--" + k.replace("_", "-") for k in unsupported)
        raise SourceFormatError(f"{flags} does not apply to {family} sources")
    return converter(src, dst, **given)


__all__ = ["CONVERTERS", "ConversionResult", "convert", "detect_family"]
