"""Pooled batch buffers: the memory a batch is built in, reused once nothing refers to it.

The tensors of a batch are views of a pooled buffer (:data:`BATCH_BUFFERS`, a few per device).
A buffer is handed out again only when no tensor anywhere in the process still refers to its
memory (the storage's reference count: a batch, any view of it, a NumPy array over it, or autograd
saving it for backward all keep it busy), and never once it was moved to shared memory (a
``DataLoader`` worker sending it to the main process). Holding a batch is therefore always safe;
when every pooled buffer is held (``list(loader)``), the batch gets a fresh buffer of its own.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from stzarr.errors import SpecError

_ALIGN = 64

Layout = tuple[tuple[tuple[int, ...], torch.dtype], ...]


def _use_count(t: torch.Tensor) -> int:
    """Strong references to ``t``'s storage (every tensor or view on it, NumPy arrays included)."""
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


class _Slot:
    """One pooled buffer and the views last carved from it."""

    def __init__(self, flat: torch.Tensor) -> None:
        self.flat = flat
        self.layout: Layout | None = None
        self.views: tuple[torch.Tensor, ...] = ()
        self.arrays: tuple[np.ndarray, ...] = ()
        self.idle = 0  # storage reference count when only the pool holds it

    def carve(self, layout: Layout) -> None:
        """(Re)cut the tensors of ``layout`` from the buffer, 64-byte aligned."""
        self.views = self.arrays = ()
        views, at = [], 0
        for shape, dtype in layout:
            n = int(np.prod(shape)) * dtype.itemsize
            views.append(self.flat[at : at + n].view(dtype).view(shape))
            at += -(-n // _ALIGN) * _ALIGN
        self.views = tuple(views)
        if self.flat.device.type == "cpu":
            self.arrays = tuple(v.numpy() for v in views)
        self.layout = layout
        self.idle = _use_count(self.flat)


def _layout_bytes(layout: Layout) -> int:
    return sum(
        -(-int(np.prod(shape)) * dtype.itemsize // _ALIGN) * _ALIGN for shape, dtype in layout
    )


def _allocate(size: int, device: torch.device) -> torch.Tensor:
    """``size`` bytes on ``device``. On the CPU through NumPy, whose allocator asks the kernel for
    transparent huge pages (``madvise``) where torch's does not: filling a 100 MB batch buffer
    measured markedly faster with them (fewer TLB misses)."""
    if device.type == "cpu":
        return torch.from_numpy(np.empty(size, dtype=np.uint8))
    return torch.empty(size, dtype=torch.uint8, device=device)


class BatchBuffers:
    """A small pool of reusable batch buffers per device.

    :meth:`take` returns fresh tensor views of a pooled buffer that nothing else refers to (its
    storage's reference count is the pool's own), so a batch is never overwritten while anything
    still holds it or a view of it; buffers moved to shared memory (sent by a ``DataLoader``
    worker) leave the pool. When every pooled buffer is busy the caller gets a one-off buffer.

    Parameters
    ----------
    depth : int
        Buffers kept per device: 2 serves a loop that holds the previous batch while the next
        one is built, with the memory of two batches (as many as fresh allocations would hold).
    """

    def __init__(self, depth: int = 2) -> None:
        if depth < 1:
            raise SpecError(f"depth must be positive, got {depth}")
        self.depth = depth
        self._slots: dict[torch.device, list[_Slot]] = {}
        self._sizes: dict[Layout, int] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, int]:
        return {"depth": self.depth}

    def __setstate__(self, state: dict[str, int]) -> None:
        self.__init__(state["depth"])  # type: ignore[misc]

    def take(
        self, device: torch.device, layout: Layout
    ) -> tuple[tuple[torch.Tensor, ...], tuple[np.ndarray, ...]]:
        """Tensors of the shapes and dtypes in ``layout`` on ``device`` (contents undefined),
        and NumPy views of the same memory on the CPU (empty elsewhere), for filling them."""
        with self._lock:
            slots = self._slots.setdefault(device, [])
            if device.type == "cpu":  # shared with another process: never write it again
                slots[:] = [s for s in slots if not s.flat.is_shared()]
            slot = next((s for s in slots if _use_count(s.flat) == s.idle), None)
            size = self._sizes.get(layout)
            if size is None:
                size = self._sizes[layout] = _layout_bytes(layout)
            if slot is None:
                slot = _Slot(_allocate(size, device))
                if len(slots) < self.depth:
                    slots.append(slot)
            elif slot.flat.numel() < size:
                slot.views = slot.arrays = ()
                slot.flat = _allocate(size, device)
                slot.layout = None
            if slot.layout != layout:
                slot.carve(layout)
            return tuple(v.detach() for v in slot.views), slot.arrays


BATCH_BUFFERS = BatchBuffers()
"""The process-wide pool every :class:`~stzarr.data.batcher.SeriesBatcher` builds its batches in."""
