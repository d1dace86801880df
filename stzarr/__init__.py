"""stzarr: a Zarr-backed, chunked data engine for training spatiotemporal GNNs.

Data flows one way: source file -> converter -> Zarr store -> train-split statistics ->
window-index plan -> sampler/partitioner -> loader (CPU or device) -> model.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stzarr")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

from stzarr.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from stzarr.config import BatchOptions, RunOptions, SplitSpec, TrainConfig
from stzarr.errors import (
    DistributedError,
    SourceFormatError,
    SpecError,
    StatsError,
    StoreDamagedError,
    StoreExistsError,
    StoreFormatError,
    StzarrError,
    StzarrWarning,
)
from stzarr.evaluation import evaluate
from stzarr.features import time_features
from stzarr.forecasts import open_forecasts, predict
from stzarr.inference import TrainedModel, open_trained
from stzarr.io_config import IOConfig, active_pipeline, configure_from_env, configure_io
from stzarr.launch import RankContext, RankResult, launch, run_from_env
from stzarr.loader import IndexBatchDataset, Loaders, SeriesBatcher, batch_loader, make_loaders
from stzarr.metrics import (
    HistoricalAverage,
    MaskedMetrics,
    evaluate_historical_average,
    fit_historical_average,
    masked_mae,
)
from stzarr.models import MODELS, GraphForecaster, build_model
from stzarr.partition import PartitionPlan, RankPartition, plan_partitions, store_partitions
from stzarr.rank_data import RankData, open_rank_data
from stzarr.rank_plan import MODES, RankPlan, plan_rank
from stzarr.rechunk import LayoutAdvice, advise_layout, rechunk_store
from stzarr.sampler import BatchShuffleSampler, GlobalShuffleSampler, Sampler, WindowShuffleSampler
from stzarr.stats import Stats, cache_stats, cached_stats, compute_stats, require_stats
from stzarr.store import FORMAT_VERSION, Store, StoreWriter, open_store, write_store
from stzarr.stream import StreamingLoader
from stzarr.stream_plan import StreamPlan, plan_stream
from stzarr.train import TrainResult, train
from stzarr.verify import VerifyReport, verify_store
from stzarr.windows import WindowPlan, WindowSpec, make_plan, split_bounds, split_bounds_at

configure_from_env()  # the one place the codec pipeline is chosen (see stzarr.io_config)

__all__ = [
    "FORMAT_VERSION",
    "MODELS",
    "MODES",
    "BatchOptions",
    "BatchShuffleSampler",
    "Checkpoint",
    "DistributedError",
    "GlobalShuffleSampler",
    "GraphForecaster",
    "HistoricalAverage",
    "IOConfig",
    "IndexBatchDataset",
    "LayoutAdvice",
    "Loaders",
    "MaskedMetrics",
    "PartitionPlan",
    "RankContext",
    "RankData",
    "RankPartition",
    "RankPlan",
    "RankResult",
    "RunOptions",
    "Sampler",
    "SeriesBatcher",
    "SourceFormatError",
    "SpecError",
    "SplitSpec",
    "Stats",
    "StatsError",
    "Store",
    "StoreDamagedError",
    "StoreExistsError",
    "StoreFormatError",
    "StoreWriter",
    "StreamPlan",
    "StreamingLoader",
    "StzarrError",
    "StzarrWarning",
    "TrainConfig",
    "TrainResult",
    "TrainedModel",
    "VerifyReport",
    "WindowPlan",
    "WindowShuffleSampler",
    "WindowSpec",
    "__version__",
    "active_pipeline",
    "advise_layout",
    "batch_loader",
    "build_model",
    "cache_stats",
    "cached_stats",
    "compute_stats",
    "configure_io",
    "evaluate",
    "evaluate_historical_average",
    "fit_historical_average",
    "launch",
    "load_checkpoint",
    "make_loaders",
    "make_plan",
    "masked_mae",
    "open_forecasts",
    "open_rank_data",
    "open_store",
    "open_trained",
    "plan_partitions",
    "plan_rank",
    "plan_stream",
    "predict",
    "rechunk_store",
    "require_stats",
    "run_from_env",
    "save_checkpoint",
    "split_bounds",
    "split_bounds_at",
    "store_partitions",
    "time_features",
    "train",
    "verify_store",
    "write_store",
]
