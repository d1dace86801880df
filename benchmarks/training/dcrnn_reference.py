"""A plain torch DCRNN in the released code's style, the yardstick of ``dcrnn_speed.py``.

Written after ``DCRNN_PyTorch`` (``model/pytorch/dcrnn_cell.py``, ``dcrnn_model.py``): states
are ``(batch, nodes * units)``; every gconv concatenates ``[x | h]``, permutes it to
``(nodes, features * batch)``, multiplies each term by the COO supports with
``torch.sparse.mm``, grows the term stack by concatenation, permutes it back to
``(batch * nodes, features * M)`` and applies one weight matrix. Parameters carry
DCRNN_PyTorch's names, so :func:`stzarr.training.models.export_dcrnn_pytorch` loads into it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _random_walk(a: np.ndarray) -> np.ndarray:
    d = a.sum(1)
    with np.errstate(divide="ignore"):
        inv = np.power(d, -1.0)
    inv[np.isinf(inv)] = 0.0
    return inv[:, None] * a


def _sparse(m: np.ndarray, device: torch.device) -> torch.Tensor:
    rows, cols = np.nonzero(m)
    order = np.lexsort((rows, cols))
    idx = torch.from_numpy(np.stack([rows[order], cols[order]]))
    vals = torch.from_numpy(m[rows[order], cols[order]].astype(np.float32))
    return torch.sparse_coo_tensor(idx, vals, m.shape, device=device)


class ReferenceCell(nn.Module):
    """One DCGRU layer: gconv weights registered under ``gconv_weight_(rows, cols)``."""

    def __init__(self, units: int, supports: list[torch.Tensor], steps: int, input_dim: int):
        super().__init__()
        self.units, self.supports, self.steps = units, supports, steps
        self.n = supports[0].shape[0]
        self.m = len(supports) * steps + 1
        rows = (input_dim + units) * self.m
        for cols, start in ((2 * units, 1.0), (units, 0.0)):
            w = nn.Parameter(torch.empty(rows, cols))
            nn.init.xavier_normal_(w)
            self.register_parameter(f"gconv_weight_({rows}, {cols})", w)
            self.register_parameter(
                f"gconv_biases_{cols}", nn.Parameter(torch.full((cols,), start))
            )

    def forward(self, inputs: torch.Tensor, hx: torch.Tensor) -> torch.Tensor:
        value = torch.sigmoid(self._gconv(inputs, hx, 2 * self.units))
        value = torch.reshape(value, (-1, self.n, 2 * self.units))
        r, u = torch.split(value, self.units, dim=-1)
        r = torch.reshape(r, (-1, self.n * self.units))
        u = torch.reshape(u, (-1, self.n * self.units))
        c = torch.tanh(self._gconv(inputs, r * hx, self.units))
        return u * hx + (1.0 - u) * c

    def _gconv(self, inputs: torch.Tensor, state: torch.Tensor, out: int) -> torch.Tensor:
        b = inputs.shape[0]
        inputs = torch.reshape(inputs, (b, self.n, -1))
        state = torch.reshape(state, (b, self.n, -1))
        x = torch.cat([inputs, state], dim=2)
        f = x.size(2)
        x0 = torch.reshape(x.permute(1, 2, 0), (self.n, f * b))
        x = x0.unsqueeze(0)
        for support in self.supports:
            x1 = torch.sparse.mm(support, x0)
            x = torch.cat([x, x1.unsqueeze(0)], dim=0)
            for _ in range(2, self.steps + 1):
                x2 = 2 * torch.sparse.mm(support, x1) - x0
                x = torch.cat([x, x2.unsqueeze(0)], dim=0)
                x1, x0 = x2, x1
        x = torch.reshape(x, (self.m, self.n, f, b)).permute(3, 1, 2, 0)
        x = torch.reshape(x, (b * self.n, f * self.m))
        rows = f * self.m
        x = torch.matmul(x, getattr(self, f"gconv_weight_({rows}, {out})"))
        x += getattr(self, f"gconv_biases_{out}")
        return torch.reshape(x, (b, self.n * out))


class ReferencePart(nn.Module):
    """``encoder_model`` / ``decoder_model``: a stack of cells (and the decoder's projection)."""

    def __init__(self, units, supports, steps, input_dim, layers, output_dim=None):
        super().__init__()
        self.dcgru_layers = nn.ModuleList(
            ReferenceCell(units, supports, steps, input_dim if i == 0 else units)
            for i in range(layers)
        )
        if output_dim is not None:
            self.projection_layer = nn.Linear(units, output_dim)

    def forward(self, inputs, hidden):
        out, states = inputs, []
        for i, cell in enumerate(self.dcgru_layers):
            out = cell(out, hidden[i])
            states.append(out)
        return out, torch.stack(states)


class ReferenceDCRNN(nn.Module):
    """DCRNNModel's encoder-decoder; ``forward`` takes ``(b, t_in, n, f_in)`` like stzarr's."""

    def __init__(
        self, adj: np.ndarray, *, units, layers, steps, input_dim, output_dim, horizon, device
    ):
        super().__init__()
        supports = [_sparse(_random_walk(adj).T, device), _sparse(_random_walk(adj.T).T, device)]
        self.n, self.units, self.layers, self.horizon = adj.shape[0], units, layers, horizon
        self.output_dim = output_dim
        self.encoder_model = ReferencePart(units, supports, steps, input_dim, layers)
        self.decoder_model = ReferencePart(units, supports, steps, output_dim, layers, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t_in = x.shape[:2]
        inputs = x.permute(1, 0, 2, 3).reshape(t_in, b, -1)
        hidden = torch.zeros(self.layers, b, self.n * self.units, device=x.device)
        for t in range(t_in):
            _, hidden = self.encoder_model(inputs[t], hidden)
        dec = torch.zeros(b, self.n * self.output_dim, device=x.device)
        outputs = []
        for _ in range(self.horizon):
            top, hidden = self.decoder_model(dec, hidden)
            dec = self.decoder_model.projection_layer(top.view(-1, self.units))
            dec = dec.view(b, self.n * self.output_dim)
            outputs.append(dec)
        return torch.stack(outputs, 1).view(b, self.horizon, self.n, self.output_dim)
