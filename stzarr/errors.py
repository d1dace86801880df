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


class StoreDamagedError(StoreFormatError):
    """A chunk of a store is missing, truncated or fails its checksum (the store is damaged)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (``timeout``, SLURM, docker stop); handled like Ctrl-C: clean up, exit."""


class StzarrWarning(UserWarning):
    """Something the user should know that does not stop the command (the CLI prints one line)."""
