"""Realistic stand-ins for METR-LA / PeMS traffic files, in exactly their pandas HDF5 layout.

No real speed series is available offline, so benchmarks and tests use generated files that are
indistinguishable in layout from ``metr-la.h5`` / ``pems-bay.h5`` / ``pems_cali_speed.h5``: one
DataFrame (5-minute ``DatetimeIndex`` x one float64 column per sensor id, mph, 0.0 = missing),
pandas "fixed" format by default (``KEY/axis0``, ``KEY/axis1``, ``KEY/block0_values``, written
with h5py so that any size streams to disk with bounded memory) or "table" format (pandas
``append``). A DCRNN adjacency pickle ``[sensor_ids, sensor_id_to_ind, adj_mx]`` is written next
to the file when no real graph is given.

The signal has a daily and a weekly cycle, weekday rush-hour dips whose depth varies smoothly
along the graph, day-to-day variability that is spatially correlated (noise smoothed over the
adjacency) and temporally persistent (AR(1) on an hourly grid), and about 8% missing zeros:
isolated dropouts, whole-sensor outages of hours to weeks and rare network-wide outages.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.spatial import cKDTree
from tqdm.auto import tqdm

from stzarr.converters.adjacency import load_adjacency
from stzarr.errors import StzarrError
from stzarr.store.atomic import (
    AtomicOutput,
    atomic_file,
    check_target,
    has_signature,
    is_hdf5_file,
    is_pickle_file,
)

FORMATS = ("fixed", "table")
LABEL_KINDS = ("str", "int")
MAX_NODES = 11_160 * 4
BLOCK_STEPS = 864  # three days of 5-minute steps; a multiple of the hourly noise grid
STEPS_PER_HOUR = 12

# Missing-data model (fractions of all readings); the total is about 8% as in METR-LA.
DROPOUT_FRACTION = 0.025
SENSOR_OUTAGE_FRACTION = 0.065
NETWORK_OUTAGE_FRACTION = 0.004


@dataclass(frozen=True)
class SynthResult:
    """What :func:`synth_traffic` wrote.

    Attributes
    ----------
    path : str
        The HDF5 file.
    adjacency : str or None
        The adjacency pickle written next to it (None when a real graph was given).
    key, format, label_kind : str
        pandas key, pandas storage format and column label type.
    n_steps, n_nodes : int
        Frame shape.
    start : str
        First timestamp (ISO).
    missing_fraction : float
        Fraction of readings written as 0.0.
    """

    path: str
    adjacency: str | None
    key: str
    format: str
    label_kind: str
    n_steps: int
    n_nodes: int
    start: str
    missing_fraction: float

    def to_dict(self) -> dict:
        """Plain-data view for JSON."""
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Graph
# --------------------------------------------------------------------------------------------


def random_sensor_graph(
    n_nodes: int, rng: np.random.Generator, k: int = 8
) -> tuple[list[str], sp.csr_matrix]:
    """A plausible road-sensor graph: DCRNN-style thresholded Gaussian kernel over k-NN distances.

    Sensors are scattered along a few random "corridors" (line segments) in a unit square; each
    sensor links to its ``k`` nearest neighbours with weight ``exp(-(d / sigma)^2)`` (``sigma`` the
    std of those distances), weights below 0.1 are dropped and the diagonal is 1, as in DCRNN.

    Returns
    -------
    sensor_ids : list of str
        Distinct six-digit ids (PeMS style), sorted.
    adj : scipy.sparse.csr_matrix
        float32 (N, N) weights.
    """
    n_corridors = max(1, int(np.sqrt(n_nodes) / 2))
    ends = rng.random((n_corridors, 2, 2))
    which = rng.integers(0, n_corridors, n_nodes)
    along = rng.random(n_nodes)[:, None]
    pos = ends[which, 0] + along * (ends[which, 1] - ends[which, 0])
    pos += 0.004 * rng.standard_normal(pos.shape)
    k_eff = min(k, n_nodes - 1)
    rows, cols, weights = [np.arange(n_nodes)], [np.arange(n_nodes)], [np.ones(n_nodes)]
    if k_eff > 0:
        dist, nbr = cKDTree(pos).query(pos, k=k_eff + 1)
        dist, nbr = dist[:, 1:], nbr[:, 1:]
        sigma = dist.std() or 1.0
        w = np.exp(-((dist / sigma) ** 2))
        # Road distances are directional: drop a random share of links to make A asymmetric.
        keep = (w >= 0.1) & (rng.random(w.shape) < 0.85)
        rows.append(np.repeat(np.arange(n_nodes), k_eff)[keep.ravel()])
        cols.append(nbr.ravel()[keep.ravel()])
        weights.append(w.ravel()[keep.ravel()])
    adj = sp.csr_matrix(
        (np.concatenate(weights).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_nodes, n_nodes),
    )
    ids = rng.choice(np.arange(400_000, 1_000_000), size=n_nodes, replace=False)
    return [str(i) for i in np.sort(ids)], adj


def write_adjacency(path: Path, sensor_ids: list[str], adj: sp.spmatrix) -> None:
    """Write the DCRNN pickle ``[sensor_ids, sensor_id_to_ind, adj_mx]`` (dense float32 adj_mx).

    Pickle protocol 5 lets the (N, N) array unpickle without an extra copy.
    """
    dense = adj.toarray().astype(np.float32)
    with atomic_file(path, ours=is_pickle_file, what="an adjacency pickle") as partial:
        with partial.open("wb") as fh:
            pickle.dump(
                [sensor_ids, {s: i for i, s in enumerate(sensor_ids)}, dense], fh, protocol=5
            )


# --------------------------------------------------------------------------------------------
# Signal
# --------------------------------------------------------------------------------------------


class _TrafficModel:
    """Vectorised speed model; :meth:`block` yields consecutive (t, n) float64 blocks."""

    def __init__(
        self,
        adj: sp.spmatrix,
        n_steps: int,
        start: np.datetime64,
        step: np.timedelta64,
        rng: np.random.Generator,
    ) -> None:
        n = adj.shape[0]
        self.n, self.n_steps, self.start, self.step, self.rng = n, n_steps, start, step, rng
        # Spatial smoothing operator: two hops of the row-normalised symmetric adjacency, rows
        # scaled so that smoothed unit-variance noise keeps unit variance.
        a = sp.csr_matrix(adj, dtype=np.float64)
        a = abs(a) + abs(a.T) + sp.identity(n, format="csr")
        p = sp.diags(1.0 / np.asarray(a.sum(axis=1)).ravel()) @ a
        s = (p @ p).tocsr()
        s = sp.diags(1.0 / np.sqrt(np.asarray(s.multiply(s).sum(axis=1)).ravel())) @ s
        self.smooth = s.tocsr()

        def field() -> np.ndarray:
            return self.smooth @ rng.standard_normal(n)

        def squash(x: np.ndarray, low: float, high: float) -> np.ndarray:
            return low + (high - low) / (1 + np.exp(-x))

        self.free_flow = 63 + 4 * field()
        self.morning = squash(1.2 * field() - 0.3, 0.0, 0.65)
        self.evening = squash(1.2 * field() - 0.1, 0.0, 0.7)
        self.weekend = squash(field() - 1.5, 0.0, 0.3)
        self.phi = 0.92  # hourly persistence of the day-to-day variability
        self._z = self.smooth @ rng.standard_normal(n)  # current hourly state
        self.outages = self._outages()

    def _outages(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Whole-sensor outage runs (node, start, stop); node -1 = the whole network."""
        rng, n, t = self.rng, self.n, self.n_steps
        mean_len = min(288.0, max(12.0, t / 8))
        count = rng.poisson(SENSOR_OUTAGE_FRACTION * t * n / mean_len)
        lengths = np.minimum(rng.lognormal(np.log(mean_len) - 0.5, 1.0, count), t).astype(int) + 1
        nodes = rng.integers(0, n, count)
        starts = rng.integers(-lengths + 1, t, count)
        net_count = rng.poisson(max(NETWORK_OUTAGE_FRACTION * t / 36, 0.0))
        net_len = rng.integers(6, 72, net_count)
        net_start = rng.integers(0, max(t, 1), net_count)
        nodes = np.concatenate([nodes, np.full(net_count, -1)])
        starts = np.concatenate([starts, net_start])
        stops = starts + np.concatenate([lengths, net_len])
        return nodes, np.maximum(starts, 0), np.minimum(stops, t)

    def _hourly_noise(self, n_hours: int) -> np.ndarray:
        """AR(1) spatially smoothed noise on the hourly grid, (n_hours + 1, n), continuing state."""
        out = np.empty((n_hours + 1, self.n))
        out[0] = self._z
        innov = np.sqrt(1 - self.phi**2)
        eps = (self.smooth @ self.rng.standard_normal((self.n, n_hours))).T
        for h in range(n_hours):
            out[h + 1] = self.phi * out[h] + innov * eps[h]
        self._z = out[-1].copy()
        return out

    def block(self, t0: int, t1: int) -> np.ndarray:
        """Speeds for steps ``[t0, t1)`` (``t0`` a multiple of an hour); 0.0 marks missing."""
        rng, n = self.rng, self.n
        steps = t1 - t0
        n_hours = -(-steps // STEPS_PER_HOUR)
        z_hours = self._hourly_noise(n_hours)
        frac = (np.arange(steps) % STEPS_PER_HOUR / STEPS_PER_HOUR)[:, None]
        hour_i = np.arange(steps) // STEPS_PER_HOUR
        z = (1 - frac) * z_hours[hour_i] + frac * z_hours[hour_i + 1]

        times = self.start + (t0 + np.arange(steps)) * self.step
        tod = (times - times.astype("datetime64[D]")).astype("timedelta64[s]").astype(float) / 3600
        dow = (times.astype("datetime64[D]").astype(np.int64) + 3) % 7  # 0 = Monday
        weekday = np.where(dow < 5, 1.0, 0.0)
        friday = np.where(dow == 4, 1.15, 1.0)
        weekend = 1.0 - weekday
        g_morning = (weekday * np.exp(-0.5 * ((tod - 8.0) / 1.0) ** 2))[:, None]
        g_evening = (weekday * friday * np.exp(-0.5 * ((tod - 17.5) / 1.3) ** 2))[:, None]
        g_weekend = (weekend * np.exp(-0.5 * ((tod - 14.0) / 2.5) ** 2))[:, None]
        night = (np.exp(-0.5 * ((tod - 3.0) / 2.0) ** 2))[:, None]

        congestion = g_morning * self.morning + g_evening * self.evening
        congestion += g_weekend * self.weekend
        congestion *= np.exp(0.35 * z)
        np.minimum(congestion, 0.85, out=congestion)
        speed = self.free_flow * (1.0 - congestion + 0.03 * night)
        speed -= 2.0 * z
        speed += rng.standard_normal((steps, n), dtype=np.float32)
        np.clip(speed, 3.0, 85.0, out=speed)

        n_drop = rng.binomial(steps * n, DROPOUT_FRACTION)
        speed.reshape(-1)[rng.integers(0, steps * n, n_drop)] = 0.0
        nodes, starts, stops = self.outages
        hit = np.flatnonzero((starts < t1) & (stops > t0))
        for i in hit:
            lo, hi = max(starts[i], t0) - t0, min(stops[i], t1) - t0
            if nodes[i] < 0:
                speed[lo:hi] = 0.0
            else:
                speed[lo:hi, nodes[i]] = 0.0
        return speed


# --------------------------------------------------------------------------------------------
# pandas HDF5 writers
# --------------------------------------------------------------------------------------------


def _string_type(size: int, *, utf8: bool) -> h5py.h5t.TypeStringID:
    """A null-terminated HDF5 string type, as PyTables writes it (UTF-8 text is read as str)."""
    tid = h5py.h5t.C_S1.copy()
    tid.set_size(max(1, size))
    tid.set_strpad(h5py.h5t.STR_NULLTERM)
    tid.set_cset(h5py.h5t.CSET_UTF8 if utf8 else h5py.h5t.CSET_ASCII)
    return tid


def _set_attrs(obj: h5py.Group | h5py.Dataset, attrs: dict[str, object]) -> None:
    """Set attributes the way PyTables does: text as UTF-8, pickles as ASCII, TITLE empty.

    Strings are written with the file type as memory type: h5py's own conversion to a
    null-terminated type would drop the last character.
    """
    for name, value in attrs.items():
        if value is None or isinstance(value, str | bytes):
            raw = b"" if value is None else value.encode() if isinstance(value, str) else value
            tid = _string_type(len(raw), utf8=not isinstance(value, bytes))
            space = h5py.h5s.create(h5py.h5s.NULL if value is None else h5py.h5s.SCALAR)
            aid = h5py.h5a.create(obj.id, name.encode(), tid, space)
            if value is not None:
                aid.write(np.array(raw, dtype=f"S{len(raw)}"), mtype=tid)
        else:
            obj.attrs[name] = value


def _pickled(obj: object) -> bytes:
    # PyTables stores non-scalar attributes as protocol-0 pickles; pandas reads them back.
    return pickle.dumps(obj, protocol=0)


def _array_attrs(**extra: object) -> dict[str, object]:
    return {
        "CLASS": "ARRAY",
        "FLAVOR": "numpy",
        "TITLE": None,
        "VERSION": "2.4",
        **extra,
        "transposed": np.uint8(1),
    }


def _label_dataset(group: h5py.Group, name: str, labels: list[str], kind: str) -> None:
    if kind == "int":
        ds = group.create_dataset(name, data=np.array([int(s) for s in labels], dtype=np.int64))
        _set_attrs(ds, _array_attrs(kind="integer", name=_pickled(None)))
        return
    encoded = np.array([s.encode("utf-8") for s in labels])
    tid = _string_type(encoded.dtype.itemsize, utf8=False)
    space = h5py.h5s.create_simple((len(labels),))
    ds = h5py.Dataset(h5py.h5d.create(group.id, name.encode(), tid, space))
    ds.id.write(h5py.h5s.ALL, h5py.h5s.ALL, encoded, mtype=tid)
    _set_attrs(ds, _array_attrs(kind="string", name=_pickled(None), nan_rep=None))


class _FixedFrameWriter:
    """Writes pandas' "fixed" frame layout with h5py, row block by row block."""

    def __init__(
        self,
        path: Path,
        key: str,
        labels: list[str],
        label_kind: str,
        index_ns: np.ndarray,
        freq: str,
        dtype: str = "float64",
    ) -> None:
        self.file = h5py.File(path, "w", libver="earliest")
        _set_attrs(
            self.file,
            {"CLASS": "GROUP", "PYTABLES_FORMAT_VERSION": "2.1", "TITLE": None, "VERSION": "1.0"},
        )
        group = self.file.create_group(key)
        _set_attrs(
            group,
            {
                "CLASS": "GROUP",
                "TITLE": None,
                "VERSION": "1.0",
                "axis0_variety": "regular",
                "axis1_variety": "regular",
                "block0_items_variety": "regular",
                "encoding": "UTF-8",
                "errors": "strict",
                "nblocks": np.int64(1),
                "ndim": np.int64(2),
                "pandas_type": "frame",
            },
        )
        for name in ("axis0", "block0_items"):
            _label_dataset(group, name, labels, label_kind)
        axis1 = group.create_dataset("axis1", data=index_ns.astype(np.int64))
        _set_attrs(
            axis1,
            _array_attrs(
                freq=_pickled(pd.tseries.frequencies.to_offset(freq)),
                index_class="datetime",
                kind="datetime64",
                name=_pickled(None),
            ),
        )
        self.values = group.create_dataset(
            "block0_values", shape=(len(index_ns), len(labels)), dtype=dtype
        )
        _set_attrs(self.values, _array_attrs())

    def write(self, t0: int, block: np.ndarray, index_ns: np.ndarray) -> None:
        self.values[t0 : t0 + block.shape[0]] = block

    def close(self) -> None:
        self.file.close()


class _TableFrameWriter:
    """Appends blocks with pandas (``format="table"``), as ``df.to_hdf(format="table")`` does."""

    def __init__(self, path: Path, key: str, labels: list[str], label_kind: str) -> None:
        self.key = key
        self.columns = pd.Index([int(s) for s in labels] if label_kind == "int" else labels)
        self.store = pd.HDFStore(path, mode="w")

    def write(self, t0: int, block: np.ndarray, index_ns: np.ndarray) -> None:
        index = pd.DatetimeIndex(index_ns.astype("datetime64[ns]"))
        frame = pd.DataFrame(block, index=index, columns=self.columns)
        self.store.append(self.key, frame, format="table", index=False)

    def close(self) -> None:
        if self.key in self.store:
            self.store.create_table_index(self.key, columns=["index"], optlevel=6, kind="medium")
        self.store.close()


def _generate(
    model: _TrafficModel,
    writer: _FixedFrameWriter | _TableFrameWriter,
    first: int,
    index_ns: np.ndarray,
    *,
    desc: str,
    progress: bool,
) -> int:
    """Write the model's steps ``[first, first + len(index_ns))`` through ``writer`` (closed at
    the end) in blocks; returns the number of missing zeros written."""
    missing = 0
    steps = len(index_ns)
    try:
        with tqdm(
            total=steps, unit="step", desc=desc, disable=not progress, unit_scale=True
        ) as bar:
            for t0 in range(0, steps, BLOCK_STEPS):
                t1 = min(t0 + BLOCK_STEPS, steps)
                block = model.block(first + t0, first + t1)
                missing += int(np.count_nonzero(block == 0))
                writer.write(t0, block, index_ns[t0:t1])
                bar.update(t1 - t0)
    finally:
        writer.close()
    return missing


def adjacency_path_for(dst: str | os.PathLike[str]) -> Path:
    """Where :func:`synth_traffic` writes the graph of ``dst``: ``<stem>_adj_mx.pkl`` beside it."""
    dst = Path(dst)
    return dst.with_name(f"{dst.stem}_adj_mx.pkl")


def synth_traffic(
    dst: str | os.PathLike[str],
    *,
    steps: int,
    nodes: int | None = None,
    graph: str | os.PathLike[str] | None = None,
    seed: int = 0,
    key: str = "df",
    format: str = "fixed",
    labels: str = "str",
    start: str = "2012-03-01",
    freq_minutes: int = 5,
    overwrite: bool = False,
    progress: bool = True,
) -> SynthResult:
    """Generate a METR-LA / PeMS-layout pandas HDF5 traffic file, streamed in time blocks.

    Parameters
    ----------
    dst : path
        Output ``.h5`` file (written to a hidden sibling and renamed at the end).
    steps : int
        Number of time steps (rows).
    nodes : int, optional
        Number of sensors (columns); required without ``graph``, checked against it with one.
    graph : path, optional
        DCRNN adjacency pickle whose sensor ids (column order) and structure are used. Without
        it a random sensor graph is made and written to :func:`adjacency_path_for` ``(dst)``.
    seed : int
        Seed of every random draw: same arguments, same bytes of data.
    key : str
        pandas key (``"df"`` for METR-LA and PeMS, ``"speed"`` for PeMS-BAY).
    format : {"fixed", "table"}
        pandas storage format.
    labels : {"str", "int"}
        Column labels as strings (METR-LA) or integers.
    start : str
        First timestamp.
    freq_minutes : int
        Sampling interval.
    overwrite : bool
        Replace existing output files.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    SynthResult
    """
    dst = Path(dst)
    if format not in FORMATS:
        raise StzarrError(f"--format must be one of {FORMATS}, not {format!r}")
    if labels not in LABEL_KINDS:
        raise StzarrError(f"--labels must be one of {LABEL_KINDS}, not {labels!r}")
    if not key or "/" in key or not key.isidentifier():
        raise StzarrError(f"--key must be a plain identifier such as 'df' or 'speed', not {key!r}")
    if steps < 1:
        raise StzarrError(f"--steps must be positive, got {steps}")
    _check_freq(freq_minutes)
    if not dst.parent.is_dir() or not os.access(dst.parent, os.W_OK):
        raise StzarrError(f"cannot write {dst}: {dst.parent} is not a writable directory")
    rng = np.random.default_rng(seed)
    adj_out: Path | None = None
    if graph is not None:
        sensor_ids, adj = load_adjacency(graph)
        if nodes is not None and nodes != len(sensor_ids):
            raise StzarrError(
                f"--nodes {nodes} disagrees with the graph's {len(sensor_ids)} sensors"
            )
        adj = sp.csr_matrix(adj)
    else:
        if nodes is None or not 1 <= nodes <= MAX_NODES:
            raise StzarrError(f"--nodes must be between 1 and {MAX_NODES} (got {nodes})")
        sensor_ids, adj = random_sensor_graph(nodes, rng)
        adj_out = adjacency_path_for(dst)
    if labels == "int" and not all(s.isdigit() for s in sensor_ids):
        raise StzarrError("--labels int needs numeric sensor ids")
    check_target(dst, overwrite=overwrite, ours=is_hdf5_file, what="an HDF5 file")
    if adj_out is not None:
        check_target(adj_out, overwrite=overwrite, ours=is_pickle_file, what="an adjacency pickle")
    step = np.timedelta64(freq_minutes, "m")
    try:
        t_start = np.datetime64(pd.Timestamp(start).to_datetime64(), "ns")
    except (TypeError, ValueError):
        raise StzarrError(f"--start {start!r} is not a timestamp (e.g. 2012-03-01)") from None
    index_ns = (t_start + np.arange(steps) * step).astype("datetime64[ns]").astype(np.int64)
    model = _TrafficModel(adj, steps, t_start, step, rng)
    with AtomicOutput(dst, overwrite=overwrite, ours=is_hdf5_file, what="an HDF5 file") as out:
        tmp = out.partial
        if format == "fixed":
            writer = _FixedFrameWriter(tmp, key, sensor_ids, labels, index_ns, f"{freq_minutes}min")
        else:
            writer = _TableFrameWriter(tmp, key, sensor_ids, labels)
        missing = _generate(model, writer, 0, index_ns, desc=f"synth {dst.name}", progress=progress)
        if adj_out is not None:
            write_adjacency(adj_out, sensor_ids, adj)
    return SynthResult(
        path=str(dst),
        adjacency=None if adj_out is None else str(adj_out),
        key=key,
        format=format,
        label_kind=labels,
        n_steps=steps,
        n_nodes=len(sensor_ids),
        start=str(pd.Timestamp(t_start)),
        missing_fraction=missing / (steps * len(sensor_ids)),
    )


# --------------------------------------------------------------------------------------------
# LargeST layout
# --------------------------------------------------------------------------------------------

LARGEST_NODES = 8_600
LARGEST_KEY = "t"  # the key LargeST's data/ca/process_ca_his.ipynb writes
META_COLUMNS = ("ID", "Lat", "Lng", "District", "County", "Fwy", "Lane", "Type", "Direction", "ID2")
_DISTRICTS = (3, 4, 5, 6, 7, 8, 10, 11, 12)
_COUNTIES = ("Los Angeles", "Orange", "San Diego", "Alameda", "Santa Clara", "Sacramento")
_FREEWAYS = ("I5", "I405", "I10", "US101", "SR91", "I880", "SR99", "I15")
is_npy_file = has_signature(b"\x93NUMPY")
is_meta_csv = has_signature(b"ID,")


@dataclass(frozen=True)
class LargestResult:
    """What :func:`synth_largest` wrote.

    Attributes
    ----------
    directory : str
        Where the files are.
    his : list of str
        The yearly series files, in time order (``{prefix}_his_raw_{year}.h5``).
    meta, adjacency : str
        The metadata CSV and the dense adjacency ``.npy``.
    n_nodes : int
        Sensors.
    steps : list of int
        Steps per yearly file.
    missing_fraction : float
        Fraction of readings written as 0.0.
    """

    directory: str
    his: list[str]
    meta: str
    adjacency: str
    n_nodes: int
    steps: list[int]
    missing_fraction: float

    def to_dict(self) -> dict:
        """Plain-data view for JSON."""
        return asdict(self)


def write_dense_npy(path: Path, adj: sp.spmatrix, rows_per_block: int = 1024) -> None:
    """Write ``adj`` as a dense float32 ``.npy`` file at ``path`` (a partial the caller renames),
    one row block at a time (never N x N in memory)."""
    n = adj.shape[0]
    csr = sp.csr_matrix(adj, dtype=np.float32)
    with path.open("wb") as fh:
        header = {"descr": "<f4", "fortran_order": False, "shape": (n, n)}
        np.lib.format.write_array_header_1_0(fh, header)
        for r0 in range(0, n, rows_per_block):
            fh.write(csr[r0 : r0 + rows_per_block].toarray().astype("<f4").tobytes())


def _meta_frame(sensor_ids: list[str], rng: np.random.Generator) -> pd.DataFrame:
    n = len(sensor_ids)
    return pd.DataFrame(
        {
            "ID": [int(s) for s in sensor_ids],
            "Lat": np.round(32.5 + 9.5 * rng.random(n), 6),
            "Lng": np.round(-124.2 + 10.1 * rng.random(n), 6),
            "District": rng.choice(_DISTRICTS, n),
            "County": rng.choice(_COUNTIES, n),
            "Fwy": rng.choice(_FREEWAYS, n),
            "Lane": rng.integers(1, 9, n),
            "Type": "Mainline",
            "Direction": rng.choice(list("NSEW"), n),
            "ID2": np.arange(n),
        },
        columns=list(META_COLUMNS),
    )


def _check_freq(freq_minutes: int) -> None:
    if isinstance(freq_minutes, bool) or not isinstance(freq_minutes, int) or freq_minutes < 1:
        raise StzarrError(
            f"--freq-minutes must be a positive number of minutes, got {freq_minutes}"
        )


def synth_largest(
    directory: str | os.PathLike[str],
    *,
    years: list[int],
    nodes: int = LARGEST_NODES,
    prefix: str = "ca",
    seed: int = 0,
    dtype: str = "float64",
    freq_minutes: int = 5,
    overwrite: bool = False,
    progress: bool = True,
) -> LargestResult:
    """Generate a LargeST-layout dataset: yearly pandas HDF5 files, a meta CSV, a dense ``.npy``.

    Layout (from LargeST's ``data/`` preparation code): ``{prefix}_his_raw_{year}.h5`` with one
    DataFrame (key ``t``, sensor-id columns as strings) per year, ``{prefix}_meta.csv``
    (columns ``ID, Lat, Lng, District, County, Fwy, Lane, Type, Direction, ID2``; row order =
    adjacency order) and ``{prefix}_rn_adj.npy`` (dense float32 N x N). The years follow each
    other without a gap (one traffic model runs across them).

    Parameters
    ----------
    directory : path
        An existing, writable directory.
    years : list of int
        Consecutive years, e.g. ``[2019, 2020]``.
    nodes : int
        Sensors (LargeST CA: 8,600).
    prefix : str
        File-name prefix (``ca``, ``gla``, ``gba``, ``sd``).
    seed : int
        Seed of every random draw.
    dtype : {"float64", "float32"}
        Stored value type.
    freq_minutes : int
        Sampling interval (LargeST's raw files: 5; its benchmark data: 15, 35,040 steps a
        year).
    overwrite : bool
        Replace existing files.
    progress : bool
        Show tqdm bars.

    Returns
    -------
    LargestResult
    """
    directory = Path(directory)
    if not directory.is_dir() or not os.access(directory, os.W_OK):
        raise StzarrError(f"cannot write to {directory}: not a writable directory")
    if not years or any(b != a + 1 for a, b in itertools.pairwise(years)):
        raise StzarrError(f"--years must be consecutive years, got {years}")
    if not 2 <= nodes <= MAX_NODES:
        raise StzarrError(f"--nodes must be between 2 and {MAX_NODES} (got {nodes})")
    if dtype not in ("float64", "float32"):
        raise StzarrError(f"--dtype must be float64 or float32, not {dtype!r}")
    _check_freq(freq_minutes)
    if (24 * 60) % freq_minutes:
        raise StzarrError(
            f"--freq-minutes must divide a day for yearly files that follow each other, "
            f"got {freq_minutes}"
        )
    his = [directory / f"{prefix}_his_raw_{year}.h5" for year in years]
    meta_path = directory / f"{prefix}_meta.csv"
    adj_path = directory / f"{prefix}_rn_adj.npy"
    for path in his:
        check_target(path, overwrite=overwrite, ours=is_hdf5_file, what="an HDF5 file")
    check_target(meta_path, overwrite=overwrite, ours=is_meta_csv, what="a LargeST meta CSV")
    check_target(adj_path, overwrite=overwrite, ours=is_npy_file, what="a NumPy file")
    rng = np.random.default_rng(seed)
    sensor_ids, adj = random_sensor_graph(nodes, rng)
    step = np.timedelta64(freq_minutes, "m")
    bounds = [np.datetime64(f"{year}-01-01T00:00", "ns") for year in (*years, years[-1] + 1)]
    counts = [int((b - a) // step) for a, b in itertools.pairwise(bounds)]
    model = _TrafficModel(adj, sum(counts), bounds[0], step, rng)
    missing, first = 0, 0
    # every file is written to its partial first and all are renamed together at the end, so an
    # interruption leaves none of them (and a committed command is not interrupted for long)
    with contextlib.ExitStack() as outputs:

        def partial(path: Path, ours: Callable[[Path], bool], what: str) -> Path:
            output = AtomicOutput(path, overwrite=overwrite, ours=ours, what=what)
            return outputs.enter_context(output).partial

        write_dense_npy(partial(adj_path, is_npy_file, "a NumPy file"), adj)
        meta = partial(meta_path, is_meta_csv, "a LargeST meta CSV")
        _meta_frame(sensor_ids, rng).to_csv(meta, index=False)
        for path, start, n_steps in zip(his, bounds, counts, strict=False):
            index_ns = (start + np.arange(n_steps) * step).astype(np.int64)
            writer = _FixedFrameWriter(
                partial(path, is_hdf5_file, "an HDF5 file"),
                LARGEST_KEY,
                sensor_ids,
                "str",
                index_ns,
                f"{freq_minutes}min",
                dtype=dtype,
            )
            missing += _generate(
                model, writer, first, index_ns, desc=f"synth {path.name}", progress=progress
            )
            first += n_steps
    return LargestResult(
        directory=str(directory),
        his=[str(p) for p in his],
        meta=str(meta_path),
        adjacency=str(adj_path),
        n_nodes=nodes,
        steps=counts,
        missing_fraction=missing / (sum(counts) * nodes),
    )
