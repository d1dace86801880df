"""A resumed run's memory trace continues the one its log already holds.

``--resume`` carries the epochs over in the checkpoint; the host-memory trace lives only in the
JSON log. The resumed run reads the trace its log holds before overwriting it, shifts its own
samples (and its epoch end times) by where that trace ended, and writes both, so the log and its
plots cover the whole run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stzarr.training.config import RunOptions


def earlier_trace(run: RunOptions) -> dict[str, Any] | None:
    """The memory trace of the log a resumed run continues (None when not resuming or no
    readable trace is there)."""
    if not run.resume or run.log_path is None:
        return None
    try:
        trace = json.loads(Path(run.log_path).read_text()).get("memory_trace")
    except (OSError, ValueError, AttributeError):
        return None
    return trace if isinstance(trace, dict) and trace.get("ranks") else None


def trace_end(trace: dict[str, Any] | None) -> float:
    """Seconds of the last sample of ``trace`` (0 without one)."""
    if trace is None:
        return 0.0
    return max((float(e["trace"][-1][0]) for e in trace["ranks"] if e["trace"]), default=0.0)


def continue_trace(earlier: dict[str, Any] | None, traces: dict[str, Any]) -> dict[str, Any]:
    """``traces`` (this run's, per rank) after the ``earlier`` ones, its times shifted to follow
    them; ``traces`` unchanged without an earlier trace of the same number of ranks."""
    if earlier is None or len(earlier["ranks"]) != len(traces["ranks"]):
        return traces
    offset = trace_end(earlier)
    ranks = []
    for old, new in zip(earlier["ranks"], traces["ranks"], strict=True):
        points = [*old["trace"], *([round(t + offset, 3), b] for t, b in new["trace"])]
        ranks.append({"peak_rss_bytes": max((b for _, b in points), default=0), "trace": points})
    return {**traces, "ranks": ranks}
