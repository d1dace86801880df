"""stzarr: a Zarr-backed, chunked data engine for training spatiotemporal GNNs.

Data flows one way, one subpackage per stage::

    source file -> stzarr.converters -> stzarr.store (Zarr store, train-split statistics)
      -> stzarr.plan (windows, samplers, partitions) -> stzarr.data (loaders, CPU or device)
      -> stzarr.training (models, trainer) -> stzarr.inference (evaluate, predict)

Every public name below is importable from ``stzarr`` and is loaded on first use (PEP 562), so
``import stzarr`` is cheap and reading a store imports neither torch nor Dask distributed.
"""

from importlib.metadata import PackageNotFoundError, version

from stzarr.lazy import attach

try:
    __version__ = version("stzarr")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

_EXPORTS = {
    **dict.fromkeys(
        (
            "DistributedError",
            "SourceFormatError",
            "SpecError",
            "StatsError",
            "StoreDamagedError",
            "StoreExistsError",
            "StoreFormatError",
            "StzarrError",
            "StzarrWarning",
        ),
        "stzarr.errors",
    ),
    **dict.fromkeys(
        ("FORMAT_VERSION", "Store", "StoreWriter", "open_store", "write_store"),
        "stzarr.store.format",
    ),
    **dict.fromkeys(
        ("IOConfig", "active_pipeline", "configure_from_env", "configure_io"),
        "stzarr.store.io_config",
    ),
    **dict.fromkeys(("LayoutAdvice", "advise_layout", "rechunk_store"), "stzarr.store.rechunk"),
    **dict.fromkeys(
        ("Stats", "cache_stats", "cached_stats", "compute_stats", "require_stats"),
        "stzarr.store.stats",
    ),
    **dict.fromkeys(("VerifyReport", "verify_store"), "stzarr.store.verify"),
    **dict.fromkeys(
        ("WindowPlan", "WindowSpec", "make_plan", "split_bounds", "split_bounds_at"),
        "stzarr.plan.windows",
    ),
    **dict.fromkeys(
        ("BatchShuffleSampler", "GlobalShuffleSampler", "Sampler", "WindowShuffleSampler"),
        "stzarr.plan.sampler",
    ),
    **dict.fromkeys(
        ("PartitionPlan", "RankPartition", "plan_partitions", "store_partitions"),
        "stzarr.plan.partition",
    ),
    **dict.fromkeys(("MODES", "RankPlan", "plan_rank"), "stzarr.plan.rank"),
    **dict.fromkeys(("StreamPlan", "plan_stream"), "stzarr.plan.stream"),
    "time_features": "stzarr.data.calendar",
    **dict.fromkeys(
        ("IndexBatchDataset", "Loaders", "batch_loader", "make_loaders"), "stzarr.data.loaders"
    ),
    "SeriesBatcher": "stzarr.data.batcher",
    "BatchContract": "stzarr.data.contract",
    "Scaler": "stzarr.data.scaler",
    **dict.fromkeys(("RankData", "open_rank_data"), "stzarr.data.rank"),
    "StreamingLoader": "stzarr.data.streaming",
    **dict.fromkeys(
        ("BatchOptions", "RunOptions", "SplitSpec", "TrainConfig"), "stzarr.training.config"
    ),
    **dict.fromkeys(
        ("Checkpoint", "load_checkpoint", "save_checkpoint"), "stzarr.training.checkpoint"
    ),
    **dict.fromkeys(
        ("RankContext", "RankResult", "launch", "run_from_env"), "stzarr.training.launch"
    ),
    **dict.fromkeys(
        (
            "HistoricalAverage",
            "MaskedMetrics",
            "evaluate_historical_average",
            "fit_historical_average",
            "masked_mae",
        ),
        "stzarr.training.metrics",
    ),
    "MODELS": "stzarr.training.config",
    **dict.fromkeys(("GraphForecaster", "build_model"), "stzarr.training.models"),
    **dict.fromkeys(("TrainResult", "train"), "stzarr.training.train"),
    **dict.fromkeys(("TrainedModel", "open_trained"), "stzarr.inference.trained"),
    "evaluate": "stzarr.inference.evaluation",
    **dict.fromkeys(("open_forecasts", "predict"), "stzarr.inference.forecasts"),
}

__getattr__, __dir__, __all__ = attach(globals(), _EXPORTS)
__all__ = ["__version__", *__all__]
