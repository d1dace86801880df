"""What every rank of a run calls together: whether a process group is up, and gathering plain
Python objects from every rank (a one-element list in one process)."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist


def distributed() -> bool:
    """Whether a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def gather(obj: Any) -> list[Any]:
    """``all_gather_object`` over ranks (a one-element list without a process group)."""
    if not distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
