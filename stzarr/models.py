"""Forecasting models: PyTorch Geometric Temporal (PGT 0.56) recurrent layers with a small head.

Every model maps a batch ``x`` of shape ``(b, t_in, n, f_in)`` (standardised inputs, calendar
features appended) to a forecast of shape ``(b, horizon, n, f_out)`` in standardised units. The
graph is held by the model as non-persistent buffers (moved by ``.to(device)``, not saved in the
``state_dict``), so ``model(x)`` is the whole call.

``dcrnn`` (default)
    PGT's :class:`~torch_geometric_temporal.nn.recurrent.BatchedDCRNN` (``K=3``: two diffusion
    steps) as the PGT-I paper runs it, followed by a per-step linear head ``hidden -> f_out``
    after a ReLU; its output sequence has ``t_in`` steps, so when ``horizon != t_in`` a linear map
    over time turns ``t_in`` steps into ``horizon``.
``dcrnn-seq2seq``
    The DCRNN paper's encoder-decoder: two stacked diffusion-convolutional GRU layers of 64 units
    (two diffusion steps) encode the input; the decoder starts from the encoder's final states and
    a zero "go" frame and feeds its own output forward, one step at a time, with optional
    scheduled sampling (teacher forcing with inverse-sigmoid decay, as in the paper). The GRU gates
    are PGT's: each layer is a :class:`BatchedDCRNN` whose gate methods (PGT's
    :class:`BatchedDConv` diffusion convolutions) are stepped here with an explicit hidden state,
    because ``BatchedDCRNN.forward`` always starts from zeros. PGT's unbatched ``DCRNN`` cannot
    take a batch dimension (it concatenates on ``dim=1`` and densifies the adjacency), so the batch
    is folded into the node dimension with a block-diagonal ``edge_index`` (the graph replicated
    ``b`` times with node offsets ``i * n``; PGT's own ``_replicate_edge_index``) and the node
    normalisation is computed once per forward pass.
``a3tgcn``
    PGT's batched :class:`~torch_geometric_temporal.nn.recurrent.A3TGCN2` (attention over the
    ``t_in`` hidden states of a T-GCN cell) followed by ReLU and a linear head
    ``hidden -> horizon * f_out``, as in PGT's A3T-GCN examples.

PGT behaviours kept as they are (the layers are PGT's, not rewritten): PGT 0.56's diffusion
convolution scales each message by ``1 / weighted out-degree`` of its source node, so edge weights
enter only through the node degrees (the DCRNN paper weights every edge by ``w_ij / d_i``); and
``BatchedDCRNN`` caches the normalisation keyed on ``torch.equal`` of the graph tensors it last
saw, so a graph modified *in place* keeps the stale normalisation (replace the tensors instead).
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from torch_geometric_temporal.nn.recurrent import BatchedDCRNN

from stzarr.errors import SpecError
from stzarr.pgt_compat import import_pgt

MODELS = ("dcrnn", "dcrnn-seq2seq", "a3tgcn")


def _pgt() -> ModuleType:
    """PGT's recurrent layers, imported on first model build: importing PGT costs ~1.5 s, which
    every ``stzarr`` command and ``import stzarr`` would otherwise pay. torch-sparse is not needed
    (:mod:`stzarr.pgt_compat`)."""
    return import_pgt("torch_geometric_temporal.nn.recurrent")


class GraphForecaster(nn.Module):
    """Base class: holds the static graph as non-persistent buffers.

    Subclasses implement :meth:`forecast` ``(x, edge_index, edge_weight) -> y``.
    """

    edge_index: torch.Tensor
    edge_weight: torch.Tensor

    def __init__(
        self,
        edge_index: torch.Tensor,
        edge_weight: torch.Tensor,
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
        self.register_buffer("edge_index", edge_index.to(torch.long), persistent=False)
        self.register_buffer("edge_weight", edge_weight.to(torch.float32), persistent=False)

    def forward(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Forecast ``(b, horizon, n, f_out)`` from ``x`` of shape ``(b, t_in, n, f_in)``."""
        expected = (self.input_steps, self.n_node, self.in_features)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"expected x of shape (b, {', '.join(map(str, expected))}), got {tuple(x.shape)}"
            )
        return self.forecast(x, self.edge_index, self.edge_weight, **kwargs)

    def forecast(
        self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        raise NotImplementedError


class DCRNNForecaster(GraphForecaster):
    """PGT's ``BatchedDCRNN`` + ReLU + linear head (+ a linear time map when ``horizon != t_in``).

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


def _gru_step(
    cell: BatchedDCRNN,
    x: torch.Tensor,
    h: torch.Tensor,
    edge_index: torch.Tensor,
    edge_weight: torch.Tensor,
    cached: bool,
) -> torch.Tensor:
    """One diffusion-convolutional GRU step with PGT's gates on folded ``(b*n, f)`` inputs."""
    z = cell._calculate_update_gate(x, edge_index, edge_weight, h, cached)
    r = cell._calculate_reset_gate(x, edge_index, edge_weight, h, cached)
    h_tilde = cell._calculate_candidate_state(x, edge_index, edge_weight, h, r, cached)
    return cell._calculate_hidden_state(z, h, h_tilde)


class DCRNNSeq2Seq(GraphForecaster):
    """The DCRNN paper's encoder-decoder built from PGT's diffusion-convolutional GRU gates.

    Parameters
    ----------
    hidden : int
        Units per layer (paper: 64).
    layers : int
        Stacked recurrent layers in the encoder and in the decoder (paper: 2).
    diffusion_steps : int
        Maximum diffusion step (paper: 2), i.e. PGT's filter size ``K = diffusion_steps + 1``.
    teacher_forcing_decay : float, optional
        Scheduled sampling: during training, when targets are passed, the decoder is fed the true
        previous step with probability ``d / (d + exp(step / d))`` (paper: ``d = 2000``). None
        disables it (the decoder always feeds its own output).
    """

    def __init__(
        self,
        *args: Any,
        hidden: int = 64,
        layers: int = 2,
        diffusion_steps: int = 2,
        teacher_forcing_decay: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        k = diffusion_steps + 1
        self.hidden = hidden
        self.teacher_forcing_decay = teacher_forcing_decay
        dcrnn = _pgt().BatchedDCRNN
        self.encoder = nn.ModuleList(
            dcrnn(self.in_features if i == 0 else hidden, hidden, K=k) for i in range(layers)
        )
        self.decoder = nn.ModuleList(
            dcrnn(self.out_features if i == 0 else hidden, hidden, K=k) for i in range(layers)
        )
        self.head = nn.Linear(hidden, self.out_features)
        self._folded: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def teacher_forcing_probability(self, step: int) -> float:
        """Probability of feeding the true previous step at training step ``step``."""
        if self.teacher_forcing_decay is None:
            return 0.0
        d = float(self.teacher_forcing_decay)
        return d / (d + math.exp(min(step / d, 700.0)))

    def _block_diagonal(
        self, batch: int, edge_index: torch.Tensor, edge_weight: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        folded = self._folded
        if folded is None or folded[0] != batch or folded[1].device != edge_index.device:
            cell = self.encoder[0]
            index = cell._replicate_edge_index(edge_index, batch, self.n_node)
            folded = (batch, index, edge_weight.repeat(batch))
            self._folded = folded
        return folded[1], folded[2]

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
        b, t_in, n, _ = x.shape
        index, weight = self._block_diagonal(b, edge_index, edge_weight)
        states = [x.new_zeros(b * n, self.hidden) for _ in self.encoder]
        for t in range(t_in):
            inp = x[:, t].reshape(b * n, -1)
            for i, cell in enumerate(self.encoder):
                states[i] = _gru_step(cell, inp, states[i], index, weight, cached=t > 0)
                inp = states[i]
        p_true = self.teacher_forcing_probability(step)
        use_truth = self.training and targets is not None and p_true > 0
        go = x.new_zeros(b * n, self.out_features)
        outputs = []
        for t in range(self.horizon):
            inp = go
            for i, cell in enumerate(self.decoder):
                states[i] = _gru_step(cell, inp, states[i], index, weight, cached=t > 0)
                inp = states[i]
            out = self.head(inp)
            outputs.append(out.reshape(b, n, -1))
            go = out
            if use_truth and torch.rand(()).item() < p_true:
                go = targets[:, t].reshape(b * n, -1)
        return torch.stack(outputs, dim=1)


class A3TGCNForecaster(GraphForecaster):
    """PGT's batched ``A3TGCN2`` + ReLU + linear head ``hidden -> horizon * f_out``."""

    def __init__(self, *args: Any, hidden: int = 32, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # batch_size is unused by A3TGCN2 (kept by PGT for backward compatibility)
        self.recurrent = _pgt().A3TGCN2(
            self.in_features, hidden, periods=self.input_steps, batch_size=1
        )
        self.head = nn.Linear(hidden, self.horizon * self.out_features)

    def forecast(
        self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor, **_: Any
    ) -> torch.Tensor:
        b, _, n, _ = x.shape
        h = self.recurrent(x.permute(0, 2, 3, 1), edge_index, edge_weight)  # b n hidden
        y = self.head(torch.relu(h)).reshape(b, n, self.horizon, self.out_features)
        return y.permute(0, 2, 1, 3)


_CLASSES: dict[str, type[GraphForecaster]] = {
    "dcrnn": DCRNNForecaster,
    "dcrnn-seq2seq": DCRNNSeq2Seq,
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
        ``"dcrnn"`` (PGT ``BatchedDCRNN``, K=3), ``"dcrnn-seq2seq"`` (the paper's
        encoder-decoder) or ``"a3tgcn"`` (PGT ``A3TGCN2``).
    n_node, in_features, out_features, input_steps, horizon : int
        Shapes: ``x`` is ``(b, input_steps, n_node, in_features)``, the forecast
        ``(b, horizon, n_node, out_features)``.
    edge_index, edge_weight : torch.Tensor
        The static graph (COO int64 ``(2, e)`` and float ``(e,)``).
    **options
        Model hyper-parameters (``hidden``; ``K`` for dcrnn; ``layers``, ``diffusion_steps``,
        ``teacher_forcing_decay`` for dcrnn-seq2seq).

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
