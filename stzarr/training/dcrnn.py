"""DCRNN's diffusion-convolutional GRU as the released code computes it, at any graph width.

The released DCRNN (``liyaguang/DCRNN``, TensorFlow, and its PyTorch port ``DCRNN_PyTorch``,
which BasicTS and LargeST copy) defines the function; this module computes the same function
with another data layout.

Supports
    ``A[i, j]`` is the weight of edge ``i -> j`` (``edge_index[:, e] = (i, j)``; duplicate edges
    add up). Filter ``dual_random_walk`` (the default) has two supports,
    ``S0 = (D_out^-1 A)^T`` and ``S1 = (D_in^-1 A^T)^T``; ``random_walk`` has ``S0`` only. A
    node of zero degree gives a zero row of ``D^-1 A`` (the released code's ``d_inv[isinf] = 0``).
    Each support is kept as a sparse CSR matrix together with its transpose (used by the
    backward pass), built once per graph, device and dtype.
Diffusion terms
    The released ``_gconv``: ``x0 = x``; for each support ``S``: ``x1 = S x0``, then for
    ``k = 2 .. K``: ``x2 = 2 S x1 - x0`` and ``x1, x0 = x2, x1``. The last assignment carries
    ``x0`` over to the next support, so for ``K = 2`` the terms are ``x``, ``S0 x``,
    ``2 S0 S0 x - x``, ``S1 S0 x``, ``2 S1 S1 S0 x - S0 x``. The paper's formula instead sums
    powers of each support applied to ``x`` itself (``S1 x``, ``S1 S1 x``, ...) without the
    ``2 S x - x`` recurrence; the published results and every port compute the released form,
    so that is what is matched here.
Weights
    One gconv maps the ``M = n_supports * K + 1`` terms of ``[x | h]`` (``F`` features) through a
    ``(F * M, out)`` matrix whose row ``f * M + m`` weights term ``m`` of feature ``f``, plus a
    bias. The gate gconv gives ``[r | u]`` (bias initialised to 1.0), the candidate gconv ``c``
    (bias 0) from ``[x | r * h]``; ``h' = u * h + (1 - u) * tanh(c)``. Weights are drawn
    xavier-normal over the ``(F * M, out)`` matrix, as ``DCRNN_PyTorch`` does (the TensorFlow
    original draws xavier-uniform).

Layout and cost. States are ``(n, b, units)`` tensors: a support multiplies the ``(n, b *
units)`` view (the batch folded into the feature axis, never into a block-diagonal graph) and a
weight multiplies the ``(n * b, M * units)`` view of the stacked terms, so nothing dense is
``n x n`` and the terms are never permuted. The gconv is linear in ``[x | h]``, so its ``x`` and
``h`` rows are applied separately: the input's terms are diffused once and shared by the gate
and candidate gconvs (the encoder's raw input for all steps at once), and the terms of a new
state ``h`` are diffused once and shared by the next layer's input and the same layer's next
gates. A zero state (the first encoder step) and the zero GO frame skip their terms. The
diffusion is one autograd node whose backward applies the stored transposes, so it saves no
activations; what autograd keeps per cell step is the terms of ``h`` and ``r * h`` and the gate
outputs. With ``recompute`` each step is checkpointed (:func:`torch.utils.checkpoint`) and only
the hidden states are kept between steps; the backward pass then runs each step's forward again.
glibc raises its mmap threshold after large blocks are freed, after which a step's temporaries
come from the heap, which cannot shrink past the states kept between them: peak RSS then stays
near its level without ``recompute``. So ``recompute`` also fixes glibc's mmap threshold at 1 MiB
(:func:`return_large_blocks`), and blocks that large go back to the OS when freed.
"""

from __future__ import annotations

import ctypes
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

FILTERS = ("dual_random_walk", "random_walk")
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter

Support = tuple[torch.Tensor, torch.Tensor]
"""A support ``S`` and its transpose, both sparse CSR."""

Plan = tuple[tuple[int, int, int | None], ...]
"""Diffusion operations in order; operation ``k`` makes term ``k + 1`` as ``S_s @ term[src]``
(``sub`` None) or ``2 S_s @ term[src] - term[sub]``, with term 0 the input itself."""


def n_supports(filter_type: str) -> int:
    """Number of supports of a filter (``dual_random_walk`` 2, ``random_walk`` 1)."""
    return 2 if filter_type == "dual_random_walk" else 1


def build_supports(
    edge_index: torch.Tensor,
    edge_weight: torch.Tensor,
    n_node: int,
    filter_type: str = "dual_random_walk",
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> tuple[Support, ...]:
    """The released code's random-walk supports of a graph, each with its transpose, as CSR.

    Parameters
    ----------
    edge_index : torch.Tensor
        ``(2, e)`` int64; column ``(i, j)`` is edge ``i -> j``.
    edge_weight : torch.Tensor
        ``(e,)`` weights ``A[i, j]``.
    n_node : int
    filter_type : str
        ``"dual_random_walk"`` (``S0 = (D_out^-1 A)^T``, ``S1 = (D_in^-1 A^T)^T``) or
        ``"random_walk"`` (``S0`` only).
    dtype, device
        Of the returned matrices (the normalisation is computed in float64).

    Returns
    -------
    tuple of (S, S^T)
    """
    adj = torch.sparse_coo_tensor(
        edge_index.detach().to("cpu", torch.long),
        edge_weight.detach().to("cpu", torch.float64),
        (n_node, n_node),
        check_invariants=False,
    ).coalesce()
    src, dst = adj.indices()
    w = adj.values()
    d_out = torch.zeros(n_node, dtype=torch.float64).index_add_(0, src, w)
    d_in = torch.zeros(n_node, dtype=torch.float64).index_add_(0, dst, w)
    # S0[j, i] = w_ij / d_out(i); S1[i, j] = w_ij / d_in(j)
    entries = [(dst, src, w * _inverse(d_out)[src])]
    if filter_type == "dual_random_walk":
        entries.append((src, dst, w * _inverse(d_in)[dst]))
    return tuple(
        (
            _csr(rows, cols, values, n_node, dtype, device),
            _csr(cols, rows, values, n_node, dtype, device),
        )
        for rows, cols, values in entries
    )


def _inverse(degree: torch.Tensor) -> torch.Tensor:
    """``1 / d``, with 0 where ``d == 0`` (a zero row of ``D^-1 A``)."""
    return torch.where(degree == 0, 0.0, 1.0 / torch.where(degree == 0, 1.0, degree))


def _csr(
    rows: torch.Tensor,
    cols: torch.Tensor,
    values: torch.Tensor,
    n: int,
    dtype: torch.dtype,
    device: torch.device | str,
) -> torch.Tensor:
    coo = torch.sparse_coo_tensor(
        torch.stack([rows, cols]), values.to(dtype), (n, n), check_invariants=False
    )
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return coo.coalesce().to_sparse_csr().to(device)


def diffusion_plan(supports: int, steps: int) -> Plan:
    """The released ``_gconv``'s terms as operations (see :data:`Plan`).

    Parameters
    ----------
    supports : int
        Number of supports.
    steps : int
        Maximum diffusion step ``K`` (0: the input only).
    """
    plan: list[tuple[int, int, int | None]] = []
    x0 = 0
    for s in range(supports if steps > 0 else 0):
        plan.append((s, x0, None))
        x1 = len(plan)
        for _ in range(2, steps + 1):
            plan.append((s, x1, x0))
            x0, x1 = x1, len(plan)
    return tuple(plan)


class _Diffuse(torch.autograd.Function):
    """``(n, c, f) -> (n, c, M, f)``: the diffusion terms of ``x`` (term 0 is ``x``)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, supports: Sequence[Support], plan: Plan
    ) -> torch.Tensor:
        n, c, f = x.shape
        out = x.new_empty(n, c, len(plan) + 1, f)
        out[:, :, 0] = x
        terms = [x.reshape(n, c * f)]
        for m, (s, src, sub) in enumerate(plan, start=1):
            support = supports[s][0]
            if sub is None:
                term = torch.mm(support, terms[src])
            else:
                term = torch.addmm(terms[sub], support, terms[src], beta=-1.0, alpha=2.0)
            terms.append(term)
            out[:, :, m] = term.view(n, c, f)
        ctx.supports, ctx.plan = supports, plan
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        n, c, m_terms, f = grad.shape
        acc = grad.permute(2, 0, 1, 3).clone(memory_format=torch.contiguous_format)
        acc = acc.view(m_terms, n, c * f)
        for m in range(len(ctx.plan), 0, -1):
            s, src, sub = ctx.plan[m - 1]
            acc[src].addmm_(ctx.supports[s][1], acc[m], alpha=1.0 if sub is None else 2.0)
            if sub is not None:
                acc[sub].sub_(acc[m])
        return acc[0].view(n, c, f), None, None


def diffuse(x: torch.Tensor, supports: Sequence[Support], plan: Plan) -> torch.Tensor:
    """The diffusion terms ``(n, c, M, f)`` of ``x`` of shape ``(n, c, f)``."""
    return _Diffuse.apply(x, supports, plan)


class DCGRUCell(nn.Module):
    """The parameters of one diffusion-convolutional GRU layer, laid out as the released code's.

    Parameters
    ----------
    input_size : int
        Input features ``f`` (the gconvs see ``f + units`` features).
    units : int
    n_terms : int
        Diffusion terms ``M`` per feature.
    """

    def __init__(self, input_size: int, units: int, n_terms: int) -> None:
        super().__init__()
        self.input_size, self.units, self.n_terms = input_size, units, n_terms
        rows = (input_size + units) * n_terms
        self.gate_weight = nn.Parameter(torch.empty(rows, 2 * units))
        self.gate_bias = nn.Parameter(torch.empty(2 * units))
        self.candidate_weight = nn.Parameter(torch.empty(rows, units))
        self.candidate_bias = nn.Parameter(torch.empty(units))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The released initialisation: xavier-normal weights, gate bias 1.0, candidate 0."""
        nn.init.xavier_normal_(self.gate_weight)
        nn.init.xavier_normal_(self.candidate_weight)
        nn.init.constant_(self.gate_bias, 1.0)
        nn.init.zeros_(self.candidate_bias)

    def folded(self) -> CellWeights:
        """The weights regrouped for the folded layout (term-major rows, ``x`` and ``h`` apart)."""
        f, m = self.input_size, self.n_terms

        def rows(w: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
            part = w.view(-1, m, w.shape[1])[lo:hi]  # (features, M, out), row f * M + m
            return part.transpose(0, 1).reshape(m * (hi - lo), w.shape[1])

        total = f + self.units
        return CellWeights(
            units=self.units,
            x=torch.cat([rows(self.gate_weight, 0, f), rows(self.candidate_weight, 0, f)], 1),
            x_bias=torch.cat([self.gate_bias, self.candidate_bias]),
            gate_h=rows(self.gate_weight, f, total),
            candidate_h=rows(self.candidate_weight, f, total),
        )


@dataclass
class CellWeights:
    """One cell's weights with rows ordered ``m * features + f`` (see :meth:`DCGRUCell.folded`):
    ``x`` maps the input's terms to ``[r | u | c]``, ``gate_h`` and ``candidate_h`` map the terms
    of ``h`` and ``r * h``."""

    units: int
    x: torch.Tensor
    x_bias: torch.Tensor
    gate_h: torch.Tensor
    candidate_h: torch.Tensor

    def input_part(self, terms: torch.Tensor | None, shape: tuple[int, int]) -> torch.Tensor:
        """``(n, b, 3 units)``: the input's contribution to ``[r | u | c]``, bias included
        (``terms`` None: a zero input)."""
        n, b = shape
        if terms is None:
            return self.x_bias.expand(n, b, -1)
        flat = terms.reshape(n * b, -1)
        return torch.addmm(self.x_bias, flat, self.x).view(n, b, -1)


def _times(terms: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``(n, b, M, f) @ (M * f, out) -> (n, b, out)``."""
    n, b = terms.shape[:2]
    return torch.mm(terms.view(n * b, -1), weight).view(n, b, -1)


def gru_step(
    w: CellWeights,
    x_part: torch.Tensor,
    h: torch.Tensor | None,
    h_gates: torch.Tensor | None,
    supports: Sequence[Support],
    plan: Plan,
) -> torch.Tensor:
    """One DCGRU step: the new state ``(n, b, units)``.

    Parameters
    ----------
    w : CellWeights
    x_part : torch.Tensor
        :meth:`CellWeights.input_part` of the step's input.
    h, h_gates : torch.Tensor or None
        The state ``(n, b, units)`` and its contribution ``(n, b, 2 units)`` to the gates (its
        terms times ``w.gate_h``); both None for a zero state.
    supports, plan
        See :func:`build_supports`, :func:`diffusion_plan`.
    """
    u = w.units
    gates, candidate = x_part.split([2 * u, u], dim=-1)
    if h_gates is not None:
        gates = gates + h_gates
    reset, update = torch.sigmoid(gates).split(u, dim=-1)
    if h is None:
        return torch.tanh(candidate) * (1.0 - update)
    candidate = candidate + _times(diffuse(reset * h, supports, plan), w.candidate_h)
    return torch.lerp(torch.tanh(candidate), h, update)


def _layers_step(
    cells: Sequence[CellWeights],
    next_cells: Sequence[CellWeights] | None,
    in_terms: torch.Tensor | None,
    states: Sequence[torch.Tensor | None],
    h_gates: Sequence[torch.Tensor | None],
    supports: Sequence[Support],
    plan: Plan,
    fused: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """Every layer's step from the first layer's input terms ``(n, b, M, f)`` (None: a zero
    input). Returns the new states and, when ``next_cells`` (the next step's cells) are given,
    each new state's contribution to that step's gates. A new state's terms are diffused once
    and multiplied once, by the next layer's input weights and the next gates' side by side
    (those weights joined once per forward pass in ``fused``)."""
    fused = {} if fused is None else fused
    new_states: list[torch.Tensor] = []
    new_gates: list[torch.Tensor | None] = []
    shape = states[0].shape[:2] if in_terms is None else in_terms.shape[:2]
    x_part = cells[0].input_part(in_terms, shape)
    for i, w in enumerate(cells):
        h = gru_step(w, x_part, states[i], h_gates[i], supports, plan)
        new_states.append(h)
        upper = cells[i + 1] if i + 1 < len(cells) else None
        if upper is None:
            top = None if next_cells is None else next_cells[i].gate_h
            new_gates.append(None if top is None else _times(diffuse(h, supports, plan), top))
            continue
        terms = diffuse(h, supports, plan)
        if next_cells is None:
            x_part = upper.input_part(terms, shape)
            new_gates.append(None)
            continue
        key = (id(next_cells[i]), id(upper))
        if key not in fused:
            fused[key] = (
                torch.cat([upper.x_bias.new_zeros(2 * w.units), upper.x_bias]),
                torch.cat([next_cells[i].gate_h, upper.x], dim=1),
            )
        bias, both = fused[key]
        flat = torch.addmm(bias, terms.view(shape[0] * shape[1], -1), both)
        gate_part, x_part = flat.view(*shape, -1).split([2 * w.units, 3 * upper.units], -1)
        new_gates.append(gate_part)
    return new_states, new_gates


def _checkpointed_step(
    cells: Sequence[CellWeights],
    in_terms: torch.Tensor | None,
    states: Sequence[torch.Tensor | None],
    supports: Sequence[Support],
    plan: Plan,
) -> list[torch.Tensor]:
    """:func:`_layers_step` under activation checkpointing: only its inputs are kept, and the
    backward pass runs it again."""

    def run(in_terms: torch.Tensor | None, *states: torch.Tensor | None) -> list[torch.Tensor]:
        h_gates = [
            None if h is None else _times(diffuse(h, supports, plan), w.gate_h)
            for w, h in zip(cells, states, strict=True)
        ]
        return _layers_step(cells, None, in_terms, states, h_gates, supports, plan)[0]

    return checkpoint(run, in_terms, *states, use_reentrant=False)


def seq2seq(
    encoder: Sequence[DCGRUCell],
    decoder: Sequence[DCGRUCell],
    projection: nn.Linear,
    supports: Sequence[Support],
    plan: Plan,
    x: torch.Tensor,
    horizon: int,
    *,
    truth: torch.Tensor | None = None,
    feed_truth: Sequence[bool] = (),
    recompute: bool = False,
) -> torch.Tensor:
    """DCRNN's encoder-decoder on ``x`` ``(b, t_in, n, f_in)``: ``(b, horizon, n, f_out)``.

    The encoder starts from zero states; the decoder from the encoder's final states and a zero
    GO frame, fed its own previous output, or ``truth[:, d]`` (``(b, horizon, n, f_out)``) after
    output ``d`` where ``feed_truth[d]``. With ``recompute`` every step is checkpointed.
    """
    b, t_in, n, _ = x.shape
    enc = [c.folded() for c in encoder]
    dec = [c.folded() for c in decoder]
    # the raw input's terms for every step at once: (n, t_in, b, M, f_in)
    x_terms = diffuse(x.permute(2, 1, 0, 3).reshape(n, t_in * b, -1), supports, plan)
    x_terms = x_terms.view(n, t_in, b, *x_terms.shape[2:])
    states: list[torch.Tensor | None] = [None] * len(enc)
    h_gates: list[torch.Tensor | None] = [None] * len(enc)
    y_terms: torch.Tensor | None = None  # the GO frame is zero
    fused: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
    outputs = []
    for t in range(t_in + horizon):
        cells = enc if t < t_in else dec
        in_terms = x_terms[:, t] if t < t_in else y_terms
        if recompute:
            states = list(_checkpointed_step(cells, in_terms, states, supports, plan))
        else:
            nxt = None if t == t_in + horizon - 1 else enc if t + 1 < t_in else dec
            states, h_gates = _layers_step(
                cells, nxt, in_terms, states, h_gates, supports, plan, fused
            )
        if t >= t_in:
            d = t - t_in
            y = projection(states[-1])  # (n, b, f_out)
            outputs.append(y)
            fed = truth[:, d].permute(1, 0, 2) if d < len(feed_truth) and feed_truth[d] else y
            if d < horizon - 1:
                y_terms = diffuse(fed, supports, plan)
    return torch.stack(outputs).permute(2, 0, 1, 3)


def n_terms(filter_type: str, steps: int) -> int:
    """``M``: diffusion terms per feature (the input itself included)."""
    return n_supports(filter_type) * steps + 1


def return_large_blocks(threshold: int = 1 << 20) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes (``mallopt``), so that freed blocks of
    that size and more go back to the OS instead of growing the heap; False where the C library
    is not glibc (then nothing changes)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False
