"""``stzarr verify``: check a store against its contract and, with ``full``, every chunk.

Quick checks read only metadata, coordinates and the graph: format version, chunk checksums
present, every recorded chunk file on disk, monotone time, unique node ids and feature names,
edge indices in range and finite, non-negative weights, and partial outputs left next to the
store by killed runs. ``full`` also reads every chunk of every array through the checked store
(:mod:`stzarr.store.chunks`: presence and CRC-32C; decoding for stores without checksums),
compares every chunk file with the manifest's whole-file CRC-32C and the reading counts
recorded at conversion with the ones found. ``data`` is read once: stzarr's reader
(:mod:`stzarr.store.reader`) hands each file it reads whole to the manifest check before its
chunks are checked and decoded on the I/O threads.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from tqdm.auto import tqdm

import stzarr.store.manifest as manifest
from stzarr.errors import StoreDamagedError, StoreFormatError, StzarrError
from stzarr.store.atomic import stale_partials
from stzarr.store.chunks import INTEGRITY_KEY, array_metadata
from stzarr.store.format import (
    FORMAT_KEY,
    FORMAT_VERSION,
    is_local,
    open_group_checked,
    url_fs,
)
from stzarr.store.io_config import active_pipeline
from stzarr.store.reader import (
    READ_BLOCK_BYTES,
    DataReader,
    block_steps,
    layout_of,
    read_threads,
)

REQUIRED = ("data", "time", "node", "feature", "edge_index", "edge_weight")
SHOWN = 5  # names listed per problem


@dataclass(frozen=True)
class Finding:
    """One check's outcome: ``status`` is ``"ok"``, ``"warn"`` or ``"fail"``."""

    check: str
    status: str
    detail: str


@dataclass(frozen=True)
class VerifyReport:
    """Every finding about one store; :attr:`ok` when none failed."""

    path: str
    full: bool
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        """True when no check failed (warnings allowed)."""
        return all(f.status != "fail" for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "path": self.path,
            "full": self.full,
            "ok": self.ok,
            "findings": [asdict(f) for f in self.findings],
        }


def _names(items: list[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def _chunk_files(path: str, name: str) -> set[str]:
    """Chunk keys (``c/...``) of array ``name`` present in the store."""
    if is_local(path):
        base = Path(path.removeprefix("file://")) / name / "c"
        found = set()
        for root, _, files in os.walk(base):
            rel = os.path.relpath(root, base.parent)
            found.update(f"{rel}/{f}".replace(os.sep, "/") for f in files)
        return found
    fs, root = url_fs(path)
    prefix = f"{root.rstrip('/')}/{name}/"
    return {p.removeprefix(prefix) for p in fs.find(f"{prefix}c")}


def _grid(meta: dict[str, Any]) -> list[tuple[int, ...]]:
    shape = meta["shape"]
    grid = meta["chunk_grid"]["configuration"]["chunk_shape"]
    counts = [math.ceil(s / g) for s, g in zip(shape, grid, strict=True)]
    return list(product(*(range(c) for c in counts)))


def _check_files(path: str, attrs: dict, meta: dict[str, dict]) -> list[Finding]:
    recorded = (attrs.get(INTEGRITY_KEY) or {}).get("chunk_files", {})
    out = []
    for name in sorted(meta):
        expected = {"c/" + "/".join(map(str, coords)) for coords in _grid(meta[name])}
        missing = sorted(expected - _chunk_files(path, name))
        if name in recorded and recorded[name] != len(expected):
            out.append(
                Finding(
                    "chunk files",
                    "fail",
                    f"array '{name}': {recorded[name]} chunk files recorded, its grid has "
                    f"{len(expected)}",
                )
            )
        if missing and name in recorded:
            out.append(
                Finding("chunk files", "fail", f"array '{name}' misses chunk {_names(missing)}")
            )
        elif missing:
            out.append(
                Finding(
                    "chunk files",
                    "warn",
                    f"array '{name}' has no file for chunk {_names(missing)} (read as fill "
                    "value: this store does not record its chunks)",
                )
            )
    if not out:
        total = sum(len(_grid(m)) for m in meta.values())
        out.append(Finding("chunk files", "ok", f"all {total} chunk files present"))
    return out


def _check_manifest(root: Path) -> tuple[list[Finding], dict[str, Any] | None]:
    """The metadata documents against the manifest, and the chunk files' sizes (their contents
    are compared by :func:`_check_contents` under ``full``); returns the findings and the
    manifest."""
    try:
        recorded = manifest.read(root)
    except StzarrError as exc:
        return [Finding("manifest", "fail", str(exc))], None
    if recorded is None:
        return [
            Finding(
                "manifest",
                "warn",
                "no manifest (written by an older stzarr): a chunk file swapped or copied from "
                "another store cannot be detected",
            )
        ], None
    out = []
    problems = manifest.check_metadata(root, recorded)
    if problems:
        out.append(Finding("metadata", "fail", f"{len(problems)} damaged: {_names(problems)}"))
    else:
        out.append(Finding("metadata", "ok", f"{len(recorded['metadata'])} documents as recorded"))
    out.append(_manifest_finding(recorded, manifest.check_chunks(root, recorded, contents=False)))
    return out, recorded


def _manifest_finding(recorded: dict[str, Any], problems: list[str], how: str = "sizes") -> Finding:
    if problems:
        return Finding("manifest", "fail", f"{len(problems)} chunk file(s): {_names(problems)}")
    return Finding("manifest", "ok", f"{len(recorded['chunks'])} chunk files, {how} as recorded")


def _check_contents(root: Path, recorded: dict[str, Any], data_read: bool) -> list[str]:
    """Whole-file CRC-32C of the chunk files against the manifest, but those of ``data`` when
    :func:`_read_data` binds them on the bytes it reads anyway (``data_read``)."""
    keys = [k for k in recorded["chunks"] if not (data_read and k.startswith("data/"))]
    return manifest.check_chunks(root, recorded, contents=True, keys=keys)


def _read(group: zarr.Group, name: str) -> np.ndarray:
    return np.asarray(group[name][...])


def _check_coordinates(group: zarr.Group) -> list[Finding]:
    out = []
    time = _read(group, "time")
    steps = np.diff(time)
    bad = np.flatnonzero(steps <= 0)
    if time.size == 0:
        out.append(Finding("time", "fail", "the time axis is empty"))
    elif bad.size:
        i = int(bad[0])
        stamps = time[i : i + 2].astype("datetime64[ns]").astype(str)
        out.append(
            Finding(
                "time",
                "fail",
                f"not strictly increasing at {bad.size} step(s), first at step {i + 1} "
                f"({stamps[0]} then {stamps[1]})",
            )
        )
    else:
        first, last = time[[0, -1]].astype("datetime64[ns]").astype("datetime64[s]").astype(str)
        out.append(Finding("time", "ok", f"{time.size} steps, increasing, {first} .. {last}"))
    for name in ("node", "feature"):
        values = [str(v) for v in _read(group, name)]
        seen: set[str] = set()
        dup = sorted({v for v in values if v in seen or seen.add(v)})
        if dup:
            out.append(Finding(name, "fail", f"duplicate {name} ids: {_names(dup)}"))
        else:
            out.append(
                Finding(
                    name,
                    "ok",
                    f"{len(values)} unique {name} {'ids' if name == 'node' else 'names'}",
                )
            )
    return out


def _check_graph(group: zarr.Group) -> Finding:
    n_node = int(group["node"].shape[0])
    index = _read(group, "edge_index")
    weight = _read(group, "edge_weight")
    if index.ndim != 2 or index.shape[0] != 2 or weight.shape != (index.shape[1],):
        return Finding(
            "graph", "fail", f"edge_index {index.shape} and edge_weight {weight.shape} disagree"
        )
    out_of_range = np.flatnonzero(((index < 0) | (index >= n_node)).any(axis=0))
    if out_of_range.size:
        e = int(out_of_range[0])
        return Finding(
            "graph",
            "fail",
            f"{out_of_range.size} edge(s) refer to nodes outside 0..{n_node - 1}, first edge "
            f"{e} ({index[0, e]} -> {index[1, e]})",
        )
    bad = np.flatnonzero(~np.isfinite(weight) | (weight < 0))
    if bad.size:
        e = int(bad[0])
        return Finding(
            "graph",
            "fail",
            f"{bad.size} edge weight(s) not finite and non-negative, first edge {e} "
            f"({index[0, e]} -> {index[1, e]}) weight {weight[e]}",
        )
    loops = int(np.count_nonzero(index[0] == index[1]))
    if index.shape[1] == 0:
        return Finding("graph", "warn", "no edges (graph models see isolated nodes)")
    if index.shape[1] == loops:
        return Finding("graph", "warn", f"{index.shape[1]} edges, all self-loops (no structure)")
    return Finding("graph", "ok", f"{index.shape[1]} edges ({loops} self-loops), weights finite")


def _read_all(
    group: zarr.Group,
    meta: dict[str, dict],
    attrs: dict,
    progress: bool,
    reader: DataReader | None,
    swapped: list[str],
) -> list[Finding]:
    """Read every chunk (shard) of every array once; count the readings of ``data``.

    ``data`` goes through stzarr's reader when it can (each file read once on the I/O threads,
    in blocks of whole files, and handed to the manifest check on the way: ``swapped`` collects
    the files that are not the ones recorded); the other arrays, small, through zarr.
    """
    damaged: list[str] = []
    counts = {"total": 0, "zero": 0, "nan": 0}
    n_chunks = sum(len(_grid(m)) for m in meta.values())
    with tqdm(total=n_chunks, desc="verify", unit="chunk", disable=not progress) as bar:
        for name in sorted(meta):
            if name == "data" and reader is not None:
                values_of = _data_blocks(reader, group[name].shape, damaged, bar)
            else:
                values_of = _chunks(group[name], meta[name], damaged, bar)
            for values in values_of:
                if name == "data":
                    counts["total"] += values.size
                    counts["zero"] += int(np.count_nonzero(values == 0))
                    counts["nan"] += int(np.count_nonzero(np.isnan(values)))
    out = []
    if damaged:
        out.append(Finding("chunks", "fail", f"{len(damaged)} damaged: {_names(damaged)}"))
    else:
        out.append(Finding("chunks", "ok", f"all {n_chunks} chunks read and checked"))
        if not swapped:
            out.append(_check_counts(attrs.get("missing"), counts))
    return out


def _damage(exc: StoreDamagedError) -> str:
    return str(exc).split(": ", 1)[-1].split(";")[0]


def _chunks(
    array: zarr.Array, meta: dict[str, Any], damaged: list[str], bar: tqdm
) -> Iterator[np.ndarray]:
    """The chunks of ``array`` one at a time through zarr (damage appended to ``damaged``)."""
    grid = meta["chunk_grid"]["configuration"]["chunk_shape"]
    for coords in _grid(meta):
        region = tuple(slice(c * g, (c + 1) * g) for c, g in zip(coords, grid, strict=True))
        try:
            yield np.asarray(array[region])
        except StoreDamagedError as exc:
            damaged.append(_damage(exc))
        except Exception as exc:  # a store without checksums: the decoder fails
            key = "c/" + "/".join(map(str, coords))
            damaged.append(
                f"array '{array.basename}' chunk {key} cannot be decoded ({exc.__class__.__name__})"
            )
        finally:
            bar.update(1)


def _data_blocks(
    reader: DataReader, shape: tuple[int, ...], damaged: list[str], bar: tqdm
) -> Iterator[np.ndarray]:
    """``data`` in blocks of whole files through stzarr's reader; a block that fails is read
    again a file at a time, so every damaged file is named."""
    lay = reader.layout
    threads = read_threads(active_pipeline().threads)
    step = block_steps(lay.file_time, lay.step_bytes, READ_BLOCK_BYTES)
    for start in range(0, lay.n_time, step):
        stop = min(start + step, lay.n_time)
        pieces = [(start, stop)]
        while pieces:
            lo, hi = pieces.pop(0)
            out = np.empty((hi - lo, *shape[1:]), dtype=np.float32)
            try:
                reader.read(lo, hi, out, threads)
            except StoreDamagedError as exc:
                if hi - lo <= lay.file_time:
                    damaged.append(_damage(exc))
                else:  # name every damaged file of the block: one file at a time
                    pieces = [
                        (a, min(a + lay.file_time, hi)) for a in range(lo, hi, lay.file_time)
                    ] + pieces
                continue
            yield out
        bar.update(-(-(stop - start) // lay.file_time))


def _check_counts(recorded: Any, found: dict[str, int]) -> Finding:
    if not isinstance(recorded, dict) or "total" not in recorded:
        return Finding("counts", "warn", "no reading counts recorded at conversion")
    expected = {
        "total": recorded["total"],
        "zero": recorded.get("zero", 0),
        "nan": recorded.get("nan", 0) + recorded.get("inf", 0),  # infinities are stored as NaN
    }
    differ = [
        f"{k} {expected[k]} recorded, {found[k]} found" for k in expected if expected[k] != found[k]
    ]
    if differ:
        return Finding("counts", "fail", "; ".join(differ))
    return Finding(
        "counts", "ok", f"{found['total']} readings, {found['zero']} zero, {found['nan']} NaN"
    )


def verify_store(
    path: str | os.PathLike[str], *, full: bool = False, progress: bool = False
) -> VerifyReport:
    """Check a store; see the module docstring for what is checked.

    Parameters
    ----------
    path : str or PathLike
        Store path or fsspec URL.
    full : bool
        Also read every chunk of every array and compare the recorded counts.
    progress : bool
        Show a tqdm bar while reading chunks.

    Returns
    -------
    VerifyReport
    """
    text = os.fspath(path)
    findings: list[Finding] = []
    if is_local(text):
        for partial in stale_partials(text.removeprefix("file://")):
            findings.append(
                Finding(
                    "leftovers",
                    "warn",
                    f"{partial} is a partial output of an interrupted run "
                    f"(`stzarr clean {text}` removes it)",
                )
            )

    def report() -> VerifyReport:
        return VerifyReport(text, full, tuple(findings))

    root = Path(text.removeprefix("file://"))
    recorded = None
    if is_local(text) and root.is_dir():
        checked, recorded = _check_manifest(root)
        findings.extend(checked)
        if any(f.check == "metadata" and f.status == "fail" for f in findings):
            return report()  # the arrays cannot be trusted to be what they say

    try:
        group, zstore = open_group_checked(text)
    except StoreFormatError as exc:
        findings.append(Finding("format", "fail", str(exc)))
        return report()
    attrs = dict(group.attrs)
    version = attrs.get(FORMAT_KEY)
    if version != FORMAT_VERSION:
        detail = (
            f"no {FORMAT_KEY}: not a complete stzarr store"
            if version is None
            else f"format version {version}, this stzarr reads {FORMAT_VERSION}"
        )
        findings.append(Finding("format", "fail", detail))
        return report()
    findings.append(Finding("format", "ok", f"stzarr store, format version {version}"))
    meta = array_metadata(group)
    absent = [name for name in REQUIRED if name not in meta]
    if absent:
        findings.append(Finding("arrays", "fail", f"missing array(s): {', '.join(absent)}"))
        return report()
    if zstore.configure(attrs, meta):
        findings.append(Finding("checksums", "ok", "crc32c on every chunk of every array"))
    else:
        findings.append(
            Finding(
                "checksums",
                "warn",
                "no chunk checksums (written by an older stzarr): damage inside a chunk "
                "cannot be detected",
            )
        )
    findings.extend(_check_files(text, attrs, meta))
    try:
        findings.extend(_check_coordinates(group))
        findings.append(_check_graph(group))
    except StzarrError as exc:
        findings.append(Finding("coordinates", "fail", str(exc)))
    if full:
        layout = layout_of(meta["data"], zstore.checks.get("data"))
        swapped: list[str] = []
        reader = None
        if layout is not None:
            bind = _binder(recorded, swapped) if recorded is not None else None
            reader = DataReader(zstore, root if is_local(text) else None, layout, bind)
        if recorded is not None:
            problems = _check_contents(root, recorded, data_read=reader is not None)
        findings.extend(_read_all(group, meta, attrs, progress, reader, swapped))
        if recorded is not None:
            problems = sorted(set(problems) | set(swapped))
            manifest_at = next(i for i, f in enumerate(findings) if f.check == "manifest")
            if findings[manifest_at].status == "ok":
                findings[manifest_at] = _manifest_finding(recorded, problems, "contents")
    return report()


def _binder(recorded: dict[str, Any], swapped: list[str]) -> Callable[[str, np.ndarray], None]:
    """The reader's ``file_check`` for ``data``: each file read whole against the manifest's
    ``[size, crc32c]`` (a mismatch is appended to ``swapped``)."""
    chunks = recorded["chunks"]
    lock = threading.Lock()

    def check(key: str, data: np.ndarray) -> None:
        name = f"data/{key}"
        want = chunks.get(name)
        if want is None:
            return  # named already by the sizes check (a file the manifest does not list)
        if manifest.bytes_digest(data) != list(want):
            with lock:
                swapped.append(f"{name} {manifest.MOVED}")

    return check
