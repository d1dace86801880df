"""Measurement helpers: peak-memory sampling as the paper measures it (psutil RSS sampled on a
background thread), and dropping files from the page cache for cold-read benchmarks."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import psutil


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
