"""DCRNN adjacency pickles: load them safely and join them to a source's node order as COO."""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from stzarr.errors import SourceFormatError

ROW_BLOCK = 1024  # rows of a dense adj_mx scanned at once (bounds the temporary mask)


def load_adjacency(
    path: str | os.PathLike[str],
) -> tuple[list[str], np.ndarray | sp.spmatrix]:
    """Read a DCRNN adjacency pickle ``[sensor_ids, sensor_id_to_ind, adj_mx]``.

    Only plain Python containers, NumPy arrays and SciPy sparse matrices are unpickled (a
    restricted unpickler), so a hostile pickle cannot run code.

    Returns
    -------
    sensor_ids : list of str
        In the pickle's index order (``sensor_id_to_ind`` is checked against it).
    adj_mx : numpy.ndarray or scipy.sparse matrix
        (N, N) weights; ``adj_mx[i, j]`` is the weight of the edge i -> j.

    Raises
    ------
    SourceFormatError
        Missing or unreadable file, or a layout other than DCRNN's.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceFormatError(f"adjacency pickle {path} does not exist")
    try:
        with path.open("rb") as fh:
            obj = _SafeUnpickler(fh, encoding="latin1").load()
    except SourceFormatError:
        raise
    except Exception as exc:
        raise SourceFormatError(
            f"{path} is not a readable adjacency pickle ({exc.__class__.__name__}: {exc})"
        ) from None
    if not isinstance(obj, list | tuple) or len(obj) != 3:
        raise SourceFormatError(
            f"{path}: expected DCRNN's [sensor_ids, sensor_id_to_ind, adj_mx], got "
            f"{type(obj).__name__}"
        )
    ids_raw, id_to_ind, adj = obj
    ids = [_as_text(s) for s in ids_raw]
    if not isinstance(id_to_ind, dict):
        raise SourceFormatError(f"{path}: sensor_id_to_ind is not a dict")
    mapping = {_as_text(k): int(v) for k, v in id_to_ind.items()}
    if len(set(ids)) != len(ids):
        raise SourceFormatError(f"{path}: duplicate sensor ids in the adjacency pickle")
    if mapping != {s: i for i, s in enumerate(ids)}:
        raise SourceFormatError(f"{path}: sensor_id_to_ind disagrees with the sensor_ids order")
    if not (sp.issparse(adj) or isinstance(adj, np.ndarray)) or adj.shape != (len(ids), len(ids)):
        shape = getattr(adj, "shape", None)
        raise SourceFormatError(
            f"{path}: adj_mx must be a ({len(ids)}, {len(ids)}) matrix, got {shape}"
        )
    return ids, adj


def _as_text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles only containers, NumPy arrays/scalars and SciPy sparse matrices."""

    _ALLOWED = frozenset(
        {
            ("builtins", name)
            for name in (
                "list",
                "dict",
                "tuple",
                "set",
                "frozenset",
                "int",
                "float",
                "str",
                "bytes",
                "bytearray",
                "complex",
                "bool",
                "slice",
                "object",
            )
        }
        | {
            (module, name)
            for module in ("numpy.core.multiarray", "numpy._core.multiarray")
            for name in ("_reconstruct", "scalar")
        }
        | {(module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")}
        | {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("copyreg", "_reconstructor"),
            ("_codecs", "encode"),
            ("collections", "OrderedDict"),
        }
    )

    def find_class(self, module: str, name: str) -> object:
        sparse_class = module.startswith("scipy.sparse") and name.endswith(("_matrix", "_array"))
        if (module, name) in self._ALLOWED or sparse_class:
            return super().find_class(module, name)
        raise SourceFormatError(f"refusing to unpickle {module}.{name} from an adjacency pickle")


def adjacency_to_coo(
    adj: np.ndarray | sp.spmatrix,
    adj_ids: Sequence[str],
    node_ids: Sequence[str],
    *,
    source: str = "adjacency",
) -> tuple[np.ndarray, np.ndarray]:
    """The non-zeros of ``adj`` as COO over the ``node_ids`` order (self-loops kept as given).

    Parameters
    ----------
    adj : (N, N) array or sparse matrix
        Weights in ``adj_ids`` order; ``adj[i, j]`` is the edge i -> j.
    adj_ids : sequence of str
        Sensor ids of the adjacency, in its order.
    node_ids : sequence of str
        Sensor ids of the data (the store's node order).
    source : str
        Name used in error messages.

    Returns
    -------
    edge_index : numpy.ndarray
        int64 (2, E), sorted by (source node, target node) in the data's order.
    edge_weight : numpy.ndarray
        float32 (E,).

    Raises
    ------
    SourceFormatError
        When the two id sets differ (the message names how many and a few of each).
    """
    node_ids = [str(s) for s in node_ids]
    position = {s: i for i, s in enumerate(adj_ids)}
    missing = [s for s in node_ids if s not in position]
    extra = sorted(set(adj_ids) - set(node_ids))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} data sensor(s) not in {source} (e.g. {missing[:3]})")
        if extra:
            parts.append(f"{len(extra)} {source} sensor(s) not in the data (e.g. {extra[:3]})")
        raise SourceFormatError("sensor ids differ: " + "; ".join(parts))
    # new_of_old[k] = data position of the adjacency's k-th sensor
    new_of_old = np.empty(len(adj_ids), dtype=np.int64)
    new_of_old[[position[s] for s in node_ids]] = np.arange(len(node_ids))
    if sp.issparse(adj):
        coo = sp.coo_matrix(adj)
        keep = coo.data != 0
        rows, cols, weights = coo.row[keep], coo.col[keep], coo.data[keep]
    else:
        parts_r, parts_c, parts_w = [], [], []
        for r0 in range(0, adj.shape[0], ROW_BLOCK):
            block = adj[r0 : r0 + ROW_BLOCK]
            r, c = np.nonzero(block)
            parts_r.append(r + r0)
            parts_c.append(c)
            parts_w.append(block[r, c])
        rows, cols = np.concatenate(parts_r), np.concatenate(parts_c)
        weights = np.concatenate(parts_w)
    src = new_of_old[rows]
    dst = new_of_old[cols]
    order = np.lexsort((dst, src))
    edge_index = np.stack([src[order], dst[order]]).astype(np.int64)
    return edge_index, np.asarray(weights[order], dtype=np.float32)


def check_graph(
    edge_index: np.ndarray,
    edge_weight: np.ndarray,
    node_ids: Sequence[str],
    *,
    source: str,
) -> list[str]:
    """Refuse edge weights a model cannot use; note graphs without structure.

    Parameters
    ----------
    edge_index : (2, E) int array
        COO indices into ``node_ids``.
    edge_weight : (E,) array
        Weights as they will be stored (float32: values beyond its range become infinite).
    node_ids : sequence of str
        The store's node order (names the offending edge).
    source : str
        Where the graph came from, for messages.

    Returns
    -------
    list of str
        Warnings: an empty graph, or one of self-loops only.

    Raises
    ------
    SourceFormatError
        A weight is NaN, infinite or negative (the message names the first such edge).
    """
    weight = np.asarray(edge_weight, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(weight) | (weight < 0))
    if bad.size:
        e = int(bad[0])
        i, j = (int(v) for v in edge_index[:, e])
        raise SourceFormatError(
            f"{source}: edge {node_ids[i]} -> {node_ids[j]} has weight {weight[e]}; weights must "
            f"be finite and non-negative ({bad.size} such edge(s))"
        )
    n_edge = int(weight.size)
    if n_edge == 0:
        return [f"{source}: the graph has no edges; graph models will see isolated nodes"]
    if np.array_equal(edge_index[0], edge_index[1]):
        return [f"{source}: all {n_edge} edges are self-loops; the graph carries no structure"]
    return []
