"""Checkpoints: round trip, RNG restoration, atomic writes, readable errors."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from stzarr.errors import StzarrError
from stzarr.training import checkpoint as ckpt_mod
from stzarr.training.checkpoint import (
    Checkpoint,
    checkpoint_exists,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def _draws() -> tuple:
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random())  # noqa: NPY002


def _checkpoint(epoch: int = 1) -> Checkpoint:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return Checkpoint(
        epoch=epoch,
        step=7,
        model=model.state_dict(),
        optimizer=opt.state_dict(),
        scheduler=None,
        rng=[rng_state()],
        sampler_epoch=epoch,
        history=[{"epoch": epoch, "loss": 1.5}],
        config={"model": "dcrnn"},
    )


def test_rng_state_round_trip_replays_the_same_numbers():
    state = rng_state()
    first = _draws()
    set_rng_state(state)
    assert _draws() == first


def test_checkpoint_round_trip(tmp_path):
    ck = _checkpoint()
    path = save_checkpoint(tmp_path / "ck", ck)
    assert path.name == "last.pt" and checkpoint_exists(tmp_path / "ck")
    back = load_checkpoint(tmp_path / "ck")
    assert back.epoch == 1 and back.step == 7 and back.history == ck.history
    for k, v in ck.model.items():
        assert torch.equal(back.model[k], v)
    assert back.optimizer["state"][0]["step"] == ck.optimizer["state"][0]["step"]
    set_rng_state(back.rng[0])
    a = _draws()
    set_rng_state(ck.rng[0])
    assert _draws() == a


def test_failed_write_keeps_the_previous_checkpoint_and_leaves_no_temporary(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, _checkpoint(epoch=1))

    def broken_save(obj, fh):
        fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, _checkpoint(epoch=2))
    monkeypatch.undo()
    assert load_checkpoint(tmp_path).epoch == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_missing_or_foreign_checkpoint_is_a_one_line_error(tmp_path):
    with pytest.raises(StzarrError, match="no checkpoint at"):
        load_checkpoint(tmp_path)
    torch.save({"weights": 1}, tmp_path / "last.pt")
    with pytest.raises(StzarrError, match="not a stzarr checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / "last.pt").write_bytes(b"garbage")
    with pytest.raises(StzarrError, match="cannot read"):
        load_checkpoint(tmp_path)
