"""One batch contract: ``stzarr train``, ``make_loaders``, ``open_rank_data`` and
``StreamingLoader`` share their defaults and yield the same ``(x, y, missing)`` batches."""

import numpy as np
import pytest
import torch

from stzarr import make_loaders, write_store
from stzarr.data.rank import open_rank_data
from stzarr.data.streaming import StreamingLoader
from stzarr.plan.windows import WindowSpec
from stzarr.store.stats import compute_stats
from stzarr.testing.validators import make_series, make_store
from stzarr.training.config import TrainConfig
from stzarr.training.loop import plan_rank_of
from stzarr.training.models import build_for_store

SPEC = WindowSpec(6, 3)


@pytest.fixture(scope="module", params=["zero", "nan"])
def store(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("contract") / "s.zarr"
    if request.param == "zero":
        return make_store(path, n_time=400, n_node=5, n_feature=2, chunk_time=32)
    data = make_series(400, 5, 2, missing_fraction=0.05, seed=2)
    data[data == 0] = np.nan
    return write_store(
        path,
        data,
        time=np.datetime64("2012-03-01", "ns") + np.arange(400) * np.timedelta64(5, "m"),
        node_ids=[str(i) for i in range(5)],
        feature_names=["speed", "volume"],
        edge_index=np.array([[0, 1, 2, 3, 4], [1, 2, 3, 4, 0]]),
        edge_weight=np.ones(5),
        attrs={"missing_value": "nan", "sampling_interval_s": 300},
        chunk_time=32,
    )


def _oracle(store, stats, starts):
    """``(x, y, missing)`` written from the definitions: raw windows from ``store.read``,
    standardised in float32, time-of-day appended (the store is sampled every 5 minutes),
    missing readings set to 0 only for a NaN store."""
    raw = store.read(0, store.shape[0]).astype(np.float32)
    missing = np.isnan(raw)
    if store.missing_value == "zero":
        missing |= raw == 0
    mean, std = stats.mean.astype(np.float32), stats.std.astype(np.float32)
    z = (np.where(np.isnan(raw), np.float32(0), raw) - mean) / std
    if store.missing_value == "nan":
        z = np.where(np.isnan(raw), np.float32(np.nan), z)
        z[missing] = 0  # the default for NaN stores: missing values filled with the mean
    minutes = store.time.astype("datetime64[m]").astype(np.int64) % 1440
    tod = (minutes / 1440).astype(np.float32)
    n = store.shape[1]
    xs, ys, ms = [], [], []
    for s in starts:
        x = z[s : s + SPEC.input_steps]
        t = np.broadcast_to(tod[s : s + SPEC.input_steps, None, None], (*x.shape[:2], 1))
        xs.append(np.concatenate([x, t], axis=-1))
        ys.append(z[s + SPEC.input_steps : s + SPEC.span])
        ms.append(missing[s + SPEC.input_steps : s + SPEC.span])
    assert xs[0].shape == (SPEC.input_steps, n, 3)
    return np.stack(xs), np.stack(ys), np.stack(ms)


def test_every_path_yields_the_same_batches_for_a_model_built_for_cli_training(store):
    config = TrainConfig(window=SPEC)  # what `stzarr train` runs with no batch flags
    windows = config.split.plan(SPEC, store.time)
    stats = compute_stats(store, bounds=windows.bounds["train"])
    plan, contract = plan_rank_of(store, windows, config, rank=0, world_size=1)
    data = open_rank_data(store, plan, stats, device=torch.device("cpu"), contract=contract)
    torch.manual_seed(0)
    model = build_for_store(
        "pgt-batched-dcrnn",
        store,
        SPEC,
        in_features=data.n_input_features,
        out_features=data.n_target_features,
        hidden=4,
    )
    batch_size = plan.batch_size  # the CLI's default batch size, on every path
    starts = windows.starts["val"][:batch_size]
    loaders = make_loaders(store, SPEC, batch_size=batch_size, device="cpu", stats=stats)
    streamed = StreamingLoader.from_starts(
        store,
        stats,
        SPEC,
        windows.starts["val"],
        batch_size=batch_size,
        max_memory=None,
        shuffle=False,
        device="cpu",
    )
    batches = {
        "stzarr train": next(data.eval_batches("val")),
        "make_loaders": next(iter(loaders.val)),
        "StreamingLoader": next(iter(streamed)),
    }
    want = _oracle(store, stats, starts)
    for path, batch in batches.items():
        assert isinstance(batch, tuple) and len(batch) == 3, f"{path} yields {len(batch)} items"
        x, y, missing = batch
        assert x.dtype == y.dtype == torch.float32 and missing.dtype == torch.bool, path
        for got, expected, name in zip(batch, want, ("x", "y", "missing"), strict=True):
            np.testing.assert_array_equal(got.numpy(), expected, err_msg=f"{path}: {name}")
        with torch.no_grad():
            assert model(x).shape == y.shape, f"the model does not take {path}'s batches"
