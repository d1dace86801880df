"""What a trained model is bound to: the store it was trained on and how its batches were built.

A checkpoint carries a *data record* (:func:`data_record`) next to the parameters, so that
``stzarr evaluate`` and ``stzarr predict`` need nothing but the checkpoint and a store:

* ``model``: name and hyper-parameters; ``window``: input steps, horizon, stride; ``split``: how
  the splits were cut (fractions or timestamps, gaps, cross-split windows);
* ``stats``: the train-split statistics the inputs were standardised with (float64, exact);
* ``features``: the feature layout of a batch: input and target feature names, calendar
  channels, missing fill and the store's missing-value convention;
* ``store``: the store's identity (:func:`store_identity`): shape, node ids, the graph's hash,
  feature names, sampling interval, the train split's time range, and the root digest of the
  store's manifest when it has one.

Two comparisons use it. :func:`resume_differences` lists everything that differs between the
store of a checkpoint and the store a ``--resume`` runs on (any difference refuses).
:func:`compatibility_differences` lists what makes a store unusable with a trained model:
other sensors, another graph, other features, another missing-value convention or sampling
interval; the length of the series and the time it covers may differ (a later year appended,
a new file converted).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from stzarr.data.calendar import time_feature_names
from stzarr.data.contract import resolve_features
from stzarr.store.format import is_local, local_path
from stzarr.store.manifest import root_digest

if TYPE_CHECKING:
    from stzarr.store.format import Store
    from stzarr.store.stats import Stats


def graph_hash(edge_index: Any, edge_weight: Any) -> str:
    """SHA-256 of the graph: int64 ``edge_index`` then float32 ``edge_weight`` bytes."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(np.asarray(edge_index, dtype=np.int64)).tobytes())
    digest.update(np.ascontiguousarray(np.asarray(edge_weight, dtype=np.float32)).tobytes())
    return digest.hexdigest()


def manifest_root(store: Store) -> str | None:
    """The root digest of a local store's manifest (:func:`stzarr.store.manifest.root_digest`), or
    None for a store without one (a store at a URL, or written before manifests)."""
    return root_digest(local_path(store.path)) if is_local(store.path) else None


def _timestamp(value: np.datetime64) -> str:
    return str(np.datetime_as_string(np.datetime64(value, "ns"), unit="s"))


def store_identity(store: Store, train_bounds: tuple[int, int]) -> dict[str, Any]:
    """The identity of ``store`` as plain data (see the module docstring).

    Parameters
    ----------
    store : Store
    train_bounds : tuple of int
        Half-open time steps of the train split.
    """
    lo, hi = int(train_bounds[0]), int(train_bounds[1])
    time = store.time
    interval = store.attrs.get("sampling_interval_s")
    return {
        "path": store.path,
        "shape": list(store.shape),
        "node_ids": store.node_ids,
        "graph_sha256": graph_hash(store.edge_index, store.edge_weight),
        "features": store.feature_names,
        "missing_value": store.missing_value,
        "sampling_interval_s": None if interval is None else int(interval),
        "train_steps": [lo, hi],
        "train_time": [_timestamp(time[lo]), _timestamp(time[hi - 1])] if hi > lo else None,
        "manifest_root": manifest_root(store),
    }


def data_record(
    store: Store,
    *,
    model: str,
    model_options: Mapping[str, Any],
    window: Mapping[str, Any],
    split: Mapping[str, Any],
    train_bounds: tuple[int, int],
    stats: Stats,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything a checkpoint needs to be used without its training run's flags.

    Parameters
    ----------
    store : Store
        The store trained on.
    model, model_options
        Model name and hyper-parameters.
    window, split : mapping
        The window spec and split spec as plain data.
    train_bounds : tuple of int
        The train split's time steps.
    stats : Stats
        The train statistics inputs were standardised with.
    options : mapping
        The resolved batch options (:meth:`stzarr.training.config.BatchOptions.resolve`).
    """
    names = store.feature_names
    calendar = time_feature_names(
        time_of_day=bool(options.get("time_of_day")), day_of_week=bool(options.get("day_of_week"))
    )
    return {
        "model": {"name": model, "options": dict(model_options)},
        "window": dict(window),
        "split": dict(split),
        "stats": stats.to_dict(),
        "features": {
            "input": [names[i] for i in resolve_features(options.get("input_features"), names)],
            "target": [names[i] for i in resolve_features(options.get("target_features"), names)],
            "calendar": calendar,
            "time_of_day": bool(options.get("time_of_day")),
            "day_of_week": bool(options.get("day_of_week")),
            "fill_missing": bool(options.get("fill_missing")),
        },
        "store": store_identity(store, train_bounds),
    }


def _summary(name: str, saved: Any, ours: Any) -> str:
    """``name`` and a short account of how two values differ."""
    if isinstance(saved, list) and isinstance(ours, list) and len(saved) > 4:
        if len(saved) != len(ours):
            return f"{name}: {len(saved)} -> {len(ours)} entries"
        first = next(i for i, (a, b) in enumerate(zip(saved, ours, strict=True)) if a != b)
        return f"{name}: entry {first} {saved[first]!r} -> {ours[first]!r}"
    if isinstance(saved, str) and len(saved) == 64:  # a digest
        return f"{name}: {saved[:12]}... -> {str(ours)[:12]}..."
    return f"{name}: {saved!r} -> {ours!r}"


COMPATIBILITY_KEYS = ("node_ids", "graph_sha256", "features", "missing_value")
"""Identity fields a store must share with a trained model's store to be evaluated on."""


def _differences(saved: Mapping[str, Any], ours: Mapping[str, Any], keys: Any) -> list[str]:
    return [_summary(k, saved.get(k), ours.get(k)) for k in keys if saved.get(k) != ours.get(k)]


def resume_differences(saved: Mapping[str, Any], ours: Mapping[str, Any]) -> list[str]:
    """What differs between the identity of a checkpoint's store and of the store a resumed
    run uses: ``"field: saved -> ours"`` lines (empty when they are the same store).

    The path is not compared (a store may move); a manifest digest is compared when both
    identities have one.
    """
    keys = [k for k in saved if k not in ("path", "manifest_root")]
    out = _differences(saved, ours, keys)
    if saved.get("manifest_root") and ours.get("manifest_root"):
        out += _differences(saved, ours, ["manifest_root"])
    return out


def compatibility_differences(saved: Mapping[str, Any], store: Store) -> list[str]:
    """Why ``store`` cannot be used with a model trained on the store ``saved`` describes:
    other sensor ids, graph, features, missing-value convention or sampling interval (empty when
    it can)."""
    ours = store_identity(store, (0, 0))
    out = _differences(saved, ours, COMPATIBILITY_KEYS)
    a, b = saved.get("sampling_interval_s"), ours.get("sampling_interval_s")
    if a is not None and b is not None and a != b:
        out.append(_summary("sampling_interval_s", a, b))
    return out
