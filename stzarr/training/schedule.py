"""The learning-rate schedule: linear warm-up (``lr_scaling``) times milestone decay.

One :class:`torch.optim.lr_scheduler.LambdaLR` stepped after every optimiser step, whose factor
at global step ``t`` (0-based) of epoch ``e = t // steps_per_epoch`` is

``min(1, (t + 1) / warmup_steps) * decay ** (number of milestones <= e)``

(the warm-up factor is 1 without ``lr_scaling``). The decay part equals
:class:`torch.optim.lr_scheduler.MultiStepLR` stepped once per epoch, as DCRNN's released
configuration trains. The factor is a plain function, so the scheduler's ``state_dict`` is its
step count and base rates only, and ``--resume`` restores it exactly.
"""

from __future__ import annotations

from bisect import bisect_right

import torch

from stzarr.training.config import RunOptions


def lr_factor(
    step: int,
    *,
    steps_per_epoch: int,
    warmup_steps: int | None,
    milestones: tuple[int, ...],
    decay: float,
) -> float:
    """The factor of the base learning rate at global step ``step`` (0-based).

    Parameters
    ----------
    step : int
        Optimiser steps taken before this one.
    steps_per_epoch : int
    warmup_steps : int, optional
        Length of the linear warm-up (``None``: none).
    milestones : tuple of int
        Epochs (0-based) from which the rate is multiplied by ``decay`` once more.
    decay : float
    """
    warm = 1.0 if warmup_steps is None else min(1.0, (step + 1) / warmup_steps)
    return warm * decay ** bisect_right(milestones, step // steps_per_epoch)


def make_scheduler(
    optimizer: torch.optim.Optimizer, run: RunOptions, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """The schedule of ``run`` for ``optimizer`` (``None`` when the rate is constant).

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        Its base rate already scaled by the number of ranks when ``run.lr_scaling``.
    run : RunOptions
    steps_per_epoch : int
        Optimiser steps per epoch (the same on every rank).
    """
    if not run.lr_scaling and not run.lr_milestones:
        return None
    warmup = max(1, round(run.warmup_epochs * steps_per_epoch)) if run.lr_scaling else None
    steps, milestones, decay = max(1, steps_per_epoch), run.lr_milestones, run.lr_decay

    def factor(step: int) -> float:
        return lr_factor(
            step, steps_per_epoch=steps, warmup_steps=warmup, milestones=milestones, decay=decay
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
