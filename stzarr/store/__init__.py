"""The Zarr store: its format, reader and writer, integrity manifest, verification, rechunking,
I/O configuration and the lazy train-split statistics. Imports neither torch nor Dask distributed.
"""

from stzarr.lazy import attach

__getattr__, __dir__, __all__ = attach(
    globals(),
    {
        "FORMAT_VERSION": "stzarr.store.format",
        "IOConfig": "stzarr.store.io_config",
        "LayoutAdvice": "stzarr.store.rechunk",
        "Stats": "stzarr.store.stats",
        "Store": "stzarr.store.format",
        "StoreWriter": "stzarr.store.format",
        "VerifyReport": "stzarr.store.verify",
        "active_pipeline": "stzarr.store.io_config",
        "advise_layout": "stzarr.store.rechunk",
        "cache_stats": "stzarr.store.stats",
        "cached_stats": "stzarr.store.stats",
        "compute_stats": "stzarr.store.stats",
        "configure_from_env": "stzarr.store.io_config",
        "configure_io": "stzarr.store.io_config",
        "open_store": "stzarr.store.format",
        "rechunk_store": "stzarr.store.rechunk",
        "require_stats": "stzarr.store.stats",
        "verify_store": "stzarr.store.verify",
        "write_store": "stzarr.store.format",
    },
)
