"""Index-batching must give exactly the batches of the standard materialised pipeline.

For generated METR-LA-layout data and the real chickenpox series, every batch of every split
(two training epochs, seeded shuffling) is compared byte for byte, on the CPU and on the device.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from stzarr import WindowSpec, make_loaders, open_store
from stzarr.converters import convert
from stzarr.converters.synth import synth_traffic
from stzarr.data.loaders import batch_loader
from stzarr.testing.reference import MaterialisedDataset, materialise_windows
from stzarr.testing.validators import assert_loaders_equal

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
        ],
    ),
]


@pytest.fixture(scope="module")
def metr_store(tmp_path_factory):
    """A week and a half of METR-LA-layout traffic on the real METR-LA graph."""
    graph = SHARED_DATA / "adj_mx.pkl"
    tmp = tmp_path_factory.mktemp("metr")
    kwargs = {"graph": graph} if graph.exists() else {"nodes": 207}
    synth_traffic(tmp / "metr-la.h5", steps=1500, seed=3, progress=False, **kwargs)
    convert(
        tmp / "metr-la.h5",
        tmp / "metr-la.zarr",
        adjacency=graph if graph.exists() else None,
        progress=False,
        chunk_time=256,
    )
    return open_store(tmp / "metr-la.zarr")


@pytest.fixture(scope="module")
def chickenpox_store(tmp_path_factory):
    src = SHARED_DATA / "chickenpox.json"
    if not src.exists():
        pytest.skip("../shared/data is not present")
    dst = tmp_path_factory.mktemp("pox") / "chickenpox.zarr"
    convert(src, dst, progress=False)
    return open_store(dst)


def _check_equivalent(store, spec, *, batch_size, device, seed=0, epochs=2, **options):
    options = {"time_of_day": False, **options}  # the oracle's defaults: no calendar, no fill
    index = make_loaders(
        store,
        spec,
        batch_size=batch_size,
        seed=seed,
        device=device,
        with_mask=True,
        fill_missing=False,
        **options,
    )
    # the oracle: plain NumPy from the raw values, sharing only the opened store
    materialised = materialise_windows(
        store.read(0, store.shape[0]),
        store.time,
        store.missing_value,
        input_steps=spec.input_steps,
        horizon=spec.horizon,
        stride=spec.stride,
        cross_splits=options.get("cross_splits", False),
        per_node=options.get("per_node", False),
        target_features=[
            store.feature_names.index(name)
            for name in options.get("target_features", store.feature_names)
        ],
        time_of_day=options.get("time_of_day", False),
        day_of_week=options.get("day_of_week", False),
    )
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(index.plan.starts[split], materialised[split].starts)
    compared = 0
    for split in ("train", "val", "test"):
        dataset = MaterialisedDataset(materialised[split], with_mask=True).to(device)
        train = split == "train"
        reference = batch_loader(
            dataset,
            batch_size,
            shuffle=train,
            seed=seed,
            drop_last=train and options.get("drop_last", False),
        )
        ours = getattr(index, split)
        for _ in range(epochs if split == "train" else 1):
            n = assert_loaders_equal(ours, reference)
            assert n == len(ours) > 0
            compared += n
    x, y, mask = next(iter(index.train))
    assert x.device.type == torch.device(device).type
    return compared, x, y, mask


@pytest.mark.parametrize("device", DEVICES)
def test_metr_la_layout_batches_are_byte_identical(metr_store, device):
    compared, x, y, mask = _check_equivalent(
        metr_store,
        WindowSpec(12, 12),
        batch_size=64,
        device=device,
        seed=7,
        time_of_day=True,
        target_features=["speed"],
    )
    assert x.shape == (64, 12, 207, 2) and y.shape == (64, 12, 207, 1)
    assert compared == 2 * 17 + 2 + 5  # 1,027 train starts in 64s (twice), 127 val, 277 test
    assert mask.any(), "the generated data has missing readings, masked identically"


@pytest.mark.parametrize("device", DEVICES)
def test_metr_la_layout_per_node_day_of_week_stride(metr_store, device):
    compared, x, y, _ = _check_equivalent(
        metr_store,
        WindowSpec(12, 6, stride=3),
        batch_size=50,
        device=device,
        seed=1,
        per_node=True,
        time_of_day=True,
        day_of_week=True,
        drop_last=True,
    )
    assert x.shape == (50, 12, 207, 9) and y.shape == (50, 6, 207, 1)
    assert compared == 2 * 6 + 1 + 2  # stride 3: 345 train starts (drop_last), 45 val, 95 test


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cross_splits", [False, True])
def test_chickenpox_batches_are_byte_identical(chickenpox_store, device, cross_splits):
    compared, x, _, mask = _check_equivalent(
        chickenpox_store,
        WindowSpec(4, 4),
        batch_size=4,
        device=device,
        seed=3,
        cross_splits=cross_splits,
    )
    assert x.shape == (4, 4, 20, 1) and not mask.any()
    # 521 weeks, span 8: starts per split 358/45/97, or 365/52/97 when windows may cross
    assert compared == (2 * 92 + 13 + 25 if cross_splits else 2 * 90 + 12 + 25)
