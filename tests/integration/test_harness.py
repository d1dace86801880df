"""The benchmark harness: fresh-process measurement, failures surfaced, every benchmark imports."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from benchmarks.harness import ROOT, measure

MIB = 2**20
SLACK = MIB  # kernel RSS accounting granularity (see below)


def fill(n_bytes: int) -> int:
    """Hold ``n_bytes`` of written (so resident) memory and count its bytes."""
    buffer = bytearray(b"\x01") * n_bytes
    return buffer.count(1)


def fail(message: str) -> None:
    """Fail with ``message`` on stderr."""
    raise ValueError(message)


def test_measure_reports_the_bytes_a_call_holds_and_its_result() -> None:
    n_bytes = 64 * MIB
    run = measure(fill, n_bytes, interval=0.01)
    assert run.result == n_bytes
    # the kernel batches RSS counters per thread (up to 64 pages each before they are summed),
    # so VmHWM can trail the true peak by a few hundred KiB: well below the 64 MiB measured
    assert run.work_rss_bytes >= n_bytes - SLACK
    assert run.peak_rss_bytes >= run.baseline_rss_bytes + n_bytes - SLACK
    assert run.seconds > 0 and run.rss_trace


def test_a_failing_child_raises_with_its_stderr() -> None:
    with pytest.raises(RuntimeError, match="the child's own words") as error:
        measure(fail, "the child's own words")
    assert "ValueError" in str(error.value)


BENCHMARKS = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for path in (ROOT / "benchmarks").rglob("*.py")
    if path.name != "__init__.py" and "generated" not in path.parts
)


def test_the_benchmarks_are_found() -> None:
    assert Path(ROOT / "benchmarks" / "harness.py").exists()
    assert {"benchmarks.data.loader", "benchmarks.data.memory"} <= set(BENCHMARKS)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_imports_without_running(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__name__ == name
