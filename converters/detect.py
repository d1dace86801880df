"""Which family a source file belongs to, told by its content (and, for text, its suffix)."""

from __future__ import annotations

import os
from pathlib import Path

from stzarr.errors import SourceFormatError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
PARQUET_MAGIC = b"PAR1"
CSV_SUFFIXES = (".csv", ".txt")
FAMILIES = ("pandas-hdf5", "pgt-json", "wide-csv", "parquet")


def detect_family(src: str | os.PathLike[str]) -> str:
    """The registry name of the source's family.

    HDF5 is recognised by its signature (at offset 0 or a user-block offset 512, 1024, ...),
    Parquet by its ``PAR1`` magic, JSON by its first non-blank byte being ``{``, a wide CSV by
    its ``.csv``/``.txt`` suffix.

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
            if fh.read(8) == HDF5_SIGNATURE:
                return "pandas-hdf5"
            offset *= 2
    if head[:8] == HDF5_SIGNATURE:
        return "pandas-hdf5"
    if head[:4] == PARQUET_MAGIC:
        return "parquet"
    if head.lstrip()[:1] == b"{":
        return "pgt-json"
    suffix = path.suffix.lower()
    if suffix in HDF5_SUFFIXES:
        raise SourceFormatError(f"{path} is not an HDF5 file (no HDF5 signature)")
    if suffix in CSV_SUFFIXES:
        return "wide-csv"
    if suffix in (".parquet", ".pq"):
        raise SourceFormatError(f"{path} is not a Parquet file (no PAR1 magic)")
    raise SourceFormatError(
        f"{path}: unrecognised source (not HDF5, Parquet, JSON or .csv); supported: "
        f"{', '.join(FAMILIES)}"
    )
