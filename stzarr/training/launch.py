"""Run a function as PyTorch DDP ranks on Dask workers, or under ``torchrun``.

:func:`launch` runs ``fn(ctx, *args, **kwargs)`` once per rank, one rank per Dask worker:

* by default on an embedded ``distributed.LocalCluster`` (``world_size`` worker processes, one
  thread each), closed when the run ends, so no process outlives it;
* or on an existing cluster, as HPC jobs start one (``dask scheduler --scheduler-file F`` then
  ``dask worker --scheduler-file F`` on every node): pass ``scheduler_file`` or
  ``scheduler_address``; ``world_size`` distinct workers are picked, grouped by host.

Each rank gets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` (rank 0's host) and
``MASTER_PORT`` (a free port found on rank 0's host) for the duration of the call, joins the
process group (``nccl`` with CUDA, ``gloo`` otherwise) with a timeout, runs ``fn`` while its peak
RSS is sampled (:class:`stzarr.monitor.MemorySampler`), and leaves the group. The launcher returns
one :class:`RankResult` per rank, in rank order.

Failure: the first rank that raises, or whose worker dies, ends the run with a
:class:`~stzarr.errors.DistributedError` naming the rank; so does the overall ``timeout``. Ranks
blocked in a collective are released by the process-group timeout, and the embedded cluster (or,
on an existing cluster, the workers used) is shut down or restarted, so nothing hangs.

Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` in the environment) :func:`launch`
needs no Dask: it calls :func:`run_from_env`, which runs this process's rank with ``env://``
initialisation and gathers every rank's result.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from stzarr.errors import DistributedError, SpecError
from stzarr.monitor import MemorySampler, current_rss

TRIM_ENV = "MALLOC_TRIM_THRESHOLD_"
# the Dask setting that starts workers with MALLOC_TRIM_THRESHOLD_=65536
NO_TRIM = f"distributed.nanny.pre-spawn-environ.{TRIM_ENV}"

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
POLL_S = 0.1  # seconds between looks at the ranks' futures
LIVENESS_S = 1.0  # seconds between asking the scheduler which workers are alive


@dataclass(frozen=True)
class RankContext:
    """What a rank knows about itself; the first argument of the launched function.

    Attributes
    ----------
    rank, world_size, local_rank : int
        Global rank, number of ranks, rank among those on the same host.
    device : torch.device
        The rank's device (``cuda:local_rank`` with ``nccl``, else the CPU).
    backend : str
        ``"nccl"`` or ``"gloo"``.
    host : str
        Host name or address of the rank.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    host: str

    @property
    def is_main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0


@dataclass(frozen=True)
class RankResult:
    """One rank's outcome.

    Attributes
    ----------
    rank : int
    value : Any
        What the function returned.
    peak_rss_bytes : int
        Peak resident set size of the rank's process while it ran.
    start_rss_bytes : int
        Resident set size when the rank started (the worker's baseline).
    wall_s : float
        Seconds from joining the process group to leaving it.
    host : str
    """

    rank: int
    value: Any
    peak_rss_bytes: int
    start_rss_bytes: int
    wall_s: float
    host: str


class RankFailure(DistributedError):
    """Raised by a rank whose function raised: which rank, when (epoch seconds), what, and the
    formatted traceback. The launcher reports the earliest failure (later ones are usually
    peers losing their connection to it)."""

    def __init__(self, rank: int, when: float, error: str, remote_traceback: str = "") -> None:
        super().__init__(rank, when, error, remote_traceback)
        self.rank = rank
        self.when = when
        self.error = error
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        return f"rank {self.rank} raised {self.error}"


def default_backend() -> str:
    """``"nccl"`` when CUDA and NCCL are available, else ``"gloo"``."""
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def _device(backend: str, local_rank: int) -> torch.device:
    if backend == "nccl":
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextmanager
def _process_group(ctx: RankContext, pg_timeout: float) -> Iterator[None]:
    """Join the process group (``env://``: address and port from the environment), then leave."""
    dist.init_process_group(
        ctx.backend,
        init_method="env://",
        rank=ctx.rank,
        world_size=ctx.world_size,
        timeout=timedelta(seconds=pg_timeout),
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def _measured(
    fn: Callable[..., Any],
    ctx: RankContext,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    interval: float,
) -> RankResult:
    """Run ``fn`` while sampling this process's RSS."""
    start_rss = current_rss()
    with MemorySampler(interval=interval) as memory:
        t0 = time.perf_counter()
        try:
            value = fn(ctx, *args, **kwargs)
        except Exception as exc:  # before leaving the group, so peers fail after this rank
            raise RankFailure(
                ctx.rank, time.time(), f"{type(exc).__name__}: {exc}", traceback.format_exc()
            ) from None
        wall = time.perf_counter() - t0
    return RankResult(ctx.rank, value, memory.peak_bytes, start_rss, wall, ctx.host)


def _dask_rank(
    fn: Callable[..., Any],
    rank: int,
    world_size: int,
    local_rank: int,
    master: tuple[str, int],
    backend: str,
    pg_timeout: float,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    interval: float,
) -> RankResult:
    """The task each Dask worker runs for its rank."""
    env = {
        "RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "LOCAL_RANK": str(local_rank),
        "MASTER_ADDR": master[0],
        "MASTER_PORT": str(master[1]),
    }
    with _environ(env):
        ctx = RankContext(
            rank,
            world_size,
            local_rank,
            _device(backend, local_rank),
            backend,
            socket.gethostname(),
        )
        with _process_group(ctx, pg_timeout):
            return _measured(fn, ctx, args, kwargs, interval)


def _free_port() -> int:
    """A TCP port that is free on this host right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def under_torchrun() -> bool:
    """True when the environment describes a rank started by ``torchrun`` (or a batch script)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def run_from_env(
    fn: Callable[..., Any],
    *args: Any,
    backend: str | None = None,
    pg_timeout: float = 300.0,
    memory_interval: float = 0.05,
    **kwargs: Any,
) -> list[RankResult]:
    """Run this process's rank of ``fn`` with ``env://`` initialisation (e.g. under torchrun).

    Returns every rank's :class:`RankResult` (gathered over the process group, so each rank gets
    the full list). A rank that raises re-raises a :class:`DistributedError` naming it; torchrun
    then stops the other ranks.
    """
    try:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
    except (KeyError, ValueError) as exc:
        raise SpecError(f"RANK/WORLD_SIZE are not integers in the environment ({exc})") from None
    backend = backend or default_backend()
    ctx = RankContext(
        rank, world_size, local_rank, _device(backend, local_rank), backend, socket.gethostname()
    )

    try:
        with _process_group(ctx, pg_timeout):
            mine = _measured(fn, ctx, args, kwargs, memory_interval)
            gathered: list[Any] = [None] * world_size
            dist.all_gather_object(gathered, mine)
    except RankFailure:
        raise
    except Exception as exc:
        raise DistributedError(f"rank {rank} raised {type(exc).__name__}: {exc}") from exc
    return gathered


@contextmanager
def _glibc_heap_trimming() -> Iterator[None]:
    """Start Dask workers with glibc's own heap trimming.

    Dask's nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which makes glibc return
    every freed block above 64 KiB to the kernel: each of the many large temporaries of a
    training step is then a fresh mmap with its page faults, and a step of PGT's BatchedDCRNN
    ran 3.5x slower in a worker than in a plain process (5.6 vs 1.6 s). A nanny also writes the
    variable into this process's environment, where later workers would inherit it; so, while
    the workers start, Dask's setting is off and the variable is out of the environment (it is
    put back afterwards).
    """
    import dask

    saved = os.environ.pop(TRIM_ENV, None)
    try:
        with dask.config.set({NO_TRIM: None}):
            yield
    finally:
        if saved is not None:
            os.environ[TRIM_ENV] = saved


def launch(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    scheduler_file: str | os.PathLike[str] | None = None,
    scheduler_address: str | None = None,
    timeout: float = 3600.0,
    pg_timeout: float = 300.0,
    backend: str | None = None,
    memory_interval: float = 0.05,
    **kwargs: Any,
) -> list[RankResult]:
    """Run ``fn(ctx, *args, **kwargs)`` as ``world_size`` DDP ranks and collect their results.

    Parameters
    ----------
    fn : callable
        Module-level function (pickled to the workers); first argument a :class:`RankContext`.
    world_size : int
        Number of ranks (one per Dask worker).
    *args, **kwargs
        Passed to ``fn`` on every rank (keyword names of this function are not forwarded).
    scheduler_file, scheduler_address : optional
        Use an existing Dask cluster instead of an embedded ``LocalCluster``.
    timeout : float
        Seconds the whole run may take (including waiting for workers) before it is abandoned.
    pg_timeout : float
        Process-group timeout in seconds: a collective waiting longer on a peer fails.
    backend : str, optional
        ``"nccl"`` or ``"gloo"`` (default: :func:`default_backend` on the workers' side).
    memory_interval : float
        Seconds between RSS samples.

    Returns
    -------
    list of RankResult
        In rank order.

    Raises
    ------
    DistributedError
        When a rank raises, its worker dies, or the run exceeds ``timeout``.
    """
    if world_size < 1:
        raise SpecError(f"world_size must be >= 1, got {world_size}")
    if scheduler_file is not None and scheduler_address is not None:
        raise SpecError("give a scheduler file or a scheduler address, not both")
    if scheduler_file is None and scheduler_address is None and under_torchrun():
        if int(os.environ["WORLD_SIZE"]) != world_size:
            raise SpecError(
                f"launch(world_size={world_size}) under torchrun with WORLD_SIZE="
                f"{os.environ['WORLD_SIZE']}"
            )
        return run_from_env(
            fn,
            *args,
            backend=backend,
            pg_timeout=pg_timeout,
            memory_interval=memory_interval,
            **kwargs,
        )

    from distributed import Client, LocalCluster

    deadline = time.monotonic() + timeout
    cluster = None
    client = None
    try:
        if scheduler_file is not None or scheduler_address is not None:
            client = _connect(Client, scheduler_file, scheduler_address, min(timeout, 60.0))
        else:
            with _glibc_heap_trimming():
                cluster = LocalCluster(
                    n_workers=world_size,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                    silence_logs=logging.ERROR,
                )
            client = Client(cluster)
        return _run_on_dask(
            client,
            fn,
            world_size,
            args,
            kwargs,
            deadline=deadline,
            pg_timeout=pg_timeout,
            backend=backend,
            interval=memory_interval,
            own_cluster=cluster is not None,
        )
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


def _connect(
    client_class: Any,
    scheduler_file: str | os.PathLike[str] | None,
    scheduler_address: str | None,
    timeout: float,
) -> Any:
    """A client of an existing cluster, or a one-line error saying why there is none."""
    if scheduler_file is not None and not Path(scheduler_file).is_file():
        raise SpecError(f"no Dask scheduler file at {os.fspath(scheduler_file)}")
    where = os.fspath(scheduler_file) if scheduler_file is not None else scheduler_address
    try:
        if scheduler_file is not None:
            return client_class(scheduler_file=os.fspath(scheduler_file), timeout=timeout)
        return client_class(scheduler_address, timeout=timeout)
    except (OSError, ValueError) as exc:
        raise DistributedError(f"cannot connect to the Dask scheduler of {where}: {exc}") from None


def _workers(client: Any) -> dict[str, Any]:
    """Every worker's info, asked of the scheduler now (``Client.scheduler_info`` returns a cache
    that the client's periodic update may replace by one without workers)."""
    return client.sync(client.scheduler.identity, n_workers=-1)["workers"]


def _pick_workers(client: Any, world_size: int, deadline: float) -> list[tuple[str, str]]:
    """``world_size`` distinct workers as ``(address, host)``, grouped by host."""
    try:
        client.wait_for_workers(world_size, timeout=max(1.0, deadline - time.monotonic()))
    except TimeoutError:
        have = len(_workers(client))
        raise DistributedError(
            f"the cluster has {have} worker(s); {world_size} ranks need {world_size}"
        ) from None
    workers = _workers(client)
    chosen = sorted(workers.items(), key=lambda kv: (kv[1]["host"], str(kv[1].get("name")), kv[0]))
    return [(addr, info["host"]) for addr, info in chosen[:world_size]]


def _run_on_dask(
    client: Any,
    fn: Callable[..., Any],
    world_size: int,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    deadline: float,
    pg_timeout: float,
    backend: str | None,
    interval: float,
    own_cluster: bool,
) -> list[RankResult]:
    workers = _pick_workers(client, world_size, deadline)
    addrs = [addr for addr, _ in workers]
    first = addrs[0]
    port = client.submit(_free_port, workers=[first], pure=False).result(
        timeout=max(1.0, deadline - time.monotonic())
    )
    if backend is None:
        backend = client.submit(default_backend, workers=[first], pure=False).result()
    master = (workers[0][1], int(port))
    run_id = uuid.uuid4().hex[:8]
    local_ranks: dict[str, int] = {}
    futures = []
    for rank, (addr, host) in enumerate(workers):
        local_rank = local_ranks.get(host, 0)
        local_ranks[host] = local_rank + 1
        futures.append(
            client.submit(
                _dask_rank,
                fn,
                rank,
                world_size,
                local_rank,
                master,
                backend,
                pg_timeout,
                args,
                kwargs,
                interval,
                key=f"stzarr-rank-{rank}-{run_id}",
                workers=[addr],
                allow_other_workers=False,
                pure=False,
                retries=0,
            )
        )
    try:
        return _collect(client, futures, addrs, deadline)
    except BaseException:
        client.cancel(futures, force=True)
        if not own_cluster:  # free the workers of ranks stuck in a collective (best effort)
            with suppress(Exception):
                client.restart_workers(addrs, timeout=60, raise_for_error=False)
        raise


def _collect(
    client: Any, futures: list[Any], addrs: list[str], deadline: float
) -> list[RankResult]:
    """Wait for every rank; raise on the first failure, a lost worker, or the deadline."""
    results: dict[int, RankResult] = {}
    next_check = time.monotonic() + LIVENESS_S
    while len(results) < len(futures):
        failed = False
        for rank, future in enumerate(futures):
            if rank not in results and future.status == "finished":
                results[rank] = future.result()
            failed |= future.status in ("error", "cancelled", "lost")
        if not failed and time.monotonic() > next_check:
            failed = bool(_dead_ranks(client, addrs, results))
            next_check = time.monotonic() + LIVENESS_S
        if failed:
            _raise_first_failure(client, futures, addrs, results)
        if len(results) == len(futures):
            break
        if time.monotonic() > deadline:
            waiting = sorted(set(range(len(futures))) - set(results))
            raise DistributedError(f"timed out waiting for rank(s) {waiting}")
        time.sleep(POLL_S)
    return [results[r] for r in range(len(futures))]


def _dead_ranks(client: Any, addrs: list[str], results: dict[int, RankResult]) -> list[int]:
    """Unfinished ranks whose worker has left the cluster."""
    alive = _workers(client)
    return [r for r, addr in enumerate(addrs) if r not in results and addr not in alive]


def _raise_first_failure(
    client: Any,
    futures: list[Any],
    addrs: list[str],
    results: dict[int, RankResult],
    grace: float = 1.0,
) -> None:
    """Raise a DistributedError for the rank that failed first.

    Peers of a failed rank fail shortly after it (connection closed), so everyone gets ``grace``
    seconds to report; then a rank whose worker died is named first (it cannot report a time),
    else the earliest :class:`RankFailure`.
    """
    end = time.monotonic() + grace
    while time.monotonic() < end and any(f.status == "pending" for f in futures):
        time.sleep(POLL_S)
    dead = _dead_ranks(client, addrs, results)
    if dead:
        raise DistributedError(
            f"rank {dead[0]}: its worker {addrs[dead[0]]} died"
            + (f" (as did the workers of rank(s) {dead[1:]})" if dead[1:] else "")
        )
    failures: list[tuple[float, int, BaseException | None]] = []
    for rank, future in enumerate(futures):
        if future.status == "error":
            exc = future.exception()
            when = exc.when if isinstance(exc, RankFailure) else float("inf")
            failures.append((when, rank, exc))
        elif future.status in ("cancelled", "lost"):
            failures.append((float("inf"), rank, None))
    if not failures:  # nothing failed after all: keep waiting
        return
    when, rank, exc = min(failures, key=lambda item: (item[0], item[1]))
    others = sorted(r for _, r, _ in failures if r != rank)
    also = f" (rank(s) {others} failed after it)" if others else ""
    if exc is None:
        raise DistributedError(f"rank {rank} (worker {addrs[rank]}) was lost{also}")
    what = exc.error if isinstance(exc, RankFailure) else f"{type(exc).__name__}: {exc}"
    error = DistributedError(f"rank {rank} (worker {addrs[rank]}) raised {what}{also}")
    if isinstance(exc, RankFailure) and exc.remote_traceback:
        error.add_note(f"rank {rank} traceback:\n{exc.remote_traceback}")
    raise error from exc
