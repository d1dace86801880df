"""Models: PGT layers wrapped with heads; shapes, graph handling, batch independence, cached
graph normalisation, and training in an environment without torch-sparse and torch-scatter."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from stzarr.errors import SpecError
from stzarr.training.dcrnn import DCGRUCell
from stzarr.training.models import MODELS, DCRNNSeq2Seq, PGTBatchedDCRNN, build_model
from stzarr.training.pgt_compat import import_pgt, torch_sparse_is_placeholder

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


def test_pgt_models_are_pgt_layers_and_dcrnn_is_the_released_cell(graph):
    assert MODELS == ("dcrnn", "pgt-batched-dcrnn", "a3tgcn")
    pgt = _model("pgt-batched-dcrnn", graph)
    assert isinstance(pgt, PGTBatchedDCRNN) and isinstance(pgt.recurrent, BatchedDCRNN)
    assert isinstance(_model("a3tgcn", graph).recurrent, A3TGCN2)
    seq = _model("dcrnn", graph)
    assert isinstance(seq, DCRNNSeq2Seq)
    assert all(isinstance(c, DCGRUCell) for c in [*seq.encoder, *seq.decoder])
    # the paper's set-up: 2 layers, 2 diffusion steps, dual random walk (5 terms)
    assert len(seq.encoder) == 2 and seq.diffusion_steps == 2 and seq.encoder[0].n_terms == 5


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
    model = _model("dcrnn", graph, teacher_forcing_decay=None).train()
    x = torch.randn(2, 5, N, 2)
    targets = torch.randn(2, 3, N, 1)
    torch.manual_seed(1)
    a = model(x)
    b = model(x, targets=targets, step=0)
    torch.testing.assert_close(a, b)


def test_seq2seq_scheduled_sampling_uses_targets_in_training_only(graph):
    model = _model("dcrnn", graph, teacher_forcing_decay=1e9)  # p(truth) ~ 1
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


def test_pgt_batched_dcrnn_reads_step_h_after_h_inputs(graph):
    """PGT-I's alignment (why it is not called dcrnn): forecast step 0 depends on input step 0
    only, so changing the later inputs leaves it unchanged; the paper's encoder-decoder reads
    every input before its first output."""
    x = torch.randn(2, 5, N, 2)
    later = x.clone()
    later[:, 1:] += 1.0
    pgt = _model("pgt-batched-dcrnn", graph, input_steps=5, horizon=5).eval()
    seq = _model("dcrnn", graph, input_steps=5, horizon=5).eval()
    with torch.no_grad():
        torch.testing.assert_close(pgt(x)[:, 0], pgt(later)[:, 0])
        assert not torch.allclose(seq(x)[:, 0], seq(later)[:, 0])


def _fresh_copy(name: str, model, graph, **kw):
    """The same parameters in a model that has never run (no cached normalisation)."""
    twin = _model(name, graph, **kw).eval()
    twin.load_state_dict(model.state_dict())
    return twin


@pytest.mark.parametrize("name", ["dcrnn", "a3tgcn"])
def test_cached_graph_normalisation_matches_a_fresh_model(name, graph):
    """The normalisation is computed once per graph (and batch size) and reused: forecasts over
    alternating batch sizes, and after the graph buffers are replaced, equal those of a model
    that computes everything afresh."""
    model = _model(name, graph).eval()
    checked = 0
    with torch.no_grad():
        for b in (3, 3, 1, 3):
            x = torch.randn(b, 5, N, 2)
            torch.testing.assert_close(model(x), _fresh_copy(name, model, graph)(x))
            checked += 1
        edge_index, edge_weight = graph
        reweighted = edge_weight * torch.linspace(0.1, 3.0, edge_weight.numel())
        before = model(x)
        model.edge_weight = reweighted  # a replaced buffer drops the cached normalisation
        after = model(x)
        assert not torch.allclose(before, after)
        torch.testing.assert_close(after, _fresh_copy(name, model, (edge_index, reweighted))(x))
        checked += 1
    assert checked == 5


def test_a3tgcn_cached_equals_pgt_uncached(graph):
    """PGT's own uncached A3TGCN2 (normalising the graph on every call) is the oracle."""
    model = _model("a3tgcn", graph).eval()
    assert model.recurrent.cached
    oracle = A3TGCN2(2, 8, periods=5, batch_size=1, cached=False)
    oracle.load_state_dict(model.recurrent.state_dict())
    x = torch.randn(3, 5, N, 2)
    with torch.no_grad():
        for _ in range(2):
            got = model.recurrent(x.permute(0, 2, 3, 1), model.edge_index, model.edge_weight)
            want = oracle(x.permute(0, 2, 3, 1), *graph)
            torch.testing.assert_close(got, want)


# -- an environment without torch-sparse and torch-scatter (the test environment is one) --------


def test_environment_has_no_torch_sparse_or_torch_scatter():
    import_pgt()
    assert importlib.util.find_spec("torch_scatter") is None
    assert torch_sparse_is_placeholder()
    from torch_geometric.typing import SparseTensor

    assert sys.modules["torch_sparse"].SparseTensor is SparseTensor  # PyG's placeholder
    with pytest.raises(ImportError, match="torch-sparse"):
        SparseTensor(row=torch.tensor([0]), col=torch.tensor([1]))


def _regression_task(graph, steps_in=5, horizon=3):
    """A learnable task: targets are a fixed smooth function of the inputs over the graph."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, steps_in, N, 2, generator=gen)
    neighbour_mean = (x[:, -1, :, :1] + x[:, -1, :, :1].roll(1, dims=1)) / 2
    y = torch.stack([neighbour_mean * (0.5 + 0.2 * h) for h in range(horizon)], dim=1)
    return x, y


@pytest.mark.parametrize("name", MODELS)
def test_every_model_trains_without_torch_sparse(name, graph):
    """The models stzarr uses import and train here: a few Adam steps reduce the loss."""
    assert torch_sparse_is_placeholder()
    x, y = _regression_task(graph)
    model = _model(name, graph).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(20):
        loss = (model(x) - y).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert len(losses) == 20
    assert losses[-1] < 0.85 * losses[0], losses


def test_evolvegcno_runs_without_torch_sparse():
    """PGT's EvolveGCNO imports SparseTensor for a type annotation only: on an edge_index graph
    it runs and trains without torch-sparse."""
    evolve = import_pgt("torch_geometric_temporal.nn.recurrent").EvolveGCNO(4)
    x = torch.randn(N, 4)
    edge_index = torch.stack([torch.arange(N), (torch.arange(N) + 1) % N])
    out = evolve(x, edge_index, torch.rand(N))
    assert out.shape == (N, 4)
    out.square().sum().backward()
    assert all(p.grad is not None for p in evolve.parameters() if p.requires_grad)
