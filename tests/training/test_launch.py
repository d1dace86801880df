import json
import os
import subprocess
import sys
import textwrap

import cloudpickle
import psutil
import pytest
import torch
import torch.distributed as dist

from stzarr.errors import DistributedError, SpecError
from stzarr.training.launch import RankContext, default_backend, launch, under_torchrun

# the rank functions below are shipped to Dask workers by value (tests/ is not importable there)
cloudpickle.register_pickle_by_value(sys.modules[__name__])

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")


@pytest.fixture(autouse=True)
def no_torchrun_env(monkeypatch):
    for key in TORCHRUN_ENV:
        monkeypatch.delenv(key, raising=False)


def report(ctx: RankContext, offset: float) -> dict:
    total = torch.tensor([ctx.rank + offset])
    dist.all_reduce(total)
    return {
        "rank": ctx.rank,
        "world_size": ctx.world_size,
        "backend": ctx.backend,
        "device": str(ctx.device),
        "sum": total.item(),
        "pid": os.getpid(),
        "env": {k: os.environ.get(k) for k in TORCHRUN_ENV},
    }


def raise_on_rank_1(ctx: RankContext) -> int:
    if ctx.rank == 1:
        raise ValueError("bad batch on purpose")
    dist.barrier()
    return ctx.rank


def die_on_rank_1(ctx: RankContext) -> int:
    if ctx.rank == 1:
        os._exit(7)
    dist.barrier()
    return ctx.rank


def check_results(results, world_size, offset):
    assert [r.rank for r in results] == list(range(world_size))
    expected_sum = sum(range(world_size)) + world_size * offset
    assert len({r.value["pid"] for r in results}) == world_size  # one process per rank
    for r in results:
        v = r.value
        assert (v["rank"], v["world_size"], v["sum"]) == (r.rank, world_size, expected_sum)
        assert v["backend"] == default_backend()
        assert v["env"]["RANK"] == str(r.rank) and v["env"]["WORLD_SIZE"] == str(world_size)
        assert v["env"]["MASTER_ADDR"] and int(v["env"]["MASTER_PORT"]) > 0
        assert r.peak_rss_bytes >= r.start_rss_bytes > 0


def workers_alive() -> list[psutil.Process]:
    """Child processes other than multiprocessing's resource tracker (one per parent)."""
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if p.is_running()
        and p.status() != psutil.STATUS_ZOMBIE
        and "resource_tracker" not in " ".join(p.cmdline())
    ]


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield cluster, client


@pytest.mark.slow
def test_launch_on_an_existing_cluster_by_address_and_scheduler_file(cluster, tmp_path):
    local, client = cluster
    results = launch(report, 2, 1.5, scheduler_address=local.scheduler_address, timeout=60)
    check_results(results, 2, 1.5)
    # what `dask scheduler --scheduler-file` writes, reduced to what clients read (the address);
    # Client.write_scheduler_file can fail on worker metrics with tuple keys after tasks ran
    scheduler_file = tmp_path / "scheduler.json"
    scheduler_file.write_text(json.dumps({"type": "Scheduler", "address": local.scheduler_address}))
    results = launch(report, 1, 0.0, scheduler_file=scheduler_file, timeout=60)
    check_results(results, 1, 0.0)
    with pytest.raises(DistributedError, match="has 2 worker"):
        launch(report, 3, 0.0, scheduler_address=local.scheduler_address, timeout=3)
    assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2  # the cluster is left as is


@pytest.mark.slow
@pytest.mark.parametrize(
    "fn, what",
    [(raise_on_rank_1, "raised ValueError: bad batch on purpose"), (die_on_rank_1, "died")],
)
def test_failing_rank_ends_the_run_with_an_error_naming_it(fn, what):
    before = {p.pid for p in workers_alive()}
    # the rank's own failure ends the run, not the overall timeout ("timed out waiting")
    with pytest.raises(DistributedError, match=f"rank 1.*{what}"):
        launch(fn, 2, timeout=600, pg_timeout=20)
    # the embedded cluster is gone: no orphaned workers
    assert {p.pid for p in workers_alive()} <= before


@pytest.mark.slow
def test_launch_under_torchrun_uses_env_init_without_dask(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent("""
        import json, os
        import torch, torch.distributed as dist
        from stzarr.training.launch import launch

        def fn(ctx):
            t = torch.tensor([ctx.rank + 1.0])
            dist.all_reduce(t)
            return [ctx.rank, ctx.world_size, ctx.backend, t.item(), os.getpid()]

        if __name__ == "__main__":
            results = launch(fn, 2)
            if os.environ["RANK"] == "0":
                print("RESULT " + json.dumps([r.value for r in results]))
    """)
    )
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    values = json.loads(line.removeprefix("RESULT "))
    assert [v[:4] for v in values] == [[0, 2, "gloo", 3.0], [1, 2, "gloo", 3.0]]
    assert values[0][4] != values[1][4]


def test_torchrun_detection_and_argument_errors(monkeypatch, tmp_path):
    assert not under_torchrun()
    with pytest.raises(SpecError, match="world_size"):
        launch(report, 0)
    with pytest.raises(SpecError, match="no Dask scheduler file"):
        launch(report, 2, scheduler_file=tmp_path / "missing.json")
    with pytest.raises(SpecError, match="not both"):
        launch(report, 2, scheduler_file="f.json", scheduler_address="tcp://h:1")
    for key, value in {
        "RANK": "0",
        "WORLD_SIZE": "4",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "1",
    }.items():
        monkeypatch.setenv(key, value)
    assert under_torchrun()
    with pytest.raises(SpecError, match="WORLD_SIZE=4"):
        launch(report, 2)


def device_sum(ctx: RankContext) -> tuple[str, str, float]:
    total = torch.ones(1, device=ctx.device)
    dist.all_reduce(total)
    return ctx.backend, str(total.device), total.item()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_launch_picks_nccl_and_one_gpu_per_rank_with_cuda():
    world = min(2, torch.cuda.device_count())
    results = launch(device_sum, world, timeout=120)
    assert [r.value for r in results] == [("nccl", f"cuda:{r}", float(world)) for r in range(world)]


def malloc_trim_setting(ctx: RankContext) -> str | None:
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_embedded_cluster_keeps_glibcs_default_heap_trimming(monkeypatch):
    """Dask's nannies would start workers with MALLOC_TRIM_THRESHOLD_=65536, under which a
    training step ran 3.5x slower than in a plain process, and leave it in this process's
    environment; stzarr's own cluster starts its ranks without it, and leaves Dask's
    configuration and this process's environment as they were."""
    import dask
    import distributed  # noqa: F401  (loads Dask's distributed configuration)

    from stzarr.training.launch import NO_TRIM, TRIM_ENV

    assert dask.config.get(NO_TRIM) is not None  # what Dask would do
    monkeypatch.setenv(TRIM_ENV, "65536")  # as an earlier Dask nanny in this process leaves it
    results = launch(malloc_trim_setting, 2)
    assert [r.value for r in results] == [None, None]
    assert dask.config.get(NO_TRIM) is not None
    assert os.environ[TRIM_ENV] == "65536"
