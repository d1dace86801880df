"""Which codec pipeline decodes Zarr chunks, and with how many threads.

zarr-python's own pipeline (``BatchedCodecPipeline``) runs codecs in Python's asyncio loop with
a thread pool; the ``zarrs`` package (Rust, PyPI ``zarrs``) replaces it with one that decodes
many chunks, and the inner chunks of a shard, in parallel in native threads, straight into the
output buffer: about 1.5-2x the decoded bytes per CPU-second here (``docs/codecs.md``).

``pipeline``:

* ``"auto"`` (default): ``zarrs`` when it is installed (it is a dependency of stzarr), else
  zarr's own;
* ``"zarrs"``: ``zarrs`` (a one-line error when it is not installed);
* ``"zarr"``: zarr-python's ``BatchedCodecPipeline``.

What the choice governs: zarr arrays opened after it (``zarrs`` decodes those it can), and
the bulk reads of a store's ``data`` (:meth:`stzarr.store.format.Store.read`, which loaders,
streaming,
statistics and rechunk use) only in that ``"zarr"`` sends them through one call of zarr's own
pipeline on the checked store. Otherwise (``"auto"``, ``"zarrs"``) they go through stzarr's read
path (:mod:`stzarr.store.reader`: each file read once, its bytes checked and decoded by
``numcodecs``
on ``threads`` threads), chosen by measurement over both pipelines (``docs/codecs.md``).
``zarrs`` 0.2.3 cannot take part in stzarr's reads: it reads only plain local stores, neither
verifies the ``crc32c`` codec of an inner chunk nor tells a missing chunk from the fill value,
so checking before it decodes meant reading every file twice.

Writes always go through zarr's own pipeline (:func:`writing`): ``zarrs`` 0.2.3 never writes a
chunk that holds only the fill value, even with ``write_empty_chunks``, so a store it wrote with
an all-missing chunk would break the contract. Both pipelines write the same bytes otherwise
(``tests/test_io_config.py``), and encoding is the smaller part of a conversion's cost.

The choice is made once per process by :func:`configure_io`: the first store opened calls it
with the environment (:func:`configure_from_env`: ``STZARR_CODEC_PIPELINE``, ``STZARR_IO_THREADS``),
the CLI with ``stzarr --codec-pipeline ... --io-threads ...``, the API with
``stzarr.configure_io(...)``.
It is set in zarr's global configuration, so it applies to arrays opened afterwards; it is also
written back to the environment, so subprocesses (DDP ranks, benchmark children) inherit it.
The pipeline in use is logged (logger ``stzarr.io``, INFO) and returned by
:func:`active_pipeline`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import zarr

from stzarr.errors import StzarrError

PIPELINES = ("auto", "zarrs", "zarr")
DEFAULT_PIPELINE = "auto"
ENV_PIPELINE = "STZARR_CODEC_PIPELINE"
ENV_THREADS = "STZARR_IO_THREADS"
ZARRS_PATH = "zarrs.ZarrsCodecPipeline"
ZARR_PATH = "zarr.core.codec_pipeline.BatchedCodecPipeline"

log = logging.getLogger("stzarr.io")


@dataclass(frozen=True)
class IOConfig:
    """What :func:`configure_io` resolved and set.

    Attributes
    ----------
    requested : str
        ``"auto"``, ``"zarrs"`` or ``"zarr"``.
    pipeline : str
        The pipeline in use: ``"zarrs"`` or ``"zarr"``.
    threads : int or None
        Decode/encode threads (zarr's ``threading.max_workers``, and the threads of one
        :meth:`~stzarr.store.format.Store.read`); None: one per CPU (a read: one more).
    """

    requested: str
    pipeline: str
    threads: int | None

    def describe(self) -> str:
        """One line for logs and benchmark reports."""
        threads = "one per CPU" if self.threads is None else str(self.threads)
        how = "" if self.requested == self.pipeline else f" ({self.requested})"
        return f"codec pipeline {self.pipeline}{how}, {threads} threads"


_active: IOConfig | None = None


def zarrs_available() -> bool:
    """True when the ``zarrs`` package can be imported."""
    return importlib.util.find_spec("zarrs") is not None


def _threads_from_env() -> int | None:
    text = os.environ.get(ENV_THREADS, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise StzarrError(f"{ENV_THREADS}={text!r} is not an integer") from None


def configure_from_env() -> IOConfig:
    """:func:`configure_io` from the environment alone (what the first store opened runs); a
    bad value there warns and falls back to the defaults instead of failing the read."""
    try:
        return configure_io()
    except StzarrError as exc:
        warnings.warn(f"{exc}; using the default codec pipeline", stacklevel=2)
        os.environ.pop(ENV_PIPELINE, None)
        os.environ.pop(ENV_THREADS, None)
        return configure_io(DEFAULT_PIPELINE)


def configure_io(pipeline: str | None = None, threads: int | None = None) -> IOConfig:
    """Choose the codec pipeline and thread count for this process.

    Parameters
    ----------
    pipeline : str, optional
        ``"auto"``, ``"zarrs"`` or ``"zarr"``; default: ``$STZARR_CODEC_PIPELINE`` or ``"auto"``.
    threads : int, optional
        Native codec threads; default: ``$STZARR_IO_THREADS`` or one per CPU.

    Returns
    -------
    IOConfig

    Raises
    ------
    StzarrError
        On an unknown pipeline, a thread count below 1, or ``"zarrs"`` when it is not installed.
    """
    global _active
    requested = (pipeline or os.environ.get(ENV_PIPELINE) or DEFAULT_PIPELINE).strip().lower()
    if requested not in PIPELINES:
        raise StzarrError(
            f"unknown codec pipeline {requested!r} (choose from {', '.join(PIPELINES)})"
        )
    threads = _threads_from_env() if threads is None else int(threads)
    if threads is not None and threads < 1:
        raise StzarrError(f"io threads must be >= 1, got {threads}")
    if requested == "zarrs" and not zarrs_available():
        raise StzarrError("codec pipeline 'zarrs' requested but the zarrs package is not installed")
    use = "zarrs" if requested == "zarrs" or (requested == "auto" and zarrs_available()) else "zarr"
    settings: dict[str, object] = {
        "codec_pipeline.path": ZARRS_PATH if use == "zarrs" else ZARR_PATH,
        "threading.max_workers": threads,
    }
    if use == "zarrs":
        settings["codec_pipeline.strict"] = False  # fall back per array, never fail a read
    zarr.config.set(settings)
    os.environ[ENV_PIPELINE] = requested
    if threads is None:
        os.environ.pop(ENV_THREADS, None)
    else:
        os.environ[ENV_THREADS] = str(threads)
    _active = IOConfig(requested, use, threads)
    log.info(_active.describe())
    return _active


def pipeline_list(text: str) -> list[str]:
    """Parse a comma-separated list of pipelines (a command-line option's ``type``)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in PIPELINES]
    if unknown or not names:
        raise ValueError(f"codec pipelines must be among {', '.join(PIPELINES)}: {text!r}")
    return names


def active_pipeline() -> IOConfig:
    """The configuration in force (configuring from the environment if nothing was set)."""
    return _active if _active is not None else configure_from_env()


@contextmanager
def writing() -> Iterator[None]:
    """Arrays opened inside this block encode through zarr's own pipeline, whatever the choice.

    A zarr array keeps the pipeline it was opened with, so writers open their arrays here
    (``zarrs`` skips all-fill chunks; see the module docstring).
    """
    with zarr.config.set({"codec_pipeline.path": ZARR_PATH}):
        yield
