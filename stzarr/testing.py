"""Reusable validators and small fixtures for stzarr's tests (and for users testing their own
pipelines). Validators raise ``AssertionError`` with a message naming the first difference.
"""

from __future__ import annotations

import os

import numpy as np

from stzarr.store import Store, write_store


def make_series(
    n_time: int,
    n_node: int,
    n_feature: int = 1,
    *,
    missing_fraction: float = 0.05,
    seed: int = 0,
) -> np.ndarray:
    """A small float32 ``(time, node, feature)`` series with a daily cycle and zeros as missing.

    Values are positive (speed-like, around 60) so that 0 unambiguously marks a missing reading.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n_time)[:, None, None]
    base = 60 + 5 * rng.standard_normal((1, n_node, n_feature))
    daily = 10 * np.sin(2 * np.pi * t / 288.0)
    data = base + daily + rng.standard_normal((n_time, n_node, n_feature))
    data[rng.random(data.shape) < missing_fraction] = 0.0
    return data.astype(np.float32)


def make_store(
    path: str | os.PathLike[str],
    n_time: int = 600,
    n_node: int = 7,
    n_feature: int = 1,
    *,
    chunk_time: int | None = 64,
    shard_time: int | None = None,
    missing_fraction: float = 0.05,
    seed: int = 0,
    start: str = "2012-03-01",
    freq_minutes: int = 5,
) -> Store:
    """Write a small synthetic store (ring graph, 5-minute steps) for tests and return it opened."""
    data = make_series(n_time, n_node, n_feature, missing_fraction=missing_fraction, seed=seed)
    time = np.datetime64(start, "ns") + np.arange(n_time) * np.timedelta64(freq_minutes, "m")
    src = np.arange(n_node)
    edge_index = np.stack([np.concatenate([src, src]),
                           np.concatenate([(src + 1) % n_node, (src - 1) % n_node])])
    edge_weight = np.linspace(0.2, 1.0, edge_index.shape[1], dtype=np.float32)
    return write_store(
        path,
        data,
        time=time,
        node_ids=[f"{400000 + i}" for i in range(n_node)],
        feature_names=["speed"] + [f"f{i}" for i in range(1, n_feature)],
        edge_index=edge_index,
        edge_weight=edge_weight,
        attrs={
            "missing_value": "zero",
            "sampling_interval_s": freq_minutes * 60,
            "source": {"file": "synthetic", "sha256": None, "key": None, "format": "testing"},
        },
        chunk_time=chunk_time,
        shard_time=shard_time,
    )
