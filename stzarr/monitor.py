"""Process-memory helpers: peak-memory sampling as the paper measures it (psutil RSS sampled on
a background thread), handing freed heap back to the OS, the share of a process budget left for
data, and dropping files from the page cache for cold-read benchmarks."""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import psutil

from stzarr.errors import SpecError
from stzarr.units import format_bytes

RUNTIME_RESERVE = 64 * 2**20
"""Bytes a whole-process budget keeps back for the runtime's own growth once loading starts
(zarr's and torch's thread pools, allocator slack)."""


@dataclass
class MemorySampler:
    """Sample the resident set size of this process (and its children) at a fixed interval.

    Use as a context manager; ``peak_bytes`` and the ``(seconds, bytes)`` trace are available
    afterwards (and while running).

    Parameters
    ----------
    interval : float
        Seconds between samples (the paper samples every second; benchmarks use less).
    include_children : bool
        Add the RSS of child processes (e.g. DataLoader workers).
    """

    interval: float = 0.05
    include_children: bool = False
    trace: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _t0: float = 0.0

    def _rss(self) -> int:
        proc = psutil.Process()
        rss = proc.memory_info().rss
        if self.include_children:
            for child in proc.children(recursive=True):
                try:
                    rss += child.memory_info().rss
                except psutil.Error:
                    pass
        return rss

    def sample(self) -> int:
        """Take one sample now and return it."""
        rss = self._rss()
        self.trace.append((time.perf_counter() - self._t0, rss))
        return rss

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self._t0 = time.perf_counter()
        self._stop.clear()
        self.sample()
        self._thread = threading.Thread(target=self._run, name="stzarr-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    @property
    def peak_bytes(self) -> int:
        """Largest sampled RSS in bytes (0 before the first sample)."""
        return max((rss for _, rss in self.trace), default=0)


def current_rss() -> int:
    """Resident set size of this process in bytes."""
    return psutil.Process().memory_info().rss


def release_free_heap() -> None:
    """Return the C heap's free memory to the OS (glibc ``malloc_trim``; elsewhere a no-op).

    Zarr and dask decode chunks into buffers of a few MiB on pools of threads, and glibc keeps
    freed buffers in per-thread heaps: without this a chunked pass keeps its peak resident and a
    streaming run's RSS creeps above what the loader holds (measured: +70 MiB after six 36 MiB
    block reads).
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def loader_budget(process_budget: int, *, reserve: int = RUNTIME_RESERVE) -> int:
    """The part of a whole-process memory budget left for data (series blocks and batches).

    ``--max-memory`` on the command line bounds the process (what a batch scheduler enforces);
    the loader gets that minus what the process already holds (interpreter, libraries, model)
    and ``reserve``.

    Raises
    ------
    SpecError
        When the process already uses the whole budget.
    """
    rss = current_rss()
    left = int(process_budget) - rss - int(reserve)
    if left <= 0:
        raise SpecError(
            f"max_memory {format_bytes(int(process_budget))} is already used by the process "
            f"itself ({format_bytes(rss)} resident before loading any data, "
            f"{format_bytes(int(reserve))} reserved)"
        )
    return left


def drop_page_cache(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Ask the kernel to drop the cached pages of ``paths`` (for cold-ish read measurements).

    Dirty pages are written back first, since ``POSIX_FADV_DONTNEED`` skips them. On a VM the
    host may still cache the disk.
    """
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
