"""PyTorch Geometric Temporal JSON datasets with a static graph.

Recognised layouts (by their keys):

``chickenpox``
    ``{"edges": [[i, j], ...], "node_ids": {name: i}, "FX": [[N floats] x T]}``; weekly county
    case counts, already standardised by the publisher; unweighted edges (weight 1).
``pedalme``
    ``{"edges": [[i, j], ...], "weights": [...], "X": [[N floats] x T]}``; weekly delivery counts.
``node-link``
    networkx node-link JSON (Montevideo bus): ``nodes[i] = {"id", "y": [T], "X": {name: [T]}}``,
    ``links[j] = {"source", "target", "weight"}``; hourly passenger inflow.

These files carry no timestamps; a regular index is synthesised (recorded in the attributes as
``time_synthesised``). Zero is a valid reading in all of them, so ``missing_value`` is ``"nan"``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stzarr.converters.adjacency import check_graph
from stzarr.converters.result import ConversionResult, check_destination, data_warnings
from stzarr.converters.streaming import sha256_file, stream_into
from stzarr.converters.timeaxis import check_time_index
from stzarr.errors import SourceFormatError
from stzarr.store.format import StoreWriter

FAMILY = "pgt-json"


@dataclass(frozen=True)
class _Calendar:
    start: str
    interval: np.timedelta64
    note: str


CALENDARS = {
    "chickenpox": _Calendar(
        "2005-01-03", np.timedelta64(7, "D"), "weekly from Monday 2005-01-03 (the series' start)"
    ),
    "pedalme": _Calendar(
        "2020-01-06", np.timedelta64(7, "D"), "weekly; the source has no dates, start is nominal"
    ),
    "node-link": _Calendar(
        "2020-10-01", np.timedelta64(1, "h"), "hourly; the source has no dates, start is nominal"
    ),
}


@dataclass(frozen=True)
class _Parsed:
    layout: str
    data: np.ndarray  # (t, n, f) float64
    node_ids: list[str]
    feature_names: list[str]
    edge_index: np.ndarray
    edge_weight: np.ndarray
    notes: dict


def _edges(pairs: object, n_node: int, where: str) -> np.ndarray:
    try:
        edges = np.asarray(pairs, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        edges = np.zeros((1, 0))  # ragged or not integers: reported below
    if edges.size == 0 and isinstance(pairs, list) and not pairs:
        return np.zeros((2, 0), dtype=np.int64)
    if edges.ndim != 2 or edges.shape[1] != 2:
        raise SourceFormatError(f"{where}: 'edges' must be a list of [source, target] pairs")
    if edges.min() < 0 or edges.max() >= n_node:
        raise SourceFormatError(f"{where}: an edge refers to a node outside 0..{n_node - 1}")
    return edges.T.copy()


def _matrix(rows: object, key: str, where: str) -> np.ndarray:
    try:
        values = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise SourceFormatError(f"{where}: '{key}' is not a rectangular numeric table") from None
    if values.ndim != 2 or 0 in values.shape:
        raise SourceFormatError(f"{where}: '{key}' must be a non-empty [time][node] table")
    return values


def _parse(obj: object, where: str) -> _Parsed:
    if not isinstance(obj, dict):
        raise SourceFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    keys = set(obj)
    if {"FX", "edges", "node_ids"} <= keys:
        fx = _matrix(obj["FX"], "FX", where)
        names = sorted(obj["node_ids"], key=lambda name: obj["node_ids"][name])
        if sorted(obj["node_ids"].values()) != list(range(fx.shape[1])):
            raise SourceFormatError(f"{where}: node_ids do not number the {fx.shape[1]} columns")
        edges = _edges(obj["edges"], fx.shape[1], where)
        return _Parsed(
            "chickenpox",
            fx[:, :, None],
            names,
            ["cases"],
            edges,
            np.ones(edges.shape[1]),
            {"values": "standardised by the publisher"},
        )
    if {"X", "edges", "weights"} <= keys:
        x = _matrix(obj["X"], "X", where)
        edges = _edges(obj["edges"], x.shape[1], where)
        try:
            weights = np.asarray(obj["weights"], dtype=np.float64)
        except (TypeError, ValueError):
            raise SourceFormatError(f"{where}: 'weights' must be a list of numbers") from None
        if weights.shape != (edges.shape[1],):
            raise SourceFormatError(f"{where}: {weights.size} weights for {edges.shape[1]} edges")
        return _Parsed(
            "pedalme",
            x[:, :, None],
            [str(i) for i in range(x.shape[1])],
            ["deliveries"],
            edges,
            weights,
            {},
        )
    if {"nodes", "links"} <= keys:
        return _parse_node_link(obj, where)
    if "edge_mapping" in keys:
        raise SourceFormatError(
            f"{where}: dynamic graphs (a graph per time step, as in england_covid) are not "
            "supported; stores hold one static graph"
        )
    raise SourceFormatError(
        f"{where}: unrecognised JSON layout (keys {sorted(keys)[:6]}); expected chickenpox, "
        "pedalme or networkx node-link with a static graph"
    )


def _parse_node_link(obj: dict, where: str) -> _Parsed:
    nodes = obj["nodes"]
    if not nodes:
        raise SourceFormatError(f"{where}: no nodes")
    try:
        ids = [str(node["id"]) for node in nodes]
        feature_names = list(nodes[0]["X"])
        columns = [[node["X"][name] for name in feature_names] for node in nodes]
        data = np.asarray(columns, dtype=np.float64)  # (n, f, t)
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceFormatError(
            f"{where}: node-link nodes need 'id' and equal-length numeric 'X' series ({exc})"
        ) from None
    if data.ndim != 3 or 0 in data.shape:
        raise SourceFormatError(f"{where}: node 'X' series are empty or of unequal lengths")
    position = {node_id: i for i, node_id in enumerate(ids)}
    if len(position) != len(ids):
        raise SourceFormatError(f"{where}: duplicate node ids")
    try:
        src = [position[str(link["source"])] for link in obj["links"]]
        dst = [position[str(link["target"])] for link in obj["links"]]
        weights = [float(link.get("weight", 1.0)) for link in obj["links"]]
    except KeyError as exc:
        raise SourceFormatError(f"{where}: a link refers to unknown node {exc}") from None
    except (TypeError, ValueError):
        raise SourceFormatError(f"{where}: a link weight is not a number") from None
    notes = {"target_variable": "y"} if all("y" in node for node in nodes) else {}
    return _Parsed(
        "node-link",
        data.transpose(2, 0, 1),
        ids,
        feature_names,
        np.array([src, dst], dtype=np.int64).reshape(2, -1),
        np.asarray(weights),
        notes,
    )


def convert_pgt_json(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    chunk_time: int | None = None,
    shard_time: int | None = None,
    overwrite: bool = False,
    checksum: bool = True,
    progress: bool = True,
) -> ConversionResult:
    """Convert a PGT JSON dataset (chickenpox, PedalMe, Montevideo bus) into a store.

    Parameters
    ----------
    src : path
        The JSON file (small: read whole).
    dst : path
        Store to create.
    chunk_time, shard_time : int, optional
        Store chunking along time.
    overwrite : bool
        Replace an existing store.
    checksum : bool
        Record the source's SHA-256.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    ConversionResult
    """
    src, dst = Path(src), Path(dst)
    check_destination(dst, overwrite)
    if not src.is_file():
        raise SourceFormatError(f"{src} does not exist")
    try:
        obj = json.loads(src.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceFormatError(f"{src} is not valid JSON ({exc})") from None
    parsed = _parse(obj, str(src))
    del obj
    calendar = CALENDARS[parsed.layout]
    n_time = parsed.data.shape[0]
    time = np.datetime64(calendar.start, "ns") + np.arange(n_time) * calendar.interval
    axis = check_time_index(time.astype(np.int64), source=str(src), allow_gaps=False)
    order = np.lexsort((parsed.edge_index[1], parsed.edge_index[0]))
    edge_index = parsed.edge_index[:, order]
    edge_weight = parsed.edge_weight[order]
    graph_notes = check_graph(edge_index, edge_weight, parsed.node_ids, source=str(src))
    attrs = {
        "missing_value": "nan",
        "sampling_interval_s": axis.interval_s,
        "time_regular": True,
        "irregular_steps": 0,
        "time_synthesised": True,
        "time_note": calendar.note,
        "source": {
            "file": src.name,
            "sha256": sha256_file(src) if checksum else None,
            "key": None,
            "format": f"pgt-json-{parsed.layout}",
            "family": FAMILY,
            "size_bytes": src.stat().st_size,
        },
        "graph_source": {
            "file": src.name,
            "format": f"pgt-json-{parsed.layout}",
            "self_loops": int(np.count_nonzero(edge_index[0] == edge_index[1])),
        },
        **parsed.notes,
    }
    with StoreWriter(
        dst,
        time=time,
        node_ids=parsed.node_ids,
        feature_names=parsed.feature_names,
        edge_index=edge_index,
        edge_weight=edge_weight,
        attrs=attrs,
        chunk_time=chunk_time,
        shard_time=shard_time,
        overwrite=overwrite,
    ) as writer:
        counts = stream_into(
            writer,
            lambda t0, t1: parsed.data[t0:t1],
            missing_value="nan",
            desc=f"convert {src.name}",
            progress=progress,
        )
        writer.update_attrs({"missing": counts.to_dict()})
    return ConversionResult(
        path=str(dst),
        family=FAMILY,
        shape=(n_time, len(parsed.node_ids), len(parsed.feature_names)),
        n_edges=int(edge_index.shape[1]),
        missing=counts.to_dict(),
        time=axis.to_dict(),
        warnings=data_warnings(counts.to_dict(), axis.to_dict()) + graph_notes,
    )
