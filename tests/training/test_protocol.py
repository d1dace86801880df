"""The training protocol of DCRNN's released configuration, offered to every model: learning-rate
milestones, gradient clipping, early stopping on validation MAE, ``best.pt`` and testing on the
best epoch. Checked against torch's own ``MultiStepLR``/``clip_grad_norm_`` in a hand-written
loop, plain-Python rules over the logged validation MAEs, and runs stopped at the best epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from training_oracle import oracle_start

from stzarr.cli import build_parser, main
from stzarr.cli.options import train_config
from stzarr.errors import SpecError
from stzarr.plan.sampler import GlobalShuffleSampler
from stzarr.testing.validators import make_store
from stzarr.training.checkpoint import load_checkpoint
from stzarr.training.config import TrainConfig
from stzarr.training.metrics import masked_mae
from stzarr.training.train import train

SMALL = dict(
    model="a3tgcn",
    batch_size=16,
    input_steps=6,
    horizon=3,
    max_batches=6,
    threads=1,
    progress=False,
    model_options={"hidden": 8},
)
NOISY = dict(SMALL, lr=0.05, max_batches=3)
"""A rate high enough that validation MAE stops improving within a few epochs."""


@pytest.fixture
def store(tmp_path):
    return make_store(
        tmp_path / "s.zarr", n_time=700, n_node=6, chunk_time=64, missing_fraction=0.1
    )


def _oracle_run(store, *, epochs, lr, milestones, decay, clip):
    """The batch losses, learning rates and final parameters of a plain loop over the
    materialised windows with torch's MultiStepLR (stepped per epoch) and clip_grad_norm_."""
    reference, model = oracle_start(
        store, "a3tgcn", input_steps=SMALL["input_steps"], horizon=SMALL["horizon"]
    )
    windows = reference["train"]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones), gamma=decay)
    sampler = GlobalShuffleSampler(windows.starts, SMALL["batch_size"], seed=0)
    losses, lrs, norms = [], [], []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for k, starts in enumerate(sampler):
            if k == SMALL["max_batches"]:
                break
            pos = torch.from_numpy(np.searchsorted(windows.starts, starts))
            valid = ~windows.missing[pos]
            pred = reference.inverse(model(windows.x[pos]), [0])
            loss = masked_mae(pred, reference.inverse(windows.y[pos], [0]), valid)
            optimizer.zero_grad()
            loss.backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip)))
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            losses.append(loss.item())
        scheduler.step()
    return losses, lrs, norms, model.state_dict()


@pytest.mark.parametrize("mode", ["single", "device"])
def test_milestones_and_clipping_equal_torchs_multisteplr_and_clip_grad_norm(store, mode):
    epochs, lr, milestones, decay, clip = 4, 0.02, (1, 3), 0.5, 0.5
    result = train(
        store,
        TrainConfig.of(
            mode=mode,
            device="auto" if mode == "device" else None,  # the CPU where CUDA is absent
            epochs=epochs,
            lr=lr,
            lr_milestones=milestones,
            lr_decay=decay,
            clip_grad_norm=clip,
            time_of_day=True,
            **SMALL,
        ),
    )
    losses, lrs, norms, params = _oracle_run(
        store, epochs=epochs, lr=lr, milestones=milestones, decay=decay, clip=clip
    )
    assert sum(n > clip for n in norms) > len(norms) // 2, "the clipping must bite to be tested"
    np.testing.assert_allclose([v for r in result.history for v in r["batch_lr"]], lrs, rtol=1e-12)
    assert sorted(set(lrs)) == pytest.approx([lr / 4, lr / 2, lr])
    rtol = 1e-3 if result.log["device"].startswith("cuda") else 1e-5  # other kernels on CUDA
    np.testing.assert_allclose(
        [v for r in result.history for v in r["batch_losses"]], losses, rtol=rtol
    )
    for name, p in params.items():
        torch.testing.assert_close(result.state_dict[name], p, rtol=100 * rtol, atol=10 * rtol)


def test_milestones_compose_with_the_warm_up(store):
    """lr at step t of epoch e: lr * min(1, (t + 1) / warm-up steps) * decay ** #milestones <= e."""
    warmup_epochs, milestones, decay, lr = 1.5, (2,), 0.1, 0.01
    result = train(
        store,
        TrainConfig.of(
            epochs=3,
            lr=lr,
            lr_scaling=True,
            warmup_epochs=warmup_epochs,
            lr_milestones=milestones,
            lr_decay=decay,
            **SMALL,
        ),
    )
    steps, warm = SMALL["max_batches"], round(warmup_epochs * SMALL["max_batches"])
    expected = [
        lr * min(1.0, (t + 1) / warm) * decay ** sum(m <= t // steps for m in milestones)
        for t in range(3 * steps)
    ]
    np.testing.assert_allclose([v for r in result.history for v in r["batch_lr"]], expected)


def _stop_epoch(maes, patience, epochs):
    """DCRNN's rule: stop once ``patience`` epochs in a row did not beat the best MAE."""
    best, wait = float("inf"), 0
    for epoch, mae in enumerate(maes, 1):
        if mae < best:
            best, wait = mae, 0
        else:
            wait += 1
            if wait == patience:
                return epoch
    return epochs


def test_early_stopping_best_pt_and_testing_on_the_best(store, tmp_path):
    patience, epochs = 2, 12
    stopped = train(
        store,
        TrainConfig.of(epochs=epochs, patience=patience, checkpoint_dir=tmp_path / "a", **NOISY),
    )
    maes = [r["val"]["mae"] for r in stopped.history]
    assert len(maes) == _stop_epoch(maes, patience, epochs) < epochs, "did not stop early"
    best_epoch = int(np.argmin(maes)) + 1
    assert best_epoch == len(maes) - patience
    assert stopped.log["best"] == {
        "best_epoch": best_epoch,
        "best_val_mae": min(maes),
        "bad_epochs": patience,
    }
    # the oracle: the same run stopped at the best epoch, tested on its last parameters
    short = train(store, TrainConfig.of(epochs=best_epoch, test_on="last", **NOISY))
    best = load_checkpoint(tmp_path / "a", "best.pt")
    assert best.epoch == best_epoch
    for name, p in short.state_dict.items():
        assert torch.equal(best.model[name], p), name
    assert stopped.test["parameters"] == "best" and stopped.test["parameters_epoch"] == best_epoch
    for key in ("mae", "rmse", "mape", "count"):
        assert stopped.test[key] == short.test[key], key
    # --test-on last scores the last epoch's parameters, which are not the best's
    last = train(store, TrainConfig.of(epochs=len(maes), test_on="last", **NOISY))
    assert last.test["parameters"] == "last" and last.test["mae"] != stopped.test["mae"]
    assert load_checkpoint(tmp_path / "a").epoch == len(maes)


def test_resume_restores_schedule_best_and_patience_bit_exactly(store, tmp_path):
    protocol = {**NOISY, "lr": 0.1, "patience": 2, "lr_milestones": (4,), "clip_grad_norm": 1.0}
    whole = train(store, TrainConfig.of(epochs=12, checkpoint_dir=tmp_path / "w", **protocol))
    best_epoch = whole.log["best"]["best_epoch"]
    cut = best_epoch + 1  # resume between the best epoch and the stop: best.pt must be read
    assert cut < len(whole.history)
    train(store, TrainConfig.of(epochs=cut, checkpoint_dir=tmp_path / "c", **protocol))
    ck = tmp_path / "c"
    resumed = train(store, TrainConfig.of(epochs=12, checkpoint_dir=ck, resume=True, **protocol))
    assert resumed.log["resumed_at_epoch"] == cut
    assert [r["batch_losses"] for r in resumed.history] == [
        r["batch_losses"] for r in whole.history
    ]
    assert resumed.log["best"] == whole.log["best"]
    for name, p in whole.state_dict.items():
        assert torch.equal(resumed.state_dict[name], p), name
    assert resumed.test == {**whole.test, "seconds": resumed.test["seconds"]}
    # resuming a run that stopped early trains no further and tests the same parameters
    again = train(store, TrainConfig.of(epochs=12, checkpoint_dir=ck, resume=True, **protocol))
    assert len(again.history) == len(whole.history)
    assert again.test["mae"] == whole.test["mae"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "partitioned"])
def test_protocol_in_ddp_modes_stops_every_rank_at_the_rule(store, mode, tmp_path):
    protocol = dict(patience=1, lr_milestones=(1,), lr_decay=0.5, clip_grad_norm=0.5, **NOISY)
    result = train(
        store,
        TrainConfig.of(
            mode=mode,
            workers=2,
            epochs=6,
            checkpoint_dir=tmp_path / "ck",
            tensorboard_dir=tmp_path / "tb",
            **protocol,
        ),
    )
    maes = [r["val"]["mae"] for r in result.history]
    assert len(maes) == _stop_epoch(maes, 1, 6)
    lrs = [v for r in result.history for v in r["batch_lr"]]
    assert lrs == [NOISY["lr"] * (0.5 if t >= NOISY["max_batches"] else 1) for t in range(len(lrs))]
    best = load_checkpoint(tmp_path / "ck", "best.pt")
    assert best.epoch == result.log["best"]["best_epoch"] == int(np.argmin(maes)) + 1
    assert result.test["parameters_epoch"] == best.epoch
    assert all(len(r["batch_losses"]) == NOISY["max_batches"] for r in result.history)
    # TensorBoard: one event file, from rank 0, with both ranks' peak RSS
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    (events,) = (tmp_path / "tb").iterdir()
    acc = accumulator.EventAccumulator(str(events.parent))
    acc.Reload()
    for r in (0, 1):
        peaks = [e.value for e in acc.Scalars(f"memory/peak_rss_bytes/rank{r}")]
        assert peaks == pytest.approx([rec["peak_rss_bytes"][r] for rec in result.history])
    steps = [e.value for e in acc.Scalars("train/loss_step")]
    assert steps == pytest.approx([v for rec in result.history for v in rec["batch_losses"]])


def test_flags_reach_the_configuration():
    flags = "--lr-milestones 20,30,40,50 --lr-decay 0.5 --clip-grad-norm 5 --patience 3"
    flags += " --test-on last --tensorboard tb"
    args = build_parser().parse_args(["train", "S", *flags.split()])
    assert train_config(args) == TrainConfig.of(
        lr_milestones=(20, 30, 40, 50),
        lr_decay=0.5,
        clip_grad_norm=5.0,
        patience=3,
        test_on="last",
        tensorboard_dir="tb",
    )
    # patience and test_on may change on resume, the schedule and clipping may not
    saved = TrainConfig.of(patience=2, lr_milestones=(3,)).to_dict()
    assert TrainConfig.of(patience=5, test_on="last", lr_milestones=(3,)).resume_diff(saved) == []
    assert TrainConfig.of(patience=2, clip_grad_norm=5.0, lr_milestones=(4,)).resume_diff(
        saved
    ) == ["run.lr_milestones: [3] -> [4]", "run.clip_grad_norm: None -> 5.0"]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"lr_milestones": (5, 2)}, "lr_milestones must increase"),
        ({"lr_milestones": (-1,)}, "epochs >= 0"),
        ({"lr_decay": 0.0}, "lr_decay"),
        ({"clip_grad_norm": 0.0}, "clip_grad_norm must be positive"),
        ({"patience": 0}, "patience must be a positive integer"),
        ({"test_on": "first"}, "test_on must be one of"),
    ],
)
def test_bad_protocol_options_are_spec_errors(options, match):
    with pytest.raises(SpecError, match=match):
        TrainConfig.of(**options)


def test_bad_protocol_flags_are_one_line_errors(store, capsys):
    assert main(["train", str(store.path), "--lr-milestones", "3,1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "lr_milestones must increase" in err and "\n" not in err
    with pytest.raises(SystemExit) as exc:
        main(["train", str(store.path), "--lr-milestones", "x"])
    assert exc.value.code == 2


def test_foreign_best_pt_and_tensorboard_file_are_refused_before_training(store, tmp_path, capsys):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "best.pt").write_text("not ours")
    assert main(["train", str(store.path), "--checkpoint", str(ck)]) == 2
    assert "best.pt exists and is not a stzarr checkpoint" in capsys.readouterr().err
    assert (ck / "best.pt").read_text() == "not ours" and not (ck / "last.pt").exists()
    (tmp_path / "tb").write_text("a file")
    assert main(["train", str(store.path), "--tensorboard", str(tmp_path / "tb")]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
