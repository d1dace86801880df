"""Convert wide time-series sources (pandas HDF5, wide CSV, Parquet; one file or several) and an
optional graph source into a store.

The files are concatenated along time (:class:`~stzarr.converters.concat.ConcatSeries`) and
streamed into a :class:`stzarr.StoreWriter` in time blocks, so memory is bounded by a block
whatever the total size. With a graph, the store's node order is the graph's; without one, the
first file's. Every file's SHA-256 is recorded (``sources``), computed on a thread behind the
reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from stzarr.converters.adjacency import adjacency_to_coo, check_graph
from stzarr.converters.concat import ConcatSeries, SeriesReader, compare_ids, open_all
from stzarr.converters.graphs import GraphSource, load_graph
from stzarr.converters.result import (
    ConversionResult,
    check_destination,
    data_warnings,
    source_paths,
)
from stzarr.converters.streaming import FileHasher, stream_into
from stzarr.errors import SourceFormatError
from stzarr.store.format import MISSING_CONVENTIONS, StoreWriter

DEFAULT_FEATURE = "speed"


def default_missing_value(readers: Sequence[SeriesReader]) -> str:
    """``"zero"`` for pandas HDF5 traffic files (0.0 marks a missing reading), else ``"nan"``."""
    return "zero" if family_of(readers[0]) == "pandas-hdf5" else "nan"


def family_of(reader: SeriesReader) -> str:
    """Registry name of the family a reader belongs to."""
    return "pandas-hdf5" if reader.fmt.startswith("pandas-") else reader.fmt


@contextmanager
def source_digests(
    readers: Sequence[SeriesReader], checksum: bool
) -> Iterator[Callable[[], list[str | None]]]:
    """Hash every file on a thread kept behind its reader (where the reader reports how far it
    has read); yields a callable that waits for the digests (None each without ``checksum``).
    The threads are stopped if the block fails."""
    hashers = [FileHasher(r.path, lambda r=r: r.read_front) for r in readers] if checksum else []
    try:
        yield lambda: [h.result() for h in hashers] if checksum else [None] * len(readers)
    except BaseException:
        for hasher in hashers:
            hasher.cancel()
        raise


def graph_edges(graph: GraphSource | None, node_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The graph as COO over ``node_ids`` (an empty graph without a source)."""
    if graph is None:
        return np.zeros((2, 0), dtype=np.int64), np.zeros(0, dtype=np.float32)
    ids = graph.ids if graph.ids is not None else node_ids
    return adjacency_to_coo(graph.matrix, ids, node_ids, source=graph.attrs["file"])


def convert_series(
    src: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    dst: str | os.PathLike[str],
    *,
    adjacency: str | os.PathLike[str] | None = None,
    graph_ids: str | os.PathLike[str] | None = None,
    graph_threshold: float | None = None,
    key: str | None = None,
    time_column: str | None = None,
    start: str | None = None,
    freq: str | None = None,
    missing_value: str | None = None,
    feature: str | None = None,
    chunk_time: int | None = None,
    shard_time: int | None = None,
    overwrite: bool = False,
    allow_gaps: bool = False,
    checksum: bool = True,
    progress: bool = True,
) -> ConversionResult:
    """Convert one or several wide time-series files (and a graph) into a store.

    Parameters
    ----------
    src : path or sequence of paths
        Source files in time order (pandas HDF5, wide CSV, Parquet; mixed is fine).
    dst : path
        Store to create (written to a hidden sibling, renamed at the end).
    adjacency : path, optional
        Graph source: DCRNN ``.pkl``, dense ``.npy``/``.npz`` (with ``graph_ids``) or distance
        ``.csv`` (see :mod:`stzarr.converters.graphs`). Without it the store has no edges.
    graph_ids : path, optional
        Sensor ids of a dense adjacency or distance CSV (metadata CSV or id list).
    graph_threshold : float, optional
        Gaussian-kernel threshold of a distance CSV (default 0.1).
    key : str, optional
        pandas key of HDF5 files; default: the only DataFrame in each file.
    time_column : str, optional
        Time column of CSV/Parquet files (default: detected, see :mod:`.wide`).
    start, freq : str, optional
        Time of files without a time column (``2012-03-01``, ``5min``).
    missing_value : {"zero", "nan"}, optional
        Store convention (default: ``"zero"`` for HDF5 traffic files, ``"nan"`` otherwise).
    feature : str, optional
        Name of the single feature (default ``"speed"``).
    chunk_time, shard_time : int, optional
        Store chunking along time.
    overwrite : bool
        Replace an existing store.
    allow_gaps : bool
        Accept irregular spacing and gaps between files (recorded in the attributes).
    checksum : bool
        Record every file's SHA-256.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    ConversionResult
    """
    srcs = source_paths(src)
    dst = Path(dst)
    check_destination(dst, overwrite)
    if missing_value is not None and missing_value not in MISSING_CONVENTIONS:
        raise SourceFormatError(f"--missing-value must be one of {MISSING_CONVENTIONS}")
    readers = open_all(srcs, key=key, time_column=time_column)
    try:
        first = readers[0].layout.columns
        graph = None
        if adjacency is not None:
            graph = load_graph(
                adjacency, ids_file=graph_ids, threshold=graph_threshold, data_ids=first
            )
        elif graph_ids is not None or graph_threshold is not None:
            raise SourceFormatError("--graph-ids and --graph-threshold need --adjacency")
        node_ids = first
        if graph is not None and graph.ids is not None:
            compare_ids(first, graph.ids, readers[0].path.name, graph.attrs["file"])
            node_ids = graph.ids
        series = ConcatSeries(
            readers, node_ids=node_ids, start=start, freq=freq, allow_gaps=allow_gaps
        )
        edge_index, edge_weight = graph_edges(graph, node_ids)
        graph_notes = (
            []  # no --adjacency: a store without a graph, as asked
            if graph is None
            else check_graph(edge_index, edge_weight, node_ids, source=graph.attrs["file"])
        )
        convention = missing_value or default_missing_value(readers)
        axis = series.axis
        attrs = {
            "missing_value": convention,
            "sampling_interval_s": axis.interval_s,
            "time_regular": axis.regular,
            "irregular_steps": axis.irregular_steps,
            "time_synthesised": series.time_synthesised,
            "column_label_kind": readers[0].layout.label_kind,
            "graph_source": None
            if graph is None
            else {
                **graph.attrs,
                "self_loops": int(np.count_nonzero(edge_index[0] == edge_index[1])),
            },
        }
        with (
            source_digests(readers, checksum) as digests,
            StoreWriter(
                dst,
                time=series.index_ns.astype("datetime64[ns]"),
                node_ids=node_ids,
                feature_names=[feature or DEFAULT_FEATURE],
                edge_index=edge_index,
                edge_weight=edge_weight,
                attrs=attrs,
                chunk_time=chunk_time,
                shard_time=shard_time,
                overwrite=overwrite,
            ) as writer,
        ):
            counts = stream_into(
                writer,
                series.read,
                missing_value=convention,
                desc=f"convert {files_label(readers)}",
                progress=progress,
            )
            writer.update_attrs(
                {"missing": counts.to_dict(), **source_attrs(series.provenance(digests()))}
            )
    finally:
        for reader in readers:
            reader.close()
    return ConversionResult(
        path=str(dst),
        family=family_of(readers[0]),
        shape=(series.n_steps, len(node_ids), 1),
        n_edges=int(edge_index.shape[1]),
        missing=counts.to_dict(),
        time=axis.to_dict(),
        warnings=data_warnings(counts.to_dict(), axis.to_dict()) + graph_notes,
    )


def files_label(readers: Sequence[SeriesReader]) -> str:
    """``first.h5`` or ``first.h5 +N`` for progress bars."""
    more = len(readers) - 1
    return readers[0].path.name + (f" +{more}" if more else "")


def source_attrs(sources: list[dict]) -> dict:
    """The store's provenance attributes: ``sources`` (every file, in time order) and
    ``source`` (the first file, with the number of files)."""
    return {"source": {**sources[0], "files": len(sources)}, "sources": sources}
