"""Models: PGT layers wrapped with heads; shapes, graph handling and batch independence."""

from __future__ import annotations

import pytest
import torch

from stzarr.errors import SpecError
from stzarr.models import MODELS, DCRNNSeq2Seq, build_model
from stzarr.pgt_compat import import_pgt

_recurrent = import_pgt("torch_geometric_temporal.nn.recurrent")
A3TGCN2, BatchedDCRNN = _recurrent.A3TGCN2, _recurrent.BatchedDCRNN

N = 6


@pytest.fixture
def graph() -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.arange(N)
    edge_index = torch.stack(
        [torch.cat([src, src, src]), torch.cat([(src + 1) % N, (src - 1) % N, src])]
    )
    edge_weight = torch.linspace(0.2, 1.0, edge_index.shape[1])
    return edge_index, edge_weight


def _model(name: str, graph, input_steps=5, horizon=3, in_features=2, out_features=1, **kw):
    torch.manual_seed(0)
    return build_model(
        name, N, in_features, out_features, input_steps, horizon, *graph, hidden=8, **kw
    )


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(("input_steps", "horizon"), [(5, 3), (4, 4), (2, 6)])
def test_forecast_shape_and_gradients_reach_every_parameter(name, graph, input_steps, horizon):
    model = _model(name, graph, input_steps=input_steps, horizon=horizon)
    y = model(torch.randn(3, input_steps, N, 2))
    assert y.shape == (3, horizon, N, 1)
    y.square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_models_are_pgt_layers(graph):
    assert isinstance(_model("dcrnn", graph).recurrent, BatchedDCRNN)
    assert isinstance(_model("a3tgcn", graph).recurrent, A3TGCN2)
    seq = _model("dcrnn-seq2seq", graph)
    assert all(isinstance(c, BatchedDCRNN) for c in [*seq.encoder, *seq.decoder])
    # the paper's set-up: 2 layers, 2 diffusion steps (PGT filter size K = 3)
    assert len(seq.encoder) == 2 and seq.encoder[0].K == 3


@pytest.mark.parametrize("name", MODELS)
def test_batch_elements_are_independent(name, graph):
    """Folding the batch into the node axis must not mix samples: a batch's forecast equals
    the forecasts of its samples one by one."""
    model = _model(name, graph).eval()
    x = torch.randn(4, 5, N, 2)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_graph_is_a_buffer_not_in_state_dict(graph):
    model = _model("dcrnn", graph)
    assert "edge_index" not in model.state_dict()
    assert model.edge_index.dtype == torch.long
    assert torch.equal(model.edge_index, graph[0])


@pytest.mark.parametrize("name", MODELS)
def test_graph_weights_change_the_forecast(name, graph):
    """PGT's diffusion convolution uses edge weights through the (weighted) node degrees, GCN
    through its normalisation: another weighting gives another forecast."""
    edge_index, edge_weight = graph
    x = torch.randn(2, 5, N, 2)
    reweighted = edge_weight * torch.linspace(0.1, 3.0, edge_weight.numel())
    with torch.no_grad():
        a = _model(name, (edge_index, edge_weight)).eval()(x)
        b = _model(name, (edge_index, reweighted)).eval()(x)
    assert not torch.allclose(a, b)


def test_wrong_input_shape_is_rejected(graph):
    model = _model("dcrnn", graph)
    with pytest.raises(ValueError, match="expected x of shape"):
        model(torch.randn(2, 4, N, 2))


def test_unknown_model_and_bad_shapes(graph):
    with pytest.raises(SpecError, match="unknown model 'gru'"):
        build_model("gru", N, 1, 1, 4, 4, *graph)
    with pytest.raises(SpecError, match="horizon must be positive"):
        build_model("dcrnn", N, 1, 1, 4, 0, *graph)


def test_seq2seq_decoder_feeds_its_own_output_without_teacher_forcing(graph):
    model = _model("dcrnn-seq2seq", graph, teacher_forcing_decay=None).train()
    x = torch.randn(2, 5, N, 2)
    targets = torch.randn(2, 3, N, 1)
    torch.manual_seed(1)
    a = model(x)
    b = model(x, targets=targets, step=0)
    torch.testing.assert_close(a, b)


def test_seq2seq_scheduled_sampling_uses_targets_in_training_only(graph):
    model = _model("dcrnn-seq2seq", graph, teacher_forcing_decay=1e9)  # p(truth) ~ 1
    assert isinstance(model, DCRNNSeq2Seq)
    assert model.teacher_forcing_probability(0) > 0.99
    assert model.teacher_forcing_probability(10**12) < 1e-3
    x = torch.randn(2, 5, N, 2)
    t1, t2 = torch.randn(2, 3, N, 1), torch.randn(2, 3, N, 1)
    model.train()
    y1 = model(x, targets=t1, step=0)
    y2 = model(x, targets=t2, step=0)
    # the first step never sees targets; later steps are fed the (different) true values
    torch.testing.assert_close(y1[:, 0], y2[:, 0])
    assert not torch.allclose(y1[:, 1:], y2[:, 1:])
    model.eval()
    torch.testing.assert_close(model(x, targets=t1), model(x, targets=t2))
