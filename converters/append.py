"""Extend a store in time with new source files, atomically (``stzarr append``).

How it stays safe
-----------------
The store is never modified in place. The new version is built in a hidden, locked partial
sibling (:class:`stzarr.store.atomic.AtomicOutput`, the same mechanism every store write uses):

1. every existing ``data`` chunk (or shard) file that lies wholly before the old end is
   *hard-linked* into the partial (no copy, no extra disk); the chunk that holds the old end,
   every metadata file and the small coordinate arrays are copied;
2. the partial's ``data`` and ``time`` arrays are resized and the new steps written through
   zarr, which writes every chunk to a temporary name and renames it over the old name, so a
   linked file is replaced by a new inode and never written through: the live store's files
   are never touched;
3. the chunk record (:func:`stzarr.store.format.seal`: every chunk file on disk, CRC-32C codec chain
   inherited from the arrays' metadata), the attributes and the consolidated metadata are
   written;
4. the partial is swapped with the store in one ``renameat2(RENAME_EXCHANGE)`` and the old
   version, now under the partial name, removed.

So at every moment the store's path holds a complete, valid store: the old one until step 4,
the new one after. A failure anywhere before step 4 (bad source, disk full, Ctrl-C, SIGTERM)
removes the partial and leaves the store byte-for-byte as it was. A reader that opened the old
version keeps reading consistent values across the swap: the chunks it can address are the
same inodes, or (the one boundary chunk) a copy holding the same values where the old shape
reaches. An ``flock`` on the store directory makes a second concurrent ``append`` fail at once
rather than lose an update.

What is derived from the data is invalidated or recomputed: cached statistics
(``stzarr_stats``) are dropped (the next ``stzarr stats`` or training run recomputes them over
the new train split), the missing-reading counts and the time-axis summary are recomputed, and
``sources`` gains one entry per new file with its SHA-256.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

import stzarr.store.manifest as manifest
from stzarr.converters.concat import ConcatSeries, Previous, open_all
from stzarr.converters.series import files_label, source_attrs, source_digests
from stzarr.converters.streaming import MissingCounts, stream_into
from stzarr.converters.timeaxis import check_time_index
from stzarr.errors import StoreDamagedError, StoreFormatError, StzarrError
from stzarr.store.atomic import AtomicOutput, lock_store, remove_stale_partials
from stzarr.store.chunks import INTEGRITY_KEY
from stzarr.store.format import (
    FORMAT_KEY,
    Store,
    consolidate,
    is_local,
    is_stzarr_store,
    open_store,
    seal,
    tool_version,
)
from stzarr.store.io_config import writing
from stzarr.store.stats import CACHE_ATTR

# dropped from the new version; the chunk record and the counts are then recomputed
DERIVED_ATTRS = (CACHE_ATTR, INTEGRITY_KEY, "missing")
WHOLE = {"write_empty_chunks": True}  # every chunk on disk, as StoreWriter writes them


@dataclass(frozen=True)
class AppendResult:
    """What :func:`append_sources` did.

    Attributes
    ----------
    path : str
        The store.
    old_steps, new_steps : int
        Steps before and steps added.
    shape : tuple of int
        ``(time, node, feature)`` after.
    files : list of str
        The sources appended, in order.
    linked_files, copied_files : int
        Existing files hard-linked into the new version and files copied.
    missing : dict
        Missing-reading counts of the whole store after.
    warnings : list of str
        Things the user should know.
    """

    path: str
    old_steps: int
    new_steps: int
    shape: tuple[int, int, int]
    files: list[str]
    linked_files: int
    copied_files: int
    missing: dict
    warnings: list[str]

    def to_dict(self) -> dict:
        """Plain-data view for JSON."""
        return asdict(self)


class _Extension:
    """The partial's ``data`` array seen as a writer for :func:`stream_into`."""

    def __init__(self, array: zarr.Array, path: Path) -> None:
        self.array, self.path = array, path
        self.shape = tuple(int(s) for s in array.shape)

    @property
    def block_time(self) -> int:
        return int((self.array.shards or self.array.chunks)[0])

    def write(self, start: int, block: np.ndarray) -> None:
        self.array[start : start + block.shape[0]] = block


def kept(key: str, keep_before: int) -> bool:
    """Whether the store file ``key`` is a ``data`` chunk wholly before the block
    ``keep_before``: an append keeps it as it is."""
    parts = key.split("/")
    return (
        len(parts) >= 3
        and parts[:2] == ["data", "c"]
        and parts[2].isdigit()
        and (int(parts[2]) < keep_before)
    )


def clone_for_append(src: Path, dst: Path, *, keep_before: int) -> tuple[list[str], int]:
    """Fill the empty directory ``dst`` with the store ``src``: ``data`` chunk files whose time
    index is below ``keep_before`` are hard-linked, every other file copied.

    Returns
    -------
    (linked, copied) : list of str, int
        The keys of the files linked, and the count of files copied (everything is copied where
        the filesystem has no hard links).
    """
    linked: list[str] = []
    copied = 0
    can_link = True
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        for name in dirs:
            (dst / rel / name).mkdir()
        for name in files:
            key = (rel / name).as_posix()
            source, target = Path(root) / name, dst / rel / name
            if kept(key, keep_before) and can_link:
                try:
                    os.link(source, target)
                    linked.append(key)
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                        raise
                    can_link = False
            shutil.copy2(source, target)
            copied += 1
    return linked, copied


def append_sources(
    store_path: str | os.PathLike[str],
    srcs: Sequence[str | os.PathLike[str]],
    *,
    key: str | None = None,
    time_column: str | None = None,
    freq: str | None = None,
    allow_gaps: bool = False,
    checksum: bool = True,
    progress: bool = True,
) -> AppendResult:
    """Append the steps of ``srcs`` (in time order) to the store at ``store_path``.

    Parameters
    ----------
    store_path : path
        A local store written by stzarr.
    srcs : sequence of paths
        Wide time-series files (pandas HDF5, CSV, Parquet) with exactly the store's sensors;
        the first must start one sampling interval after the store ends (files without a time
        column continue the store's time axis).
    key, time_column : str, optional
        As for ``stzarr convert``.
    freq : str, optional
        Interval of files without a time column (default: the store's).
    allow_gaps : bool
        Accept a gap between the store and the new files, or irregular spacing within them.
    checksum : bool
        Record every new file's SHA-256.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    AppendResult

    Raises
    ------
    StzarrError
        Any bad input (then the store is left exactly as it was).
    """
    if not srcs:
        raise StzarrError("no source file to append")
    if not is_local(store_path):
        raise StzarrError(f"{store_path}: append needs a local store (no atomic swap at URLs)")
    path = Path(os.fspath(store_path).removeprefix("file://"))
    if not path.is_dir():
        raise StoreFormatError(f"no store at {path}")
    lock = lock_store(path)
    if lock is None:
        raise StzarrError(f"{path} is being written by another process; try again")
    try:
        return _append_locked(
            path, srcs, key, time_column, freq, allow_gaps, checksum, progress, lock
        )
    finally:
        os.close(lock)


def _append_locked(
    path: Path,
    srcs: Sequence[str | os.PathLike[str]],
    key: str | None,
    time_column: str | None,
    freq: str | None,
    allow_gaps: bool,
    checksum: bool,
    progress: bool,
    lock: int,
) -> AppendResult:
    before = _fingerprint(path)
    recorded = manifest.require_metadata(path, str(path))
    store = open_store(path)
    n_old, n_node, n_feature = store.shape
    if n_feature != 1:
        raise StzarrError(
            f"{path} has {n_feature} features; append takes one-feature (wide table) stores"
        )
    attrs = dict(store.attrs)
    interval = attrs.get("sampling_interval_s")
    _check_freq(freq, interval, path)
    old_time = store.time.astype("datetime64[ns]").astype(np.int64)
    previous = Previous(
        path.name, int(old_time[-1]), None if interval is None else round(interval * 1e9)
    )
    readers = open_all(srcs, key=key, time_column=time_column)
    try:
        series = ConcatSeries(
            readers,
            node_ids=store.node_ids,
            freq=freq,
            allow_gaps=allow_gaps,
            previous=previous,
        )
        n_new = series.n_steps
        block = store.shard_time or store.chunk_time
        check_before_append(store, recorded, keep_before=n_old // block)
        remove_stale_partials(path)
        with (
            source_digests(readers, checksum) as digests,
            AtomicOutput(
                path,
                overwrite=True,
                ours=is_stzarr_store,
                what="a stzarr store",
                directory=True,
                lock=lock,
            ) as out,
        ):
            partial = out.partial
            linked, copied = clone_for_append(path, partial, keep_before=n_old // block)
            with writing():
                data = zarr.open_array(partial, path="data", mode="r+", config=WHOLE)
                times = zarr.open_array(partial, path="time", mode="r+", config=WHOLE)
            total = n_old + n_new
            data.resize((total, n_node, n_feature))
            times.resize((total,))
            times[n_old:] = series.index_ns
            counts = stream_into(
                _Extension(data, partial),
                series.read,
                missing_value=store.missing_value,
                desc=f"append {files_label(readers)}",
                progress=progress,
                offset=n_old,
            )
            updates = _updated_attrs(attrs, series, counts, digests(), old_time, n_old)
            # the arrays' own metadata, not the (stale until re-consolidated) root copy
            group = zarr.open_group(partial, mode="r+", zarr_format=3, use_consolidated=False)
            with manifest.unlisted():
                integrity = seal(group, partial)
            for name in DERIVED_ATTRS:
                group.attrs.pop(name, None)
            group.attrs.update({**updates, INTEGRITY_KEY: integrity})
            group.attrs[FORMAT_KEY] = attrs[FORMAT_KEY]
            consolidate(partial)
            manifest.write(partial, recorded, unchanged=linked)
            if _fingerprint(path) != before:
                raise StzarrError(f"{path} changed while appending (another writer); try again")
    finally:
        for reader in readers:
            reader.close()
    notes = []
    if CACHE_ATTR in attrs:
        notes.append("cached statistics dropped: they are recomputed over the new train split")
    return AppendResult(
        path=str(path),
        old_steps=n_old,
        new_steps=n_new,
        shape=(n_old + n_new, n_node, n_feature),
        files=[r.path.name for r in readers],
        linked_files=len(linked),
        copied_files=copied,
        missing=updates.get("missing", {}),
        warnings=notes,
    )


def _check_freq(freq: str | None, interval: float | None, path: Path) -> None:
    """Refuse a ``--freq`` that contradicts the store's sampling interval."""
    if freq is None or interval is None:
        return
    try:
        given = pd.to_timedelta(freq).total_seconds()
    except (ValueError, TypeError):
        raise StzarrError(f"--freq {freq!r} is not a duration (e.g. 5min)") from None
    if not math.isclose(given, interval):
        raise StzarrError(
            f"--freq {freq} contradicts {path}, sampled every {interval:g} s; "
            "append continues the store's time axis (omit --freq)"
        )


def _fingerprint(path: Path) -> tuple[bytes, ...]:
    """The root metadata and the manifest as they are: any commit to the store changes them."""
    docs = (path / "zarr.json", path / manifest.MANIFEST_NAME)
    return tuple(doc.read_bytes() if doc.exists() else b"" for doc in docs)


def check_before_append(store: Store, recorded: dict | None, *, keep_before: int) -> None:
    """Refuse to build on a damaged store: every chunk file present at its recorded size, and
    those the append rewrites or copies (everything but the ``data`` chunks before
    ``keep_before``) holding the bytes recorded. A store without a manifest: every chunk file of
    every array present, and the ``data`` chunks it rewrites passing their CRC-32C.

    Raises
    ------
    StoreDamagedError
        Naming the first problem.
    """
    path = Path(store.path)
    if recorded is None:
        try:
            group = zarr.open_group(path, mode="r", zarr_format=3, use_consolidated=False)
            seal(group, path)
            # the data files it rewrites: a read checks their presence and CRC-32Cs
            first = keep_before * (store.shard_time or store.chunk_time)
            if first < store.shape[0]:
                store.read(first, store.shape[0])
        except StzarrError as exc:
            problems = [str(exc).split(": ", 1)[-1].split("; the store is damaged")[0]]
        else:
            return
    else:
        rewritten = [k for k in recorded["chunks"] if not kept(k, keep_before)]
        problems = manifest.check_chunks(path, recorded, contents=False)
        problems += manifest.check_chunks(path, recorded, contents=True, keys=rewritten)
        problems = list(dict.fromkeys(problems))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise StoreDamagedError(
            f"{path}: {problems[0]}{more}; the store is damaged and append refuses to build on "
            "it (`stzarr verify --full` names every problem; restore it or convert again)"
        )


def _updated_attrs(
    attrs: dict,
    series: ConcatSeries,
    counts: MissingCounts,
    digests: Sequence[str | None],
    old_time: np.ndarray,
    n_old: int,
) -> dict:
    """The attributes that change: provenance, counts, time-axis summary."""
    axis = check_time_index(
        np.concatenate([old_time, series.index_ns]), source="the store", allow_gaps=True
    )
    before = attrs.get("sources") or ([attrs["source"]] if attrs.get("source") else [])
    now = datetime.now(UTC).isoformat(timespec="seconds")
    added = []
    for record in series.provenance(digests):
        start, stop = record["steps"]
        added.append({**record, "steps": [start + n_old, stop + n_old], "appended_at": now})
    updates = {
        **source_attrs([*before, *added]),
        "time_regular": axis.regular,
        "irregular_steps": axis.irregular_steps,
        "time_synthesised": bool(attrs.get("time_synthesised")) or series.time_synthesised,
        "appended_by": tool_version(),
    }
    if attrs.get("sampling_interval_s") is None:
        updates["sampling_interval_s"] = axis.interval_s
    recorded = attrs.get("missing")
    if isinstance(recorded, dict) and all(k in recorded for k in ("total", "zero", "nan", "inf")):
        updates["missing"] = counts.merged(recorded).to_dict()
    return updates
