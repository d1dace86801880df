"""The starting point of the plain training loops that tests compare ``stzarr.training.train``
with: the
standard materialised train windows (plain NumPy from the raw values, time-of-day appended) and a
model built after ``torch.manual_seed(0)``, as ``train`` builds it with seed 0."""

from __future__ import annotations

import torch

from stzarr.store.format import Store
from stzarr.testing.reference import Reference, materialise_windows
from stzarr.training.models import build_model


def oracle_start(
    store: Store, model: str, *, input_steps: int, horizon: int, hidden: int = 8
) -> tuple[Reference, torch.nn.Module]:
    """The materialised train split (``reference["train"]``, with the statistics' ``inverse``)
    and the seeded model of a plain training loop."""
    reference = materialise_windows(
        store.read(0, store.shape[0]),
        store.time,
        store.missing_value,
        input_steps=input_steps,
        horizon=horizon,
        time_of_day=True,
        splits=("train",),
    )
    torch.manual_seed(0)
    net = build_model(
        model,
        store.shape[1],
        2,  # the data feature and time of day
        1,
        input_steps,
        horizon,
        store.edge_index,
        store.edge_weight,
        hidden=hidden,
    )
    return reference, net
