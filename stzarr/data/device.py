"""Host-to-device transfer: pinned staging and non-blocking copies on a side stream.

Series blocks bound for CUDA (a rank's partition, each block of a streamed range) cross to the
device through a small ring of **pinned** (page-locked) host buffers: piece ``i`` is copied into
a free pinned buffer while the DMA of piece ``i - 1`` runs, each DMA is issued with
``non_blocking=True`` on a dedicated CUDA stream, so the copy overlaps whatever the default
stream is computing (the training step, in streamed mode, where blocks load on a background
thread). The calling thread waits for its own copy before the block is used; no other stream
waits. Pinned memory stays bounded by the ring (``STAGING_PIECES`` x ``STAGING_BYTES``), never
a second copy of the block.

On a CPU target nothing is copied: the block is wrapped as it is (what ``Tensor.to("cpu")`` did
before). :func:`staged_copy` is the device-independent core and runs on the CPU too, which is how
the piece arithmetic is tested without a GPU.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import torch

STAGING_BYTES = 64 * 2**20
"""Bytes per pinned staging buffer."""
STAGING_PIECES = 2
"""Pinned staging buffers per thread (2: fill one while the other is in flight)."""

_local = threading.local()


def staged_copy(
    src: torch.Tensor,
    dst: torch.Tensor,
    staging: list[torch.Tensor],
    *,
    copy: Callable[[torch.Tensor, torch.Tensor, int], None],
    reuse: Callable[[int], None],
) -> int:
    """Copy the contiguous ``src`` into ``dst`` through a ring of 1-D staging buffers.

    Parameters
    ----------
    src, dst : torch.Tensor
        Contiguous tensors with the same dtype and number of elements (``dst`` may live on
        another device).
    staging : list of torch.Tensor
        1-D host buffers of ``src.dtype``, all the same length; used round-robin.
    copy : callable
        ``copy(piece_of_dst, filled_staging_view, slot)`` issues the transfer of one piece.
    reuse : callable
        ``reuse(slot)`` returns once the transfer issued from ``staging[slot]`` has finished
        reading it (called before a slot is filled again).

    Returns
    -------
    int
        Number of pieces copied.
    """
    if src.numel() != dst.numel() or src.dtype != dst.dtype:
        raise ValueError(
            f"cannot copy {src.dtype}{tuple(src.shape)} into {dst.dtype}{tuple(dst.shape)}"
        )
    flat_src, flat_dst = src.reshape(-1), dst.view(-1)
    step = int(staging[0].numel())
    pieces = 0
    for lo in range(0, flat_src.numel(), step):
        hi = min(lo + step, flat_src.numel())
        slot = pieces % len(staging)
        if pieces >= len(staging):
            reuse(slot)
        view = staging[slot][: hi - lo]
        view.copy_(flat_src[lo:hi])
        copy(flat_dst[lo:hi], view, slot)
        pieces += 1
    return pieces


class _CudaStaging:
    """One thread's pinned ring, side stream and per-slot events for one CUDA device."""

    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        n = STAGING_BYTES // torch.empty((), dtype=dtype).element_size()
        self.buffers = [torch.empty(n, dtype=dtype, pin_memory=True) for _ in range(STAGING_PIECES)]
        self.stream = torch.cuda.Stream(device)
        self.events = [torch.cuda.Event() for _ in range(STAGING_PIECES)]

    def copy(self, dst: torch.Tensor, view: torch.Tensor, slot: int) -> None:
        with torch.cuda.stream(self.stream):
            dst.copy_(view, non_blocking=True)
            self.events[slot].record(self.stream)

    def reuse(self, slot: int) -> None:
        self.events[slot].synchronize()


def _staging(device: torch.device, dtype: torch.dtype) -> _CudaStaging:
    cache: dict[tuple[str, torch.dtype], _CudaStaging] = _local.__dict__.setdefault("rings", {})
    key = (str(device), dtype)
    if key not in cache:
        cache[key] = _CudaStaging(device, dtype)
    return cache[key]


def host_to_device(block: np.ndarray | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Move a host block to ``device``; on CUDA through pinned memory with non-blocking copies.

    Parameters
    ----------
    block : numpy.ndarray or torch.Tensor
        Host data. On a CPU target it is returned wrapped, sharing memory (no copy).
    device : torch.device or str
        Target device.

    Returns
    -------
    torch.Tensor
        The block on ``device``. On CUDA the copy has completed (the calling thread waited for
        its side stream only), so any stream may use the result.
    """
    device = torch.device(device)
    host = torch.from_numpy(block) if isinstance(block, np.ndarray) else block
    if device.type != "cuda":
        return host.to(device)
    host = host.contiguous()
    out = torch.empty(host.shape, dtype=host.dtype, device=device)
    if host.numel() == 0:
        return out
    if host.is_pinned():
        ring = _staging(device, host.dtype)
        with torch.cuda.stream(ring.stream):
            out.copy_(host, non_blocking=True)
        ring.stream.synchronize()
        return out
    ring = _staging(device, host.dtype)
    staged_copy(host, out, ring.buffers, copy=ring.copy, reuse=ring.reuse)
    ring.stream.synchronize()
    return out
