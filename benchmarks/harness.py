"""The one benchmark harness: each measurement in a fresh interpreter, its RSS sampled, results
written as JSON and drawn as plots.

A benchmark is then a short declaration: module-level functions that do one measured thing and
return plain data, and a ``main`` that runs each with :func:`measure` and writes the report with
:func:`write_report`::

    from harness import measure, write_report

    def read_all(path: str) -> dict:
        ...
        return {"bytes": n}

    if __name__ == "__main__":
        run = measure(read_all, "/data/store.zarr")   # a fresh process, RSS sampled at 20 Hz
        write_report("docs/results/x.json", {"read": run.as_dict()})

``measure`` runs ``python benchmarks/harness.py --child FILE FUNCTION ARGS`` so that peaks never
mix (a child's ``VmHWM`` covers it alone: ``ru_maxrss`` would carry over the parent's across
``exec``), and the child's imports count in its baseline, not in the measured work.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
GB = 1e9
MARK = "HARNESS-RESULT "


@dataclass
class Measurement:
    """One measured call.

    Attributes
    ----------
    seconds : float
        Wall time of the call (imports excluded).
    peak_rss_bytes : int
        The child's high-water RSS (``VmHWM``), imports included.
    baseline_rss_bytes : int
        RSS after imports, before the call.
    sampled_peak_rss_bytes : int
        Largest RSS sampled during the call.
    rss_trace : list of (float, int)
        ``(seconds since the call began, RSS bytes)`` samples.
    result : Any
        What the function returned (plain data).
    """

    seconds: float
    peak_rss_bytes: int
    baseline_rss_bytes: int
    sampled_peak_rss_bytes: int
    rss_trace: list[tuple[float, int]] = field(repr=False)
    result: Any

    @property
    def work_rss_bytes(self) -> int:
        """Peak RSS above the baseline: what the call itself held."""
        return self.peak_rss_bytes - self.baseline_rss_bytes

    def as_dict(self, trace: bool = False) -> dict[str, Any]:
        """Plain data for a report (the RSS trace only when asked: it is long)."""
        out = asdict(self)
        if not trace:
            out.pop("rss_trace")
        return out


def high_water_rss() -> int:
    """This process's peak RSS in bytes (``VmHWM`` from ``/proc``; ``ru_maxrss`` elsewhere)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def machine(note: str = "") -> dict[str, Any]:
    """What the numbers were measured on, and the load when they were."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": load,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "note": note,
    }


def measure(
    fn: Callable[..., Any],
    *args: Any,
    env: Mapping[str, str] | None = None,
    interval: float = 0.05,
    timeout: float | None = None,
    **kwargs: Any,
) -> Measurement:
    """Run ``fn(*args, **kwargs)`` in a fresh interpreter and measure it.

    Parameters
    ----------
    fn : callable
        A module-level function of a file under ``benchmarks/`` (found again by the child by
        file and name); arguments and result must be JSON data.
    env : mapping, optional
        Extra environment variables for the child.
    interval : float
        Seconds between RSS samples.
    timeout : float, optional
        Seconds before the child is killed.

    Raises
    ------
    RuntimeError
        When the child fails: its last lines of stderr are in the message.
    """
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(Path(inspect.getfile(fn)).resolve()),
        fn.__name__,
        json.dumps({"args": list(args), "kwargs": kwargs, "interval": interval}),
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{fn.__name__} failed (exit {done.returncode}):\n{tail}")
    data = json.loads(lines[-1].removeprefix(MARK))
    data["rss_trace"] = [tuple(sample) for sample in data["rss_trace"]]
    return Measurement(**data)


def _child(file: str, name: str, payload: str) -> None:
    sys.path[:0] = [str(Path(file).parent), str(ROOT)]  # the benchmark's siblings, ``benchmarks.*``
    spec = importlib.util.spec_from_file_location(Path(file).stem, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    call = json.loads(payload)

    from stzarr.monitor import MemorySampler, current_rss

    baseline = current_rss()
    start = time.perf_counter()
    with MemorySampler(interval=call["interval"]) as sampler:
        result = getattr(module, name)(*call["args"], **call["kwargs"])
    seconds = time.perf_counter() - start
    out = Measurement(
        seconds=seconds,
        peak_rss_bytes=high_water_rss(),
        baseline_rss_bytes=baseline,
        sampled_peak_rss_bytes=sampler.peak_bytes,
        rss_trace=sampler.trace,
        result=result,
    )
    print(MARK + json.dumps(asdict(out)), flush=True)


def write_report(path: str | os.PathLike[str], report: Mapping[str, Any]) -> Path:
    """Write ``report`` as indented JSON (creating folders) and say where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=_plain) + "\n")
    print(f"wrote {out}")
    return out


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON data")


def plot_lines(
    path: str | os.PathLike[str],
    lines: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    hlines: Mapping[str, float] | None = None,
) -> Path:
    """One figure of labelled ``(x, y)`` lines (and labelled horizontal goals) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (x, y) in lines.items():
        ax.plot(x, y, label=label)
    for label, y in (hlines or {}).items():
        ax.axhline(y, linestyle="--", color="grey", linewidth=1)
        ax.annotate(label, (0, y), xycoords=("axes fraction", "data"), va="bottom", fontsize=8)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")
    return out


def rss_lines(runs: Mapping[str, Measurement]) -> dict[str, tuple[list[float], list[float]]]:
    """RSS traces of measurements as plot lines (seconds, GB)."""
    return {
        label: ([t for t, _ in run.rss_trace], [rss / GB for _, rss in run.rss_trace])
        for label, run in runs.items()
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=3, metavar=("FILE", "FUNCTION", "JSON"), required=True)
    _child(*parser.parse_args().child)
