"""The scaler: fit from train statistics, standardise in place, de-standardise, the value of a
missing reading; checked against plain NumPy written from the definition."""

import numpy as np
import pytest
import torch

from stzarr.data.scaler import Scaler, mask_missing
from stzarr.errors import SpecError
from stzarr.testing.oracles import numpy_standardise, numpy_stats
from stzarr.testing.validators import make_series_with_nans


@pytest.fixture
def data_with_nans():
    return make_series_with_nans()


@pytest.mark.parametrize("missing_value", ["zero", "nan"])
@pytest.mark.parametrize("per_node", [False, True])
def test_transform_equals_numpy_bit_for_bit_on_arrays_and_tensors(
    data_with_nans, missing_value, per_node
):
    stats = numpy_stats(data_with_nans[:200], missing_value, per_node=per_node)
    want = numpy_standardise(data_with_nans, stats, missing_value)
    scaler = Scaler.fit(stats, missing_value)
    array = data_with_nans.copy()
    assert scaler.transform_(array) is array, "in place"
    np.testing.assert_array_equal(array.view(np.uint32), want.view(np.uint32))
    tensor = torch.from_numpy(data_with_nans.copy())
    assert scaler.transform_(tensor) is tensor
    np.testing.assert_array_equal(tensor.numpy().view(np.uint32), want.view(np.uint32))


def test_every_missing_reading_becomes_the_sentinel(data_with_nans):
    stats = numpy_stats(data_with_nans[:200], "zero")
    scaler = Scaler.fit(stats, "zero")
    z = scaler.transform_(data_with_nans.copy())
    missing = (data_with_nans == 0) | np.isnan(data_with_nans)
    mean = stats.mean.astype(np.float32)
    std = stats.std.astype(np.float32)
    np.testing.assert_array_equal(scaler.sentinel, (np.float32(0) - mean) / std)
    assert not np.isnan(z).any()
    np.testing.assert_array_equal(z == scaler.sentinel, missing)
    out = np.empty(z.shape, bool)
    mask_missing(z, scaler.sentinel, "zero", out)
    np.testing.assert_array_equal(out, missing)
    z_nan = Scaler.fit(numpy_stats(data_with_nans[:200], "nan"), "nan").transform_(
        data_with_nans.copy()
    )
    np.testing.assert_array_equal(np.isnan(z_nan), np.isnan(data_with_nans))
    assert np.isnan(Scaler.fit(stats, "nan").sentinel).all()


@pytest.mark.parametrize("per_node", [False, True])
def test_inverse_of_selected_features_is_float32_affine(data_with_nans, per_node):
    stats = numpy_stats(data_with_nans[:200], "zero", per_node=per_node)
    scaler = Scaler.fit(stats, "zero").select([2, 0])
    z = np.random.default_rng(0).standard_normal((4, 5, 6, 2)).astype(np.float32)
    mean = stats.mean.astype(np.float32)[..., [2, 0]]
    std = stats.std.astype(np.float32)[..., [2, 0]]
    got = scaler.inverse(torch.from_numpy(z)).numpy()
    np.testing.assert_array_equal(got, z * std + mean)
    if per_node:
        with pytest.raises(SpecError, match="per-node"):
            scaler.inverse(torch.zeros(4, 5, 3, 2))


def test_unknown_missing_convention_is_a_spec_error():
    with pytest.raises(SpecError, match="missing_value"):
        Scaler.identity(2, "empty")
