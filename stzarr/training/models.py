"""Forecasting models: DCRNN as released, and PGT 0.56 recurrent layers with a small head.

Every model maps a batch ``x`` of shape ``(b, t_in, n, f_in)`` (standardised inputs, calendar
features appended) to a forecast of shape ``(b, horizon, n, f_out)`` in standardised units. The
graph is held by the model as non-persistent buffers (moved by ``.to(device)``, not saved in the
``state_dict``), so ``model(x)`` is the whole call.

``dcrnn`` (default)
    DCRNN's encoder-decoder computing the released code's function (``liyaguang/DCRNN`` and
    its PyTorch port ``DCRNN_PyTorch``; :mod:`stzarr.training.dcrnn` states it exactly and how it
    differs
    from the paper's formula): two stacked diffusion-convolutional GRU layers of 64 units with
    dual-random-walk supports and two diffusion steps encode the input; the decoder starts from
    the encoder's final states and a zero GO frame and feeds its own output forward, with
    optional scheduled sampling (teacher forcing with inverse-sigmoid decay, as in the paper).
    Sparse supports, the batch folded into the feature axis; ``recompute`` checkpoints every
    step. :func:`load_dcrnn_pytorch` and :func:`export_dcrnn_pytorch` convert DCRNN_PyTorch
    state dicts.
``pgt-batched-dcrnn``
    PGT's :class:`~torch_geometric_temporal.nn.recurrent.BatchedDCRNN` (``K=3``: two diffusion
    steps) as the PGT-I paper runs it, followed by a per-step linear head ``hidden -> f_out``
    after a ReLU; its output sequence has ``t_in`` steps, so when ``horizon != t_in`` a linear map
    over time turns ``t_in`` steps into ``horizon``. It is not the paper's encoder-decoder: output
    step ``h`` is read from the hidden state after input step ``h``, having seen only ``h`` inputs.
``a3tgcn``
    PGT's batched :class:`~torch_geometric_temporal.nn.recurrent.A3TGCN2` (attention over the
    ``t_in`` outputs of a T-GCN cell) followed by ReLU and a linear head
    ``hidden -> horizon * f_out``, as in PGT's A3T-GCN examples. (PGT's ``A3TGCN2`` runs the
    cell on every input step from a zero hidden state, so the steps are combined only by the
    attention weights; kept as PGT has it.)

The graph normalisation is computed once per graph, not per step: ``dcrnn`` builds its sparse
supports once per graph, device and dtype, ``a3tgcn`` builds ``A3TGCN2`` with PGT's own
``cached=True`` (PyG's ``GCNConv`` caches its normalised graph). The caches are dropped when the
graph buffers are replaced (``.to(device)``, assigning new tensors); a graph modified *in place*
keeps the stale normalisation, so replace the tensors instead. PGT's ``BatchedDCRNN.forward``
(``pgt-batched-dcrnn``) keeps its own cache, keyed on ``torch.equal`` of the graph tensors it
last saw.

PGT behaviours kept as they are in ``pgt-batched-dcrnn`` (the layers are PGT's, not
rewritten): PGT 0.56's diffusion convolution scales each message by ``1 / weighted
out-degree`` of its source node, so edge weights enter only through the node degrees (DCRNN
weights every edge by ``w_ij / d_i``); its reverse direction pairs the reversed edges with the
normalisation of other edges, and a node of zero degree gives non-finite values
(``docs/models.md``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from stzarr.data.batcher import SeriesBatcher
    from stzarr.plan.windows import WindowSpec
    from stzarr.store.format import Store

from stzarr.errors import SpecError, StzarrError
from stzarr.training.config import MODELS
from stzarr.training.dcrnn import (
    FILTERS,
    DCGRUCell,
    Support,
    build_supports,
    diffusion_plan,
    n_supports,
    n_terms,
    return_large_blocks,
    seq2seq,
)
from stzarr.training.pgt_compat import import_pgt


def _pgt() -> ModuleType:
    """PGT's recurrent layers, imported on first model build: importing PGT costs ~1.5 s, which
    every ``stzarr`` command and ``import stzarr`` would otherwise pay. torch-sparse is not needed
    (:mod:`stzarr.training.pgt_compat`)."""
    return import_pgt("torch_geometric_temporal.nn.recurrent")


class GraphForecaster(nn.Module):
    """Base class: holds the static graph as non-persistent buffers.

    Subclasses implement :meth:`forecast` ``(x, edge_index, edge_weight) -> y``.
    """

    edge_index: torch.Tensor
    edge_weight: torch.Tensor

    def __init__(
        self,
        edge_index: torch.Tensor | np.ndarray,
        edge_weight: torch.Tensor | np.ndarray,
        *,
        n_node: int,
        in_features: int,
        out_features: int,
        input_steps: int,
        horizon: int,
    ) -> None:
        super().__init__()
        self.n_node = n_node
        self.in_features = in_features
        self.out_features = out_features
        self.input_steps = input_steps
        self.horizon = horizon
        edge_index = torch.as_tensor(edge_index, dtype=torch.long)
        edge_weight = torch.as_tensor(edge_weight, dtype=torch.float32)
        self.register_buffer("edge_index", edge_index, persistent=False)
        self.register_buffer("edge_weight", edge_weight, persistent=False)
        self._graph_seen: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Forecast ``(b, horizon, n, f_out)`` from ``x`` of shape ``(b, t_in, n, f_in)``."""
        expected = (self.input_steps, self.n_node, self.in_features)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"expected x of shape (b, {', '.join(map(str, expected))}), got {tuple(x.shape)}"
            )
        seen = self._graph_seen
        # identity, not torch.equal: no pass over the graph (and no device sync) per batch
        if seen is None or seen[0] is not self.edge_index or seen[1] is not self.edge_weight:
            self.reset_graph_cache()
            self._graph_seen = (self.edge_index, self.edge_weight)
        return self.forecast(x, self.edge_index, self.edge_weight, **kwargs)

    def reset_graph_cache(self) -> None:
        """Drop what was computed from the graph (called when the graph buffers change)."""

    def forecast(
        self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        raise NotImplementedError


class PGTBatchedDCRNN(GraphForecaster):
    """PGT's ``BatchedDCRNN`` + ReLU + linear head (+ a linear time map when ``horizon != t_in``),
    as the PGT-I paper runs it (output step ``h`` after ``h`` input steps).

    Parameters
    ----------
    hidden : int
        Hidden units of the recurrent layer.
    K : int
        Diffusion filter size (``K - 1`` diffusion steps).
    """

    def __init__(self, *args: Any, hidden: int = 64, K: int = 3, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recurrent = _pgt().BatchedDCRNN(self.in_features, hidden, K=K)
        self.head = nn.Linear(hidden, self.out_features)
        self.time_map = (
            nn.Linear(self.input_steps, self.horizon) if self.horizon != self.input_steps else None
        )

    def forecast(
        self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor, **_: Any
    ) -> torch.Tensor:
        h = self.recurrent(x, edge_index, edge_weight)  # b t_in n hidden
        y = self.head(torch.relu(h))  # b t_in n f_out
        if self.time_map is not None:
            y = self.time_map(y.movedim(1, -1)).movedim(-1, 1)
        return y


class DCRNNSeq2Seq(GraphForecaster):
    """DCRNN's encoder-decoder, computing the released code's function
    (:mod:`stzarr.training.dcrnn`).

    Parameters
    ----------
    hidden : int
        Units per layer (paper: 64).
    layers : int
        Stacked recurrent layers in the encoder and in the decoder (paper: 2).
    diffusion_steps : int
        Maximum diffusion step ``K`` (paper: 2).
    filter_type : str
        ``"dual_random_walk"`` (paper) or ``"random_walk"``.
    teacher_forcing_decay : float, optional
        Scheduled sampling: during training, when targets are passed, the decoder is fed the true
        previous step with probability ``d / (d + exp(step / d))`` (paper: ``d = 2000``). None
        disables it (the decoder always feeds its own output).
    recompute : bool
        Checkpoint every cell step and keep only the hidden states (less memory, more time:
        another forward pass, and the page faults of memory given back to the OS); also fixes
        glibc's mmap threshold (see :mod:`stzarr.training.dcrnn`).
    """

    def __init__(
        self,
        *args: Any,
        hidden: int = 64,
        layers: int = 2,
        diffusion_steps: int = 2,
        filter_type: str = "dual_random_walk",
        teacher_forcing_decay: float | None = None,
        recompute: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if filter_type not in FILTERS:
            raise SpecError(
                f"unknown filter_type {filter_type!r} (choose from {', '.join(FILTERS)})"
            )
        for label, value, least in (("hidden", hidden, 1), ("layers", layers, 1)):
            if value < least:
                raise SpecError(f"{label} must be positive, got {value}")
        if diffusion_steps < 0:
            raise SpecError(f"diffusion_steps must be >= 0, got {diffusion_steps}")
        self.hidden = hidden
        self.diffusion_steps = diffusion_steps
        self.filter_type = filter_type
        self.teacher_forcing_decay = teacher_forcing_decay
        self.recompute = recompute
        if recompute:
            return_large_blocks()
        terms = n_terms(filter_type, diffusion_steps)
        self.plan = diffusion_plan(n_supports(filter_type), diffusion_steps)
        self.encoder = nn.ModuleList(
            DCGRUCell(self.in_features if i == 0 else hidden, hidden, terms) for i in range(layers)
        )
        self.decoder = nn.ModuleList(
            DCGRUCell(self.out_features if i == 0 else hidden, hidden, terms) for i in range(layers)
        )
        self.projection = nn.Linear(hidden, self.out_features)
        self._supports: dict[tuple[torch.device, torch.dtype], tuple[Support, ...]] = {}

    def reset_graph_cache(self) -> None:
        self._supports = {}

    def supports(self, device: torch.device, dtype: torch.dtype) -> tuple[Support, ...]:
        """The graph's sparse supports on ``device`` in ``dtype`` (built once, then cached)."""
        key = (device, dtype)
        if key not in self._supports:
            self._supports[key] = build_supports(
                self.edge_index,
                self.edge_weight,
                self.n_node,
                self.filter_type,
                dtype=dtype,
                device=device,
            )
        return self._supports[key]

    def teacher_forcing_probability(self, step: int) -> float:
        """Probability of feeding the true previous step at training step ``step``."""
        if self.teacher_forcing_decay is None:
            return 0.0
        d = float(self.teacher_forcing_decay)
        return d / (d + math.exp(min(step / d, 700.0)))

    def load_state_dict(self, state_dict: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        """:meth:`torch.nn.Module.load_state_dict`, refusing in one line a state dict of
        another layout (e.g. a checkpoint of the earlier ``dcrnn`` on PGT's gates)."""
        ours = set(self.state_dict())
        strict = args[0] if args else kwargs.get("strict", True)
        if strict and set(state_dict) != ours:
            foreign = sorted(set(state_dict) ^ ours)
            raise StzarrError(
                f"these parameters are not this dcrnn's ({len(foreign)} names differ, e.g. "
                f"{foreign[0]!r}): a checkpoint of another model or of the earlier dcrnn "
                "(PGT's gates, another function) does not load; retrain, or convert a "
                "DCRNN_PyTorch state dict with load_dcrnn_pytorch"
            )
        return super().load_state_dict(state_dict, *args, **kwargs)

    def forecast(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        edge_weight: torch.Tensor,
        *,
        targets: torch.Tensor | None = None,
        step: int = 0,
        **_: Any,
    ) -> torch.Tensor:
        """Encode ``x``, decode ``horizon`` steps.

        Parameters
        ----------
        targets : torch.Tensor, optional
            Standardised targets ``(b, horizon, n, f_out)`` (missing readings already replaced)
            for scheduled sampling; used only in training mode.
        step : int
            Global training step (sets the teacher-forcing probability).
        """
        p_true = self.teacher_forcing_probability(step)
        use_truth = self.training and targets is not None and p_true > 0
        # one draw per forward pass on the CPU generator (no per-step host round trip)
        feed_truth = (torch.rand(self.horizon) < p_true).tolist() if use_truth else []
        return seq2seq(
            self.encoder,
            self.decoder,
            self.projection,
            self.supports(x.device, x.dtype),
            self.plan,
            x,
            self.horizon,
            truth=targets,
            feed_truth=feed_truth,
            recompute=self.recompute and torch.is_grad_enabled(),
        )


class A3TGCNForecaster(GraphForecaster):
    """PGT's batched ``A3TGCN2`` + ReLU + linear head ``hidden -> horizon * f_out``.

    Built with PGT's ``cached=True``: the cell's three ``GCNConv`` normalise the graph on their
    first call instead of on every one of the ``3 * t_in`` calls per batch.
    """

    def __init__(self, *args: Any, hidden: int = 32, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # batch_size is unused by A3TGCN2 (kept by PGT for backward compatibility)
        self.recurrent = _pgt().A3TGCN2(
            self.in_features, hidden, periods=self.input_steps, batch_size=1, cached=True
        )
        self.head = nn.Linear(hidden, self.horizon * self.out_features)

    def reset_graph_cache(self) -> None:
        cell = self.recurrent._base_tgcn
        for conv in (cell.conv_z, cell.conv_r, cell.conv_h):
            conv._cached_edge_index = None
            conv._cached_adj_t = None

    def forecast(
        self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor, **_: Any
    ) -> torch.Tensor:
        b, _, n, _ = x.shape
        h = self.recurrent(x.permute(0, 2, 3, 1), edge_index, edge_weight)  # b n hidden
        y = self.head(torch.relu(h)).reshape(b, n, self.horizon, self.out_features)
        return y.permute(0, 2, 1, 3)


_CLASSES: dict[str, type[GraphForecaster]] = {
    "dcrnn": DCRNNSeq2Seq,
    "pgt-batched-dcrnn": PGTBatchedDCRNN,
    "a3tgcn": A3TGCNForecaster,
}


def build_model(
    name: str,
    n_node: int,
    in_features: int,
    out_features: int,
    input_steps: int,
    horizon: int,
    edge_index: torch.Tensor,
    edge_weight: torch.Tensor,
    **options: Any,
) -> GraphForecaster:
    """Build a forecaster by name.

    Parameters
    ----------
    name : str
        ``"dcrnn"`` (the released DCRNN's encoder-decoder), ``"pgt-batched-dcrnn"`` (PGT
        ``BatchedDCRNN``, K=3, as PGT-I runs it) or ``"a3tgcn"`` (PGT ``A3TGCN2``).
    n_node, in_features, out_features, input_steps, horizon : int
        Shapes: ``x`` is ``(b, input_steps, n_node, in_features)``, the forecast
        ``(b, horizon, n_node, out_features)``.
    edge_index, edge_weight : torch.Tensor
        The static graph (COO int64 ``(2, e)`` and float ``(e,)``).
    **options
        Model hyper-parameters (``hidden``; ``layers``, ``diffusion_steps``, ``filter_type``,
        ``teacher_forcing_decay``, ``recompute`` for dcrnn; ``K`` for pgt-batched-dcrnn).

    Raises
    ------
    SpecError
        For an unknown model name or non-positive shapes.
    """
    if name not in _CLASSES:
        raise SpecError(f"unknown model {name!r} (choose from {', '.join(MODELS)})")
    for label, value in (
        ("n_node", n_node),
        ("in_features", in_features),
        ("out_features", out_features),
        ("input_steps", input_steps),
        ("horizon", horizon),
    ):
        if value < 1:
            raise SpecError(f"{label} must be positive, got {value}")
    return _CLASSES[name](
        edge_index,
        edge_weight,
        n_node=n_node,
        in_features=in_features,
        out_features=out_features,
        input_steps=input_steps,
        horizon=horizon,
        **options,
    )


def load_trained(
    name: str,
    store: Store,
    batcher: SeriesBatcher,
    state_dict: dict[str, torch.Tensor],
    **options: Any,
) -> GraphForecaster:
    """Rebuild a trained model for ``store``'s graph and ``batcher``'s shapes, in eval mode.

    Parameters
    ----------
    name : str
        Model name (as trained).
    store : Store
        Provides the graph and the number of nodes.
    batcher : SeriesBatcher
        Provides the window shape and the input/target feature counts.
    state_dict : dict
        Trained parameters (e.g. ``TrainResult.state_dict``).
    **options
        The hyper-parameters it was trained with (e.g. ``hidden``).
    """
    model = build_for_store(
        name,
        store,
        batcher.spec,
        in_features=batcher.n_input_features,
        out_features=batcher.n_target_features,
        **options,
    )
    model.load_state_dict(state_dict)
    return model.eval()


def build_for_store(
    name: str,
    store: Store,
    window: WindowSpec,
    *,
    in_features: int,
    out_features: int,
    **options: Any,
) -> GraphForecaster:
    """:func:`build_model` with ``store``'s graph and node count and ``window``'s shape.

    Parameters
    ----------
    name : str
        One of :data:`MODELS`.
    store : Store
        Provides the graph and the number of nodes.
    window : WindowSpec
        Provides ``input_steps`` and ``horizon``.
    in_features, out_features : int
        Input channels (data features plus calendar channels) and forecast features.
    **options
        Model hyper-parameters (e.g. ``hidden``).
    """
    return build_model(
        name,
        n_node=store.shape[1],
        in_features=in_features,
        out_features=out_features,
        input_steps=window.input_steps,
        horizon=window.horizon,
        edge_index=store.edge_index,
        edge_weight=store.edge_weight,
        **options,
    )


_PT_WEIGHT = re.compile(
    r"^(encoder|decoder)_model\.dcgru_layers\.(\d+)\.gconv_weight_\((\d+), (\d+)\)$"
)
_PT_BIAS = re.compile(r"^(encoder|decoder)_model\.dcgru_layers\.(\d+)\.gconv_biases_(\d+)$")
_PT_PROJECTION = "decoder_model.projection_layer."


def _pt_cell_names(part: str, i: int, cell: DCGRUCell) -> dict[str, str]:
    """DCRNN_PyTorch's names of a cell's parameters, by ours."""
    rows, u = cell.gate_weight.shape[0], cell.units
    prefix = f"{part}_model.dcgru_layers.{i}."
    return {
        "gate_weight": f"{prefix}gconv_weight_({rows}, {2 * u})",
        "gate_bias": f"{prefix}gconv_biases_{2 * u}",
        "candidate_weight": f"{prefix}gconv_weight_({rows}, {u})",
        "candidate_bias": f"{prefix}gconv_biases_{u}",
    }


def _pt_names(model: DCRNNSeq2Seq) -> dict[str, str]:
    """Our parameter names -> DCRNN_PyTorch's."""
    names = {f"projection.{p}": f"{_PT_PROJECTION}{p}" for p in ("weight", "bias")}
    for part, cells in (("encoder", model.encoder), ("decoder", model.decoder)):
        for i, cell in enumerate(cells):
            for ours, theirs in _pt_cell_names(part, i, cell).items():
                names[f"{part}.{i}.{ours}"] = theirs
    return names


def load_dcrnn_pytorch(
    state_dict: Mapping[str, Any],
    edge_index: torch.Tensor,
    edge_weight: torch.Tensor,
    *,
    n_node: int,
    input_steps: int,
    horizon: int,
    filter_type: str = "dual_random_walk",
    **options: Any,
) -> DCRNNSeq2Seq:
    """A ``dcrnn`` model from a ``DCRNN_PyTorch`` ``DCRNNModel`` state dict.

    Its forecasts equal ``DCRNNModel``'s with that state dict on the graph whose ``adj_mx[i, j]``
    is the weight of edge ``i -> j``; the model has the state dict's dtype. Layers, units,
    diffusion steps and feature counts are read from the parameter shapes; names are
    ``DCRNN_PyTorch``'s (``encoder_model.dcgru_layers.{i}.gconv_weight_({rows}, {cols})``,
    ``...gconv_biases_{cols}``, ``decoder_model.projection_layer.{weight,bias}``).

    Parameters
    ----------
    state_dict : mapping
        Name -> tensor (or array).
    edge_index, edge_weight : torch.Tensor
        The graph.
    n_node, input_steps, horizon : int
        Shapes (not in the state dict).
    filter_type : str
        The released ``filter_type`` it was trained with (default ``"dual_random_walk"``).
    **options
        Further :class:`DCRNNSeq2Seq` options (``teacher_forcing_decay``, ``recompute``).

    Raises
    ------
    SpecError
        When the names or shapes are not a DCRNN_PyTorch model's.
    """
    shapes: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for name in state_dict:
        match = _PT_WEIGHT.match(name)
        if match:
            key = (match[1], int(match[2]))
            shapes.setdefault(key, []).append((int(match[3]), int(match[4])))
        elif not (_PT_BIAS.match(name) or name.startswith(_PT_PROJECTION)):
            raise SpecError(f"not a DCRNN_PyTorch DCRNNModel parameter: {name!r}")
    layers = sum(1 for part, _ in shapes if part == "encoder")
    projection = state_dict.get(f"{_PT_PROJECTION}weight")
    if projection is not None:
        projection = torch.as_tensor(projection)
    if projection is None or not layers or ("decoder", 0) not in shapes:
        raise SpecError(
            "a DCRNN_PyTorch state dict needs encoder and decoder layers and a projection"
        )
    out_features, hidden = (int(s) for s in projection.shape)
    rows = max(shapes[("decoder", 0)])[0]
    terms, remainder = divmod(rows, out_features + hidden)
    steps, bad = divmod(terms - 1, n_supports(filter_type))
    enc_rows = max(shapes[("encoder", 0)])[0]
    if remainder or bad or enc_rows % terms:
        raise SpecError(f"the gconv shapes do not fit filter_type {filter_type!r}")
    model = DCRNNSeq2Seq(
        edge_index,
        edge_weight,
        n_node=n_node,
        in_features=enc_rows // terms - hidden,
        out_features=out_features,
        input_steps=input_steps,
        horizon=horizon,
        hidden=hidden,
        layers=layers,
        diffusion_steps=steps,
        filter_type=filter_type,
        **options,
    ).to(projection.dtype)
    names = _pt_names(model)
    theirs = {v: k for k, v in names.items()}
    if set(theirs) != set(state_dict):
        differ = sorted(set(theirs) ^ set(state_dict))
        raise SpecError(f"DCRNN_PyTorch state dict does not fit its own shapes: {differ[0]!r}")
    ours = {theirs[k]: torch.as_tensor(v) for k, v in state_dict.items()}
    for name, p in model.state_dict().items():
        if ours[name].shape != p.shape:
            raise SpecError(
                f"{names[name]!r}: shape {tuple(ours[name].shape)}, expected {tuple(p.shape)}"
            )
    model.load_state_dict(ours)
    return model


def export_dcrnn_pytorch(model: DCRNNSeq2Seq) -> dict[str, torch.Tensor]:
    """The state dict of ``model`` under ``DCRNN_PyTorch``'s names (inverse of
    :func:`load_dcrnn_pytorch`)."""
    names = _pt_names(model)
    return {names[k]: v.detach().clone() for k, v in model.state_dict().items()}
