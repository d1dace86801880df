"""``stzarr train --tensorboard DIR``: the event files, read with TensorBoard's own
EventAccumulator, hold the values of the training log JSON; without the package the flag is one
line and exit 2 before any work."""

from __future__ import annotations

import json
import sys

import pytest

from stzarr.cli import main
from stzarr.store.format import open_store
from stzarr.testing.validators import make_store
from stzarr.training.config import TrainConfig
from stzarr.training.train import train

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

SMALL = dict(
    model="a3tgcn",
    batch_size=8,
    input_steps=6,
    horizon=4,
    stride=2,
    threads=1,
    progress=False,
    max_batches=4,
    model_options={"hidden": 4},
)
BUDGET = 100_000
"""Bytes: below this store's training series and batch buffers, so the rank streams it."""


@pytest.fixture
def store(tmp_path):
    return make_store(
        tmp_path / "s.zarr", n_time=1500, n_node=20, chunk_time=32, missing_fraction=0.05
    )


def scalars(directory) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the event files in ``directory`` as ``(step, value)`` pairs."""
    acc = event_accumulator.EventAccumulator(str(directory), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_event_files_hold_the_logged_values(store, tmp_path):
    log_path, board = tmp_path / "log.json", tmp_path / "tb"
    train(
        store,
        TrainConfig.of(
            epochs=2,
            lr_milestones=(1,),
            max_memory=BUDGET,
            log_path=log_path,
            tensorboard_dir=board,
            **SMALL,
        ),
    )
    log = json.loads(log_path.read_text())
    got = scalars(board)
    epochs = log["epochs"]
    approx = dict(rel=1e-6)  # TensorBoard stores float32

    per_step = [
        (4 * (r["epoch"] - 1) + k, v) for r in epochs for k, v in enumerate(r["batch_losses"])
    ]
    assert [s for s, _ in got["train/loss_step"]] == [s for s, _ in per_step] == list(range(8))
    assert [v for _, v in got["train/loss_step"]] == pytest.approx(
        [v for _, v in per_step], **approx
    )
    lrs = [v for r in epochs for v in r["batch_lr"]]
    assert [v for _, v in got["train/lr"]] == pytest.approx(lrs, **approx)
    assert lrs == [0.01] * 4 + [0.001] * 4

    def per_epoch(tag, values):
        assert [s for s, _ in got[tag]] == [1, 2], tag
        assert [v for _, v in got[tag]] == pytest.approx(values, **approx), tag

    for split in ("train", "val"):
        for name in ("mae", "rmse", "mape"):
            per_epoch(f"{split}/{name}", [r[split][name] for r in epochs])
            for h in epochs[0][split]["horizons"]:
                per_epoch(f"{split}/{name}@{h}", [r[split]["horizons"][h][name] for r in epochs])
    per_epoch("speed/samples_per_s", [r["samples_per_s"] for r in epochs])
    per_epoch("memory/peak_rss_bytes/rank0", [r["peak_rss_bytes"][0] for r in epochs])
    assert log["ranks"][0]["train"] == "streamed"
    for name in ("blocks_read", "wait_s", "peak_series_bytes"):
        per_epoch(f"stream/rank0/{name}", [r["streams"][0][name] for r in epochs])
    assert got["stream/rank0/blocks_read"][1][1] > got["stream/rank0/blocks_read"][0][1] > 0
    for name in ("mae", "rmse", "mape"):
        assert got[f"test/{name}"] == [(2, pytest.approx(log["test"][name], **approx))]
    assert "test/mae@3" in got


def test_without_tensorboard_the_flag_is_one_line_before_any_work(
    store, tmp_path, monkeypatch, capsys
):
    for name in list(sys.modules):
        if name == "tensorboard" or name.startswith(("tensorboard.", "torch.utils.tensorboard")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    board, ck = tmp_path / "tb", tmp_path / "ck"
    before = json.dumps(dict(open_store(store.path).attrs), sort_keys=True, default=str)
    code = main(["train", str(store.path), "--tensorboard", str(board), "--checkpoint", str(ck)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'stzarr[tensorboard]'" in err and "\n" not in err
    assert not board.exists() and not ck.exists()
    # no statistics computed or cached: the store is as it was
    assert json.dumps(dict(open_store(store.path).attrs), sort_keys=True, default=str) == before
