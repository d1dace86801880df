"""Source converters (installed as ``stzarr.converters``): one module per source family.

``convert(src, dst, **options)`` detects the family (HDF5 and Parquet by their signatures, JSON
by its structure, CSV by its suffix) and runs the registered converter, which streams the
source into a store through :class:`stzarr.StoreWriter` (temporary sibling, renamed at the end).

Families
--------
``pandas-hdf5``, ``wide-csv``, ``parquet``
    Wide time series, one column per sensor: METR-LA / PeMS-BAY / PeMS / LargeST pandas HDF5
    ("fixed" or "table"), T-GCN-style CSVs, Parquet tables. Several files are concatenated along
    time (:mod:`.series`); the graph comes from a DCRNN pickle, a dense ``.npy``/``.npz`` with
    a sensor-id file, or a distance CSV (:mod:`.graphs`).
``pgt-json``
    PyTorch Geometric Temporal JSON datasets with a static graph (chickenpox, PedalMe,
    Montevideo bus); one file at a time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from stzarr.converters.detect import detect_family
from stzarr.converters.pgt_json import convert_pgt_json
from stzarr.converters.result import ConversionResult, source_paths
from stzarr.converters.series import convert_series
from stzarr.errors import SourceFormatError, StzarrError
from stzarr.store.atomic import check_apart

CONVERTERS: dict[str, Callable[..., ConversionResult]] = {
    "pandas-hdf5": convert_series,
    "wide-csv": convert_series,
    "parquet": convert_series,
    "pgt-json": convert_pgt_json,
}


def convert(
    src: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    dst: str | os.PathLike[str],
    *,
    family: str | None = None,
    **options: object,
) -> ConversionResult:
    """Convert ``src`` (one file, or several in time order) into a store at ``dst``.

    Parameters
    ----------
    src : path or sequence of paths
        Source file(s). Several files must all be wide time series (not PGT JSON).
    dst : path
        Store to create.
    family : str, optional
        Registry name; detected from the (first) file when omitted.
    **options
        Passed to the family's converter (``adjacency``, ``graph_ids``, ``graph_threshold``,
        ``key``, ``time_column``, ``start``, ``freq``, ``chunk_time``, ``shard_time``,
        ``overwrite``, ``allow_gaps``, ``checksum``, ``progress``, ...); an option the family
        does not take is an error.

    Returns
    -------
    ConversionResult
    """
    srcs = source_paths(src)
    graphs = [options[k] for k in ("adjacency", "graph_ids") if options.get(k) is not None]
    check_apart(dst, [*srcs, *graphs])
    family = family or detect_family(srcs[0])
    if family not in CONVERTERS:
        known = ", ".join(CONVERTERS)
        raise SourceFormatError(f"unknown source family {family!r} (known: {known})")
    if family == "pgt-json" and len(srcs) > 1:
        raise SourceFormatError("PGT JSON sources hold their own graph: convert one at a time")
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
    return converter(srcs if len(srcs) > 1 else srcs[0], dst, **given)


__all__ = ["CONVERTERS", "ConversionResult", "convert", "detect_family"]
