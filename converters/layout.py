"""What a time-series source holds: its time index (if any) and its sensor columns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SeriesLayout:
    """The shape of one source file, known before its values are read.

    Attributes
    ----------
    index_ns : numpy.ndarray or None
        int64 timestamps (ns since the epoch) in file order, or None when the file has no time
        column (the time then comes from ``--start``/``--freq``).
    n_steps : int
        Rows of values.
    columns : list of str
        Sensor ids in file order.
    label_kind : str
        ``"string"`` or ``"integer"``: how the file typed its column labels.
    """

    index_ns: np.ndarray | None
    n_steps: int
    columns: list[str]
    label_kind: str
