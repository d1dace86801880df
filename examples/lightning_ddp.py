"""Train a PGT model with ``lightning.Trainer`` on stzarr's loaders, as DDP on 2 CPU processes.

Each rank gets its own data from :class:`stzarr.training.lightning.StzarrDataModule` (``--mode
partitioned``: only its chunk-aligned time range; ``--max-memory``: streamed in blocks); the
loaders are stzarr's own, so Lightning puts no ``DistributedSampler`` on them.

    python examples/lightning_ddp.py STORE [--mode full|partitioned] [--devices 2]
        [--epochs 2] [--max-batches 20] [--save PARAMS.pt]

Needs the ``lightning`` extra (``pip install 'stzarr[lightning]'``). Run it as a script: the DDP
strategy starts the other ranks by running this file again.
"""

from __future__ import annotations

import argparse

import lightning as L
import torch

from stzarr.training.lightning import ForecastModule, StzarrDataModule


class ReportRange(L.Callback):
    """Each rank prints the time steps it trained on, then waits for the others: the line is
    printed while the process group lives, so no rank's line is lost when rank 0 ends the job."""

    def __init__(self, data: StzarrDataModule, mode: str) -> None:
        self.data, self.mode = data, mode

    def on_train_end(self, trainer: L.Trainer, module: ForecastModule) -> None:
        assert self.data.data is not None
        lo, hi = self.data.data.plan.train_range
        print(
            f"rank {trainer.global_rank}/{trainer.world_size}: {self.mode}, time steps "
            f"{lo}..{hi} ({self.data.data.report()['train']}), "
            f"losses {[round(v, 4) for v in module.losses]}",
            flush=True,
        )
        trainer.strategy.barrier()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--mode", choices=("full", "partitioned"), default="full")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--input-steps", type=int, default=12)
    parser.add_argument("--horizon", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-memory", type=int, help="bytes a rank may hold (streams beyond)")
    parser.add_argument("--save", help="write the trained parameters here (rank 0)")
    args = parser.parse_args()

    data = StzarrDataModule(
        args.store,
        window={"input_steps": args.input_steps, "horizon": args.horizon},
        mode=args.mode,
        max_memory=args.max_memory,
        batch_size=args.batch_size,
        seed=args.seed,
        max_batches=args.max_batches,
    )
    model = ForecastModule(
        data.build_model("pgt-batched-dcrnn", hidden=args.hidden), data.scaler, lr=args.lr
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        max_epochs=args.epochs,
        use_distributed_sampler=False,  # the loaders already hold each rank's share
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ReportRange(data, args.mode)],
    )
    trainer.fit(model, datamodule=data)
    if args.save and trainer.global_rank == 0:
        torch.save({k: v.detach().clone() for k, v in model.model.state_dict().items()}, args.save)


if __name__ == "__main__":
    main()
