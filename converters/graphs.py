"""Graph sources: where a store's static graph comes from.

* a DCRNN ``adj_mx.pkl`` ``[sensor_ids, sensor_id_to_ind, adj_mx]`` (:mod:`.adjacency`);
* a dense ``.npy`` / ``.npz`` adjacency whose row order is given by a sensor-id file, the LargeST
  layout (``ca_rn_adj.npy`` with ``ca_meta.csv``, column ``ID``); read in row blocks straight
  from the file (or the zip member), so no N x N copy is ever held, float64 or otherwise;
* a distance CSV ``from,to,cost`` (header optional) turned into weights with DCRNN's
  thresholded Gaussian kernel (``scripts/gen_adj_mx.py``): ``w = exp(-(d / sigma)^2)`` with
  ``sigma`` the standard deviation of the finite distances among the known sensors, weights
  below the threshold (default 0.1) dropped; rows naming unknown sensors are skipped and a
  repeated pair keeps its last distance, as there.

Sensor-id files: a CSV with an ``ID`` (LargeST), ``sensor_id`` (DCRNN's
``graph_sensor_locations.csv``) or ``id`` column, or a text file of ids separated by commas or
white space (DCRNN's ``graph_sensor_ids.txt``).
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from tokenize import TokenError
from typing import BinaryIO

import numpy as np
import pandas as pd
import scipy.sparse as sp

from stzarr.converters.adjacency import ROW_BLOCK, load_adjacency
from stzarr.converters.streaming import sha256_file
from stzarr.converters.strict import csv_rows, decoded_lines
from stzarr.errors import SourceFormatError

ID_COLUMNS = ("ID", "sensor_id", "id")
DEFAULT_THRESHOLD = 0.1
GRAPH_SUFFIXES = (".pkl", ".npy", ".npz", ".csv")


@dataclass(frozen=True)
class GraphSource:
    """A graph read from a file: weights over its own sensor order.

    Attributes
    ----------
    ids : list of str or None
        Sensor ids in the graph's order (None for a distance CSV without an id file: it takes
        the data's order).
    matrix : scipy.sparse.coo_matrix
        (N, N) float32 weights, ``matrix[i, j]`` the edge i -> j.
    attrs : dict
        Provenance for the store's ``graph_source`` attribute.
    """

    ids: list[str] | None
    matrix: sp.coo_matrix
    attrs: dict = field(default_factory=dict)


def read_sensor_ids(path: str | os.PathLike[str]) -> list[str]:
    """Sensor ids, in order, from a metadata CSV or a plain id list (see the module notes)."""
    path = Path(path)
    if not path.is_file():
        raise SourceFormatError(f"sensor-id file {path} does not exist")
    text = "".join(decoded_lines(path, terminated=False))
    first = text.lstrip().split("\n", 1)[0]
    header = [h.strip() for h in first.split(",")]
    one_line = len(text.strip().splitlines()) <= 1
    if path.suffix.lower() == ".csv" and not one_line:
        column = next((h for h in ID_COLUMNS if h in header), None)
        if column is None:
            raise SourceFormatError(
                f"{path}: a sensor-id CSV needs a column named {' or '.join(ID_COLUMNS)} "
                f"(header is {header[:6]})"
            )
        try:
            ids = pd.read_csv(path, usecols=[column], dtype=str)[column].str.strip().tolist()
        except (ValueError, pd.errors.ParserError) as exc:
            raise SourceFormatError(f"{path}: unreadable sensor-id CSV ({exc})") from None
    else:
        ids = [s for s in re.split(r"[,\s]+", text.strip()) if s]
    if not ids:
        raise SourceFormatError(f"{path}: no sensor ids")
    if any(s in ("", "nan") for s in ids):
        raise SourceFormatError(f"{path}: empty sensor id")
    if len(set(ids)) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise SourceFormatError(f"{path}: duplicate sensor id {dup!r}")
    return ids


@contextmanager
def _npy_stream(path: Path) -> Iterator[tuple[BinaryIO, tuple[int, ...], np.dtype]]:
    """The open ``.npy`` data stream (of the file, or of the single array of a ``.npz``)."""
    with path.open("rb") as raw:
        if path.suffix.lower() == ".npz":
            try:
                archive = zipfile.ZipFile(raw)
            except zipfile.BadZipFile:
                raise SourceFormatError(f"{path}: not a .npz archive") from None
            members = [m for m in archive.namelist() if m.endswith(".npy")]
            if len(members) != 1:
                raise SourceFormatError(
                    f"{path}: expected one array in the .npz, found {len(members)} "
                    f"({', '.join(m[:-4] for m in members[:5])})"
                )
            fh: BinaryIO = archive.open(members[0])  # type: ignore[assignment]
        else:
            fh = raw
        try:
            version = np.lib.format.read_magic(fh)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(fh)
        except (ValueError, SyntaxError, TokenError) as exc:  # a header numpy cannot parse
            raise SourceFormatError(f"{path}: not a NumPy array file ({exc})") from None
        if fortran:
            raise SourceFormatError(
                f"{path}: Fortran-order array; save it with np.save(np.ascontiguousarray(a))"
            )
        yield fh, shape, dtype


def dense_graph(path: Path, ids: list[str]) -> sp.coo_matrix:
    """Non-zeros of a dense ``.npy``/``.npz`` (N, N) matrix, read :data:`ROW_BLOCK` rows at a
    time from the file (peak memory: one row block, whatever the file's dtype)."""
    rows, cols, weights = [], [], []
    with _npy_stream(path) as (fh, shape, dtype):
        n = len(ids)
        if len(shape) != 2 or shape != (n, n):
            raise SourceFormatError(
                f"{path}: adjacency has shape {shape}; the sensor-id file lists {n} sensors"
            )
        if dtype.kind not in "fiub":
            raise SourceFormatError(f"{path}: adjacency dtype {dtype} is not numeric")
        row_bytes = n * dtype.itemsize
        for r0 in range(0, n, ROW_BLOCK):
            count = min(ROW_BLOCK, n - r0)
            buf = fh.read(count * row_bytes)
            if len(buf) != count * row_bytes:
                raise SourceFormatError(f"{path}: file ends at row {r0} of {n} (truncated?)")
            block = np.frombuffer(buf, dtype=dtype).reshape(count, n)
            if dtype.kind == "f" and not np.isfinite(block).all():
                r, c = np.argwhere(~np.isfinite(block))[0]
                raise SourceFormatError(f"{path}: non-finite weight at [{r0 + r}, {c}]")
            r, c = np.nonzero(block)
            rows.append(r + r0)
            cols.append(c)
            weights.append(block[r, c].astype(np.float32))
            del block, buf  # before the next read: one row block alive at a time
    return sp.coo_matrix(
        (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )


def _read_distances(path: Path) -> pd.DataFrame:
    """``from`` (str), ``to`` (str), ``cost`` (float) rows of a distance CSV, header optional."""
    rows = csv_rows(path)  # every row checked: UTF-8, three fields, not cut short
    _, fields = next(rows, (0, []))
    fields = [f.strip() for f in fields]
    if len(fields) != 3:
        raise SourceFormatError(
            f"{path}: a distance CSV has 3 columns (from,to,cost); the first line has {len(fields)}"
        )
    for _ in rows:
        pass
    try:
        float(fields[2])
        header = None
    except ValueError:
        header = 0
    try:
        frame = pd.read_csv(
            path, header=header, names=["from", "to", "cost"], dtype={"from": str, "to": str}
        )
    except (ValueError, pd.errors.ParserError) as exc:
        raise SourceFormatError(f"{path}: unreadable distance CSV ({exc})") from None
    cost = pd.to_numeric(frame["cost"], errors="coerce")
    offset = 2 if header == 0 else 1  # data row -> line number
    bad = np.flatnonzero(cost.isna().to_numpy())
    if bad.size:
        raise SourceFormatError(
            f"{path}: line {bad[0] + offset}: cost {frame['cost'].iloc[bad[0]]!r} is not a number"
        )
    negative = np.flatnonzero((cost < 0).to_numpy())
    if negative.size:
        raise SourceFormatError(
            f"{path}: line {negative[0] + offset}: negative distance {cost.iloc[negative[0]]}"
        )
    frame["cost"] = cost
    frame["from"] = frame["from"].str.strip()
    frame["to"] = frame["to"].str.strip()
    return frame


def distance_graph(
    path: Path, ids: list[str], threshold: float
) -> tuple[sp.coo_matrix, dict[str, float | int]]:
    """DCRNN's thresholded Gaussian kernel over a distance CSV, restricted to ``ids``.

    Returns the weights and the kernel's parameters (``sigma``, ``threshold``, rows used and
    skipped).
    """
    if not 0 <= threshold < 1:
        raise SourceFormatError(f"--graph-threshold must be in [0, 1), not {threshold}")
    frame = _read_distances(path)
    position = pd.Series(np.arange(len(ids)), index=pd.Index(ids))
    i = frame["from"].map(position)
    j = frame["to"].map(position)
    known = (i.notna() & j.notna()).to_numpy()
    if not known.any():
        raise SourceFormatError(
            f"{path}: no row names two of the {len(ids)} sensors (e.g. {ids[:3]})"
        )
    n = len(ids)
    keys = i[known].to_numpy(np.int64) * n + j[known].to_numpy(np.int64)
    dist = frame["cost"].to_numpy(np.float32)[known]
    # a repeated pair keeps its last distance; sorted row-major as DCRNN's matrix is scanned
    unique, first_in_reversed = np.unique(keys[::-1], return_index=True)
    dist = dist[keys.size - 1 - first_in_reversed]
    finite = np.isfinite(dist)
    sigma = dist[finite].std()
    if not sigma > 0:
        raise SourceFormatError(
            f"{path}: the distances among the sensors are all equal; the kernel's sigma is 0"
        )
    weight = np.exp(-np.square(dist / sigma))
    keep = (weight >= threshold) & (weight > 0)
    matrix = sp.coo_matrix(
        (weight[keep], (unique[keep] // n, unique[keep] % n)), shape=(n, n), dtype=np.float32
    )
    params = {
        "sigma": float(sigma),
        "threshold": float(threshold),
        "rows": len(frame),
        "rows_skipped": int((~known).sum()),
    }
    return matrix, params


def load_graph(
    path: str | os.PathLike[str],
    *,
    ids_file: str | os.PathLike[str] | None = None,
    threshold: float | None = None,
    data_ids: list[str],
) -> GraphSource:
    """Read a graph source, chosen by its suffix (``.pkl``, ``.npy``, ``.npz``, ``.csv``).

    Parameters
    ----------
    path : path
        The graph file.
    ids_file : path, optional
        Sensor ids of a dense matrix (required) or of a distance CSV (default: ``data_ids``).
    threshold : float, optional
        Kernel threshold of a distance CSV (default 0.1).
    data_ids : list of str
        The data's sensor ids in file order.

    Raises
    ------
    SourceFormatError
        Missing or unreadable file, an option that does not apply, or a malformed graph.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in GRAPH_SUFFIXES:
        raise SourceFormatError(
            f"{path}: unknown graph source (expected {', '.join(GRAPH_SUFFIXES)})"
        )
    if not path.is_file():
        raise SourceFormatError(f"graph file {path} does not exist")
    if threshold is not None and suffix != ".csv":
        raise SourceFormatError("--graph-threshold applies only to a distance CSV")
    attrs: dict = {"file": path.name, "sha256": sha256_file(path)}
    if suffix == ".pkl":
        if ids_file is not None:
            raise SourceFormatError("--graph-ids does not apply to a DCRNN pickle (it has ids)")
        ids, adj = load_adjacency(path)
        return GraphSource(ids, sp.coo_matrix(adj), {**attrs, "format": "dcrnn-pickle"})
    ids = read_sensor_ids(ids_file) if ids_file is not None else None
    if ids_file is not None:
        attrs.update(ids_file=Path(ids_file).name, ids_sha256=sha256_file(ids_file))
    if suffix in (".npy", ".npz"):
        if ids is None:
            raise SourceFormatError(
                f"{path.name} holds no sensor ids: pass --graph-ids (e.g. LargeST's ca_meta.csv)"
            )
        return GraphSource(ids, dense_graph(path, ids), {**attrs, "format": f"dense{suffix}"})
    matrix, params = distance_graph(
        path, ids or data_ids, DEFAULT_THRESHOLD if threshold is None else threshold
    )
    return GraphSource(ids, matrix, {**attrs, "format": "distance-csv", **params})
