"""An independent DCRNN in plain NumPy float64, written from the released code's equations.

Dense matrices, the released data layout (``(b, n, features)`` arrays, the diffusion terms
stacked last so that row ``f * M + m`` of a gconv weight meets term ``m`` of feature ``f``) and
DCRNN_PyTorch's parameter names; nothing is shared with :mod:`stzarr.training.dcrnn`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np


def adjacency(edge_index: np.ndarray, edge_weight: np.ndarray, n: int) -> np.ndarray:
    """Dense ``A[i, j]`` = summed weight of the edges ``i -> j``."""
    a = np.zeros((n, n))
    np.add.at(a, (edge_index[0], edge_index[1]), edge_weight)
    return a


def random_walk(a: np.ndarray) -> np.ndarray:
    """``D^-1 A`` with ``D`` the row sums; a zero row sum gives a zero row."""
    d = a.sum(axis=1)
    inv = np.zeros_like(d)
    inv[d != 0] = 1.0 / d[d != 0]
    return inv[:, None] * a


def supports(a: np.ndarray, filter_type: str) -> list[np.ndarray]:
    """``[(D_out^-1 A)^T, (D_in^-1 A^T)^T]`` (``dual_random_walk``) or the first only."""
    out = [random_walk(a).T]
    if filter_type == "dual_random_walk":
        out.append(random_walk(a.T).T)
    return out


def gconv(
    x: np.ndarray, sup: list[np.ndarray], steps: int, weight: np.ndarray, bias: np.ndarray
) -> np.ndarray:
    """The released ``_gconv`` on ``x`` of shape ``(b, n, F)``: ``(b, n, out)``."""
    terms = [x]
    x0 = x
    if steps > 0:
        for s in sup:
            x1 = np.einsum("ij,bjf->bif", s, x0)
            terms.append(x1)
            for _ in range(2, steps + 1):
                x2 = 2.0 * np.einsum("ij,bjf->bif", s, x1) - x0
                terms.append(x2)
                x1, x0 = x2, x1
    b, n, f = x.shape
    stacked = np.stack(terms, axis=-1).reshape(b, n, f * len(terms))  # column f * M + m
    return stacked @ weight + bias


def sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def cell(
    params: Mapping[str, np.ndarray],
    prefix: str,
    x: np.ndarray,
    h: np.ndarray,
    sup: list[np.ndarray],
    steps: int,
) -> np.ndarray:
    """One DCGRU step of the cell whose parameters start with ``prefix``."""
    units = h.shape[-1]
    weights = {}
    for name, value in params.items():
        match = re.fullmatch(re.escape(prefix) + r"gconv_weight_\((\d+), (\d+)\)", name)
        if match:
            weights[int(match[2])] = value
    gate_w, cand_w = weights[2 * units], weights[units]
    gate_b = params[f"{prefix}gconv_biases_{2 * units}"]
    cand_b = params[f"{prefix}gconv_biases_{units}"]
    value = sigmoid(gconv(np.concatenate([x, h], -1), sup, steps, gate_w, gate_b))
    r, u = value[..., :units], value[..., units:]
    c = np.tanh(gconv(np.concatenate([x, r * h], -1), sup, steps, cand_w, cand_b))
    return u * h + (1.0 - u) * c


def forecast(
    params: Mapping[str, np.ndarray],
    a: np.ndarray,
    x: np.ndarray,
    horizon: int,
    *,
    steps: int = 2,
    filter_type: str = "dual_random_walk",
    teacher: np.ndarray | None = None,
) -> np.ndarray:
    """DCRNN_PyTorch's ``DCRNNModel`` on ``x`` ``(b, t_in, n, f_in)``: ``(b, horizon, n, f_out)``.

    ``params`` uses DCRNN_PyTorch's names; ``teacher`` (``(b, horizon, n, f_out)``, NaN where
    not fed) replaces the decoder's fed-back output after step ``d`` where it is finite.
    """
    sup = supports(a, filter_type)
    layers = 1 + max(
        int(m[1]) for k in params if (m := re.match(r"encoder_model\.dcgru_layers\.(\d+)\.", k))
    )
    proj_w = params["decoder_model.projection_layer.weight"]
    proj_b = params["decoder_model.projection_layer.bias"]
    units = proj_w.shape[1]
    b, t_in, n, _ = x.shape
    hs = [np.zeros((b, n, units)) for _ in range(layers)]
    for t in range(t_in):
        inp = x[:, t]
        for i in range(layers):
            hs[i] = cell(params, f"encoder_model.dcgru_layers.{i}.", inp, hs[i], sup, steps)
            inp = hs[i]
    inp = np.zeros((b, n, proj_w.shape[0]))
    out = []
    for d in range(horizon):
        for i in range(layers):
            hs[i] = cell(params, f"decoder_model.dcgru_layers.{i}.", inp, hs[i], sup, steps)
            inp = hs[i]
        y = inp @ proj_w.T + proj_b
        out.append(y)
        inp = y
        if teacher is not None and np.isfinite(teacher[:, d]).all():
            inp = teacher[:, d]
    return np.stack(out, axis=1)


def random_state_dict(
    rng: np.random.Generator,
    *,
    in_features: int,
    out_features: int,
    units: int,
    layers: int,
    terms: int,
) -> dict[str, np.ndarray]:
    """Random parameters under DCRNN_PyTorch's names and shapes (scaled to keep the GRU away
    from saturation)."""
    params: dict[str, np.ndarray] = {}
    for part, first in (("encoder", in_features), ("decoder", out_features)):
        for i in range(layers):
            rows = ((first if i == 0 else units) + units) * terms
            prefix = f"{part}_model.dcgru_layers.{i}."
            for cols in (2 * units, units):
                params[f"{prefix}gconv_weight_({rows}, {cols})"] = rng.normal(
                    0, 1.5 / np.sqrt(rows), (rows, cols)
                )
                params[f"{prefix}gconv_biases_{cols}"] = rng.normal(0, 0.5, cols)
    params["decoder_model.projection_layer.weight"] = rng.normal(0, 1.0, (out_features, units))
    params["decoder_model.projection_layer.bias"] = rng.normal(0, 0.5, out_features)
    return params
