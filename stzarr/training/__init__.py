"""Training: configuration, the trainer and its callbacks, models (DCRNN as released and PGT
layers), metrics and baselines, and the Dask-distributed launch of DDP ranks.
"""

from stzarr.lazy import attach

__getattr__, __dir__, __all__ = attach(
    globals(),
    {
        "BatchOptions": "stzarr.training.config",
        "Checkpoint": "stzarr.training.checkpoint",
        "GraphForecaster": "stzarr.training.models",
        "HistoricalAverage": "stzarr.training.metrics",
        "MODELS": "stzarr.training.config",
        "MaskedMetrics": "stzarr.training.metrics",
        "RankContext": "stzarr.training.launch",
        "RankResult": "stzarr.training.launch",
        "RunOptions": "stzarr.training.config",
        "SplitSpec": "stzarr.training.config",
        "TrainConfig": "stzarr.training.config",
        "TrainResult": "stzarr.training.train",
        "build_model": "stzarr.training.models",
        "evaluate_historical_average": "stzarr.training.metrics",
        "fit_historical_average": "stzarr.training.metrics",
        "launch": "stzarr.training.launch",
        "load_checkpoint": "stzarr.training.checkpoint",
        "masked_mae": "stzarr.training.metrics",
        "run_from_env": "stzarr.training.launch",
        "save_checkpoint": "stzarr.training.checkpoint",
        "train": "stzarr.training.train",
    },
)
