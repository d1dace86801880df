"""Executing plans: the batch contract, scaler, batch buffers, gather, batch building (host or
device), loaders, streaming, host-to-device transfer, a rank's data and the PyTorch Geometric
Temporal drop-in.
"""

from stzarr.lazy import attach

__getattr__, __dir__, __all__ = attach(
    globals(),
    {
        "BatchContract": "stzarr.data.contract",
        "IndexBatchDataset": "stzarr.data.loaders",
        "Loaders": "stzarr.data.loaders",
        "RankData": "stzarr.data.rank",
        "Scaler": "stzarr.data.scaler",
        "SeriesBatcher": "stzarr.data.batcher",
        "StreamingLoader": "stzarr.data.streaming",
        "batch_loader": "stzarr.data.loaders",
        "make_loaders": "stzarr.data.loaders",
        "open_rank_data": "stzarr.data.rank",
        "time_features": "stzarr.data.calendar",
    },
)
