"""Host-to-device transfer: the staged, double-buffered copy is exact and never overwrites a
staging buffer whose transfer is still in flight (checked on the CPU with a simulated DMA)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stzarr.data.device import host_to_device, staged_copy


class _LazyDMA:
    """A transfer engine that only reads the staging buffer when ``reuse`` (or ``finish``) says
    the copy completed, as an asynchronous DMA would: a staging buffer refilled too early is
    copied with the wrong bytes."""

    def __init__(self) -> None:
        self.pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.reused: list[int] = []
        self.copies = 0

    def copy(self, dst: torch.Tensor, view: torch.Tensor, slot: int) -> None:
        assert slot not in self.pending, f"slot {slot} issued twice without reuse"
        self.pending[slot] = (dst, view)

    def reuse(self, slot: int) -> None:
        self.reused.append(slot)
        self._complete(slot)

    def _complete(self, slot: int) -> None:
        dst, view = self.pending.pop(slot)
        dst.copy_(view)
        self.copies += 1

    def finish(self) -> None:
        for slot in sorted(self.pending):
            self._complete(slot)


@pytest.mark.parametrize(
    "n, piece, slots", [(1000, 64, 2), (1000, 1000, 2), (999, 10, 3), (5, 8, 2)]
)
def test_staged_copy_is_exact_with_an_asynchronous_engine(n, piece, slots):
    rng = np.random.default_rng(n + piece)
    src = torch.from_numpy(rng.standard_normal((n, 1)).astype(np.float32))
    src[3 % n, 0] = float("nan")
    dst = torch.full_like(src, -1.0)
    staging = [torch.empty(piece, dtype=src.dtype) for _ in range(slots)]
    engine = _LazyDMA()
    pieces = staged_copy(src, dst, staging, copy=engine.copy, reuse=engine.reuse)
    engine.finish()
    assert pieces == math.ceil(n / piece) == engine.copies
    assert engine.reused == [i % slots for i in range(slots, pieces)]  # round-robin, each once
    assert torch.equal(dst.view(torch.int32), src.view(torch.int32))  # NaN included, bit-exact


def test_staged_copy_refuses_mismatched_tensors():
    with pytest.raises(ValueError, match="cannot copy"):
        staged_copy(
            torch.zeros(4),
            torch.zeros(5),
            [torch.empty(2)],
            copy=lambda *a: None,
            reuse=lambda s: None,
        )


def test_cpu_target_wraps_without_copying():
    block = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    out = host_to_device(block, "cpu")
    assert out.device.type == "cpu" and out.shape == (2, 3, 4)
    block[0, 0, 0] = 99.0  # shares memory, as torch.from_numpy(block).to("cpu") did
    assert out[0, 0, 0].item() == 99.0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_copy_through_pinned_ring_is_exact():
    from stzarr.data.device import STAGING_BYTES

    rng = np.random.default_rng(0)
    n = 3 * STAGING_BYTES // 4 + 12345  # several pieces, the last one partial
    block = rng.standard_normal(n).astype(np.float32).reshape(-1, 1)
    out = host_to_device(block, "cuda")
    assert out.is_cuda
    np.testing.assert_array_equal(out.cpu().numpy(), block)
    pinned = torch.from_numpy(block).pin_memory()
    assert torch.equal(host_to_device(pinned, "cuda").cpu(), pinned)
