"""stzarr: a Zarr-backed, chunked data engine for training spatiotemporal GNNs.

Data flows one way: source file -> converter -> Zarr store -> train-split statistics ->
window-index plan -> sampler/partitioner -> loader (CPU or device) -> model.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stzarr")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

from stzarr.errors import (
    DistributedError,
    SourceFormatError,
    SpecError,
    StatsError,
    StoreExistsError,
    StoreFormatError,
    StzarrError,
)
from stzarr.store import FORMAT_VERSION, Store, StoreWriter, open_store, write_store

__all__ = [
    "FORMAT_VERSION",
    "DistributedError",
    "SourceFormatError",
    "SpecError",
    "StatsError",
    "Store",
    "StoreExistsError",
    "StoreFormatError",
    "StoreWriter",
    "StzarrError",
    "__version__",
    "open_store",
    "write_store",
]
