"""PyTorch Geometric Temporal drop-in: PGT-I's chickenpox DCRNN script with one changed call.

PGT-I's ``examples/indexBatching/DCRNN/chicken_pox_main.py`` builds its loaders with::

    loader = ChickenpoxDatasetLoader(index=True)
    train_dataloader, val_dataloader, test_dataloader, edges, edge_weights = \\
        loader.get_index_dataset(batch_size=batch_size)

With stzarr the data comes from a Zarr store (here converted from the real ``chickenpox.json`` in
``../shared/data``) and the one changed call is::

    train_dataloader, val_dataloader, test_dataloader, edges, edge_weights, means, stds = \\
        get_index_dataset(store, batch_size=batch_size, lags=4)

Everything else (PGT's ``BatchedDCRNN(1, 1, K=3)``, Adam at lr 0.001, the masked-MAE loop over
``(x, y)`` batches shaped ``(b, lags, n, f)``, de-standardised with ``means``/``stds``) is PGT-I's
loop.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from stzarr.converters import convert
from stzarr.data.pgt import get_index_dataset
from stzarr.training.pgt_compat import import_pgt

DCRNN = import_pgt("torch_geometric_temporal.nn.recurrent").BatchedDCRNN

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "chickenpox.json"


def masked_mae_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PGT-I's loss: MAE over targets that are not NaN (chickenpox stores NaN for missing)."""
    mask = ~torch.isnan(target)
    return (pred - target.nan_to_num()).abs().mul(mask).sum() / mask.sum().clamp(min=1)


@torch.no_grad()
def evaluate(model, loader, edge_index, edge_weight, means, stds) -> float:
    """Mean masked MAE over the batches of ``loader`` (PGT-I's validation loop)."""
    model.eval()
    total = 0.0
    for x_batch, y_batch in loader:
        outputs = model(x_batch.to(edge_index.device), edge_index, edge_weight)
        total += masked_mae_loss(
            outputs * stds + means, y_batch.to(edge_index.device) * stds + means
        ).item()
    model.train()
    return total / len(loader)


def main() -> None:
    parser = argparse.ArgumentParser(description="PGT-I chickenpox DCRNN on a stzarr store")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "demo-output")
    args = parser.parse_args()
    store = args.out / "chickenpox.zarr"
    if not store.exists():
        args.out.mkdir(parents=True, exist_ok=True)
        convert(SOURCE, store, progress=False)

    # the one changed call (PGT: ChickenpoxDatasetLoader(index=True).get_index_dataset(...))
    train_dataloader, val_dataloader, test_dataloader, edges, edge_weights, means, stds = (
        get_index_dataset(store, batch_size=args.batch_size, lags=4, shuffle=True)
    )

    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    edge_index, edge_weight = edges.to(device), edge_weights.to(device)
    means, stds = means.to(device), stds.to(device)  # loss on de-standardised values, as PGT-I
    torch.manual_seed(0)
    model = DCRNN(1, 1, K=3).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    for epoch in range(args.epochs):
        model.train()
        train_loss = 0.0
        for x_batch, y_batch in train_dataloader:
            outputs = model(x_batch.to(device), edge_index, edge_weight)
            loss = masked_mae_loss(outputs * stds + means, y_batch.to(device) * stds + means)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            train_loss += loss.item()
        print(
            f"Epoch {epoch + 1}/{args.epochs}, Train Loss: "
            f"{train_loss / len(train_dataloader):.4f}, "
            f"Val Loss: {evaluate(model, val_dataloader, edge_index, edge_weight, means, stds):.4f}"
        )
    test = evaluate(model, test_dataloader, edge_index, edge_weight, means, stds)
    print(f"Test Loss: {test:.4f}")


if __name__ == "__main__":
    main()
