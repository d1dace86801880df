import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from stzarr import compute_stats, open_store
from stzarr.converters import convert
from stzarr.data.pgt import get_index_dataset, pgt_bounds
from stzarr.testing.oracles import numpy_standardise
from stzarr.testing.validators import assert_loaders_equal, make_store
from stzarr.training.pgt_compat import import_pgt

IndexDataset = import_pgt("torch_geometric_temporal.signal.index_dataset").IndexDataset


def _pgt_starts(n_time, lags, ratio=(0.7, 0.1, 0.2)):
    """PGT 0.56 ``get_index_dataset``'s split of the start indices, verbatim."""
    x_i = np.arange(n_time - (2 * lags - 1))
    num_samples = x_i.shape[0]
    num_train = round(num_samples * ratio[0])
    num_test = round(num_samples * ratio[2])
    num_val = num_samples - num_train - num_test
    return x_i[:num_train], x_i[num_train : num_train + num_val], x_i[-num_test:]


@pytest.fixture
def chickenpox(shared_data, tmp_path):
    convert(shared_data / "chickenpox.json", tmp_path / "pox.zarr", progress=False)
    fx = np.asarray(json.loads((shared_data / "chickenpox.json").read_text())["FX"])
    return tmp_path / "pox.zarr", fx


def test_chickenpox_matches_pgt_index_dataset_batch_for_batch(chickenpox):
    """With PGT's conventions (split of the starts, stored values, y = all features), every
    batch equals what PGT's own IndexDataset gives through a stock DataLoader."""
    path, fx = chickenpox
    out = get_index_dataset(path, batch_size=4, lags=4, standardise=False, cross_splits=True)
    train, val, test, edges, weights, means, stds = out
    assert edges.shape == (2, 102) and weights.shape == (102,)
    assert torch.equal(means, torch.zeros(1)) and torch.equal(stds, torch.ones(1))
    data = np.expand_dims(fx, -1).astype(np.float32)  # the store holds float32
    for ours, starts in zip((train, val, test), _pgt_starts(len(fx), 4), strict=True):
        assert np.array_equal(ours.dataset.starts, starts)
        pgt = DataLoader(IndexDataset(starts, data, 4), batch_size=4, shuffle=False)
        assert assert_loaders_equal(ours, pgt) == len(pgt)


def test_traffic_store_defaults(tmp_path):
    store = make_store(tmp_path / "s.zarr", n_time=800, n_node=6)
    train, val, test, edges, weights, means, stds = get_index_dataset(
        store, batch_size=16, lags=12, shuffle=True, seed=2
    )
    np.testing.assert_array_equal(edges.numpy(), store.edge_index)
    np.testing.assert_array_equal(weights.numpy(), store.edge_weight)
    stats = compute_stats(store, bounds=(0, 560))
    assert means.dtype == torch.float32
    assert torch.equal(means, torch.from_numpy(stats.mean.astype(np.float32)))
    assert torch.equal(stds, torch.from_numpy(stats.std.astype(np.float32)))
    x, y = next(iter(train))
    assert x.shape == (16, 12, 6, 2), "5-minute data gets time-of-day appended"
    assert y.shape == (16, 12, 6, 1)
    # no leakage by default: training windows end inside the training split
    assert train.dataset.starts.max() + 24 <= 560
    assert val.dataset.starts.min() >= 560 and test.dataset.starts.min() >= 640


def test_standardised_batches_match_pgt_on_the_same_standardised_data(tmp_path):
    store = make_store(tmp_path / "s.zarr", n_time=400, n_node=5)
    train, *_ = get_index_dataset(store, batch_size=8, lags=6, time_of_day=False, cross_splits=True)
    bounds = pgt_bounds(400, 12, (0.7, 0.1, 0.2))
    z = numpy_standardise(store.read(0, 400), compute_stats(store, bounds=bounds["train"]), "zero")
    starts = _pgt_starts(400, 6)[0]
    pgt = DataLoader(IndexDataset(starts, z, 6), batch_size=8, shuffle=False)
    assert assert_loaders_equal(train, pgt) == len(pgt)


def test_bad_ratio_is_a_spec_error(tmp_path):
    from stzarr import SpecError

    store = make_store(tmp_path / "s.zarr", n_time=100)
    with pytest.raises(SpecError, match="sum to 1"):
        get_index_dataset(store, ratio=(0.5, 0.1, 0.1))
    with pytest.raises(SpecError, match="longer than the series"):
        get_index_dataset(open_store(tmp_path / "s.zarr"), lags=60)
