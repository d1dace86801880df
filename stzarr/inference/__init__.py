"""Trained models in use: open a checkpoint against a store, evaluate it, write and read
forecasts."""

from stzarr.lazy import attach

__getattr__, __dir__, __all__ = attach(
    globals(),
    {
        "TrainedModel": "stzarr.inference.trained",
        "evaluate": "stzarr.inference.evaluation",
        "open_forecasts": "stzarr.inference.forecasts",
        "open_trained": "stzarr.inference.trained",
        "predict": "stzarr.inference.forecasts",
    },
)
