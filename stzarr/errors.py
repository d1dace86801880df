"""Typed errors. The CLI turns any :class:`StzarrError` into one line on stderr and exit code 2."""


class StzarrError(Exception):
    """Base class for every error caused by user input rather than a bug."""


class SourceFormatError(StzarrError):
    """A source file (HDF5, JSON, pickle) is missing, unreadable or not in the expected layout."""


class StoreFormatError(StzarrError):
    """A Zarr store is missing, of another format version, or violates the store contract."""


class StoreExistsError(StzarrError):
    """The destination already exists and overwriting was not asked for."""


class SpecError(StzarrError):
    """A window, split or partition specification cannot be satisfied by the data."""


class StatsError(StzarrError):
    """Statistics cannot be computed (e.g. a feature has no valid reading in the train split)."""


class DistributedError(StzarrError):
    """A distributed run failed (a rank raised, died or timed out)."""
