"""The one benchmark harness: each measurement in a fresh interpreter, its RSS sampled, results
written as JSON and drawn as plots.

A benchmark is then a short declaration: module-level functions that do one measured thing and
return plain data, and a ``main`` that runs each with :func:`measure` and writes the report with
:func:`write_report`::

    from benchmarks.harness import measure, write_report

    def read_all(path: str) -> dict:
        ...
        return {"bytes": n}

    if __name__ == "__main__":
        run = measure(read_all, "/data/store.zarr")   # a fresh process, RSS sampled at 20 Hz
        write_report("docs/results/x.json", {"read": run.as_dict()})

Benchmarks are run from the repository root as modules: ``python -m benchmarks.data.memory``.
``measure`` runs ``python benchmarks/harness.py --child FILE FUNCTION ARGS`` so that peaks never
mix (a child's ``VmHWM`` covers it alone: ``ru_maxrss`` would carry over the parent's across
``exec``), and the child's imports (and an optional warm-up) count in its baseline, not in the
measured work. The child imports a file under ``benchmarks/`` as its module
(``benchmarks.data.memory``), any other file by its path.
"""

from __future__ import annotations

import argparse
import gc
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
from types import ModuleType
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
        The child's high-water RSS, imports included: the kernel's ``VmHWM``, or the largest
        sample when that is higher (the kernel updates ``VmHWM`` from per-thread counters that
        lag by up to 64 page faults per thread).
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
    warmup: Callable[..., Any] | None = None,
    **kwargs: Any,
) -> Measurement:
    """Run ``fn(*args, **kwargs)`` in a fresh interpreter and measure it.

    Parameters
    ----------
    fn : callable
        A module-level function of a file under ``benchmarks/`` (found again by the child by
        file and name); arguments and result must be JSON data (paths and arrays are sent as
        strings and lists).
    env : mapping, optional
        Extra environment variables for the child.
    interval : float
        Seconds between RSS samples.
    timeout : float, optional
        Seconds before the child is killed.
    warmup : callable, optional
        A module-level function of the same file, called in the child with the same arguments
        before the baseline is taken (imports, thread pools and caches it fills are then not
        counted as the call's work).

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
        json.dumps(
            {
                "args": list(args),
                "kwargs": kwargs,
                "interval": interval,
                "warmup": warmup.__name__ if warmup else None,
            },
            default=_plain,
        ),
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


def _load(file: str) -> ModuleType:
    """The module of ``file``: ``benchmarks.<folder>.<name>`` under ``benchmarks/``, else the
    file itself."""
    path = Path(file).resolve()
    sys.path.insert(0, str(ROOT))
    if path.is_relative_to(ROOT / "benchmarks"):
        return importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _child(file: str, name: str, payload: str) -> None:
    module = _load(file)
    call = json.loads(payload)
    if call["warmup"]:
        getattr(module, call["warmup"])(*call["args"], **call["kwargs"])

    from stzarr.monitor import MemorySampler, current_rss

    gc.collect()  # garbage freed during the call would otherwise hide in the baseline
    baseline = current_rss()
    start = time.perf_counter()
    with MemorySampler(interval=call["interval"]) as sampler:
        result = getattr(module, name)(*call["args"], **call["kwargs"])
    seconds = time.perf_counter() - start
    out = Measurement(
        seconds=seconds,
        peak_rss_bytes=max(high_water_rss(), sampler.peak_bytes),
        baseline_rss_bytes=baseline,
        sampled_peak_rss_bytes=sampler.peak_bytes,
        rss_trace=sampler.trace,
        result=result,
    )
    print(MARK + json.dumps(asdict(out)), flush=True)


def write_report(
    path: str | os.PathLike[str], report: Mapping[str, Any], indent: int | None = 2
) -> Path:
    """Write ``report`` as JSON (creating folders) and say where.

    ``indent=None`` writes one line (for reports that carry long RSS traces).
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=indent, default=_plain) + "\n")
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
    xscale: str = "linear",
    yscale: str = "linear",
) -> Path:
    """One figure of labelled ``(x, y)`` lines (and labelled horizontal goals) as a PNG.

    ``xscale`` and ``yscale`` are Matplotlib axis scales (``"log"`` for a log axis).
    """
    panel = dict(lines=lines, title=title, xlabel=xlabel, ylabel=ylabel, hlines=hlines)
    return plot_panels(path, [{**panel, "xscale": xscale, "yscale": yscale}])


def plot_panels(path: str | os.PathLike[str], panels: Sequence[Mapping[str, Any]]) -> Path:
    """Panels side by side in one PNG; each panel is :func:`plot_lines`'s keyword arguments
    (``lines``, ``title``, ``xlabel``, ``ylabel``, optional ``hlines``, ``xscale``, ``yscale``),
    or ``bars`` (label: height) in place of ``lines`` for a bar chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if "bars" in panel:
            ax.bar(range(len(panel["bars"])), list(panel["bars"].values()))
        for label, (x, y) in panel.get("lines", {}).items():
            ax.plot(x, y, label=label, marker="o" if len(x) < 10 else None)
        for label, y in (panel.get("hlines") or {}).items():
            ax.axhline(y, linestyle="--", color="grey", linewidth=1)
            ax.annotate(label, (0, y), xycoords=("axes fraction", "data"), va="bottom", fontsize=8)
        ax.set(
            title=panel["title"],
            xlabel=panel["xlabel"],
            ylabel=panel["ylabel"],
            xscale=panel.get("xscale", "linear"),
            yscale=panel.get("yscale", "linear"),
        )
        if "bars" in panel:  # after the scales, which reset the ticks
            ax.set_xticks(range(len(panel["bars"])), list(panel["bars"]), fontsize=8, rotation=35)
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
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
