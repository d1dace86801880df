"""``dcrnn`` computes the released DCRNN's function: checked against an independent NumPy
oracle (``dcrnn_oracle``) through DCRNN_PyTorch-named state dicts, with gradients checked
numerically."""

from __future__ import annotations

import dcrnn_oracle as oracle
import numpy as np
import pytest
import torch

from stzarr.errors import SpecError, StzarrError
from stzarr.training import dcrnn
from stzarr.training.models import (
    DCRNNSeq2Seq,
    build_model,
    export_dcrnn_pytorch,
    load_dcrnn_pytorch,
)

N = 7


def _graph() -> tuple[np.ndarray, np.ndarray]:
    """Weighted, directed, with a duplicate edge, a node without edges (5), a node with
    out-edges only (6) and a node whose only out-edge weighs 0 (4). The weights are exact in
    float32 (the models hold the graph in float32), so float64 runs compare to 1e-10."""
    edges = [
        (0, 1, 0.75),
        (1, 2, 1.25),
        (2, 0, 0.375),
        (0, 3, 2.0),
        (3, 1, 0.875),
        (1, 0, 0.25),
        (0, 1, 0.5),
        (6, 0, 1.125),
        (6, 3, 0.3125),
        (4, 2, 0.0),
        (2, 4, 0.8125),
        (3, 3, 1.0),
    ]
    index = np.array([[e[0] for e in edges], [e[1] for e in edges]])
    weight = np.array([e[2] for e in edges])
    return index, weight


def _params(seed=0, *, in_features=2, out_features=1, units=4, layers=2, steps=2, supports=2):
    return oracle.random_state_dict(
        np.random.default_rng(seed),
        in_features=in_features,
        out_features=out_features,
        units=units,
        layers=layers,
        terms=supports * steps + 1,
    )


def _load(params, *, input_steps, horizon, dtype=torch.float64, **kw) -> DCRNNSeq2Seq:
    index, weight = _graph()
    model = load_dcrnn_pytorch(
        {k: torch.from_numpy(v) for k, v in params.items()},
        torch.from_numpy(index),
        torch.from_numpy(weight),
        n_node=N,
        input_steps=input_steps,
        horizon=horizon,
        **kw,
    )
    return model.to(dtype).eval()


def test_supports_are_the_released_random_walks():
    index, weight = _graph()
    a = oracle.adjacency(index, weight, N)
    for filter_type in dcrnn.FILTERS:
        got = dcrnn.build_supports(
            torch.from_numpy(index), torch.from_numpy(weight), N, filter_type, dtype=torch.float64
        )
        want = oracle.supports(a, filter_type)
        assert len(got) == len(want)
        for (s, st), w in zip(got, want, strict=True):
            assert s.layout == torch.sparse_csr and st.layout == torch.sparse_csr
            np.testing.assert_allclose(s.to_dense().numpy(), w, atol=1e-15)
            np.testing.assert_allclose(st.to_dense().numpy(), w.T, atol=1e-15)
    # zero degrees give zero rows, not inf: node 5 has no edge, node 4's out-weight is 0
    s0 = got[0][0].to_dense().numpy()
    assert np.isfinite(s0).all() and not s0[:, 4].any() and not s0[:, 5].any()


@pytest.mark.parametrize(
    ("steps", "layers", "filter_type"),
    [
        (2, 2, "dual_random_walk"),
        (3, 1, "dual_random_walk"),
        (1, 2, "random_walk"),
        (0, 1, "dual_random_walk"),
    ],
)
def test_forecasts_equal_the_oracle_in_float64(steps, layers, filter_type):
    supports = dcrnn.n_supports(filter_type)
    params = _params(1, steps=steps, layers=layers, supports=supports)
    model = _load(params, input_steps=4, horizon=3, filter_type=filter_type)
    assert (model.diffusion_steps, len(model.encoder), model.hidden) == (steps, layers, 4)
    x = np.random.default_rng(2).normal(size=(3, 4, N, 2))
    index, weight = _graph()
    want = oracle.forecast(
        params,
        oracle.adjacency(index, weight, N),
        x,
        3,
        steps=steps,
        filter_type=filter_type,
    )
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    assert np.abs(want).max() > 0.1  # not a trivially small forecast
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


def test_forecasts_equal_the_oracle_in_float32_and_with_recompute():
    params = _params(3, units=8)
    x = np.random.default_rng(4).normal(size=(2, 5, N, 2))
    index, weight = _graph()
    want = oracle.forecast(params, oracle.adjacency(index, weight, N), x, 4)
    for recompute in (False, True):
        model = _load(params, input_steps=5, horizon=4, dtype=torch.float32, recompute=recompute)
        got = model(torch.from_numpy(x).float()).detach().numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_scheduled_sampling_feeds_the_truth_as_the_oracle_does():
    params = _params(5)
    model = _load(params, input_steps=3, horizon=4, teacher_forcing_decay=1e12).train()
    rng = np.random.default_rng(6)
    x, truth = rng.normal(size=(2, 3, N, 2)), rng.normal(size=(2, 4, N, 1))
    torch.manual_seed(0)
    got = model(torch.from_numpy(x), targets=torch.from_numpy(truth), step=0).detach().numpy()
    index, weight = _graph()
    want = oracle.forecast(params, oracle.adjacency(index, weight, N), x, 4, teacher=truth)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


def test_gradients_pass_gradcheck():
    params = _params(7, units=3, layers=2)
    x = torch.from_numpy(np.random.default_rng(8).normal(size=(2, 3, N, 2)))
    for recompute in (False, True):
        model = _load(params, input_steps=3, horizon=2, recompute=recompute).train()
        names = [name for name, _ in model.named_parameters()]
        leaves = [p.detach().clone().requires_grad_() for p in model.parameters()]

        def run(*values, model=model, names=names):
            return torch.func.functional_call(model, dict(zip(names, values, strict=True)), (x,))

        assert torch.autograd.gradcheck(run, leaves, eps=1e-6, atol=1e-7)
    # and the input: the diffusion's hand-written backward
    inp = x.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda v: model(v), (inp,), eps=1e-6, atol=1e-7)


def test_export_round_trips_and_names_are_dcrnn_pytorchs():
    params = _params(9, units=5, in_features=3, out_features=2)
    model = _load(params, input_steps=2, horizon=2, dtype=torch.float64)
    exported = export_dcrnn_pytorch(model)
    assert set(exported) == set(params)
    for name, value in params.items():
        np.testing.assert_array_equal(exported[name].numpy(), value)
    assert "encoder_model.dcgru_layers.0.gconv_weight_(40, 10)" in exported  # (3 + 5) * 5 rows
    assert "decoder_model.dcgru_layers.1.gconv_biases_5" in exported
    # and a model trained here exports to a state dict that loads back to the same forecasts
    index, weight = _graph()
    torch.manual_seed(0)
    ours = build_model(
        "dcrnn", N, 2, 1, 3, 2, torch.from_numpy(index), torch.from_numpy(weight), hidden=6
    ).eval()
    back = load_dcrnn_pytorch(
        export_dcrnn_pytorch(ours),
        torch.from_numpy(index),
        torch.from_numpy(weight),
        n_node=N,
        input_steps=3,
        horizon=2,
    ).eval()
    x = torch.randn(2, 3, N, 2)
    with torch.no_grad():
        torch.testing.assert_close(back(x), ours(x), rtol=0, atol=0)


def test_initialisation_is_the_released_one():
    index, weight = _graph()
    torch.manual_seed(0)
    model = build_model(
        "dcrnn", N, 2, 1, 3, 2, torch.from_numpy(index), torch.from_numpy(weight), hidden=64
    )
    cell = model.encoder[1]
    rows = 128 * 5
    assert cell.gate_weight.shape == (rows, 128) and cell.candidate_weight.shape == (rows, 64)
    assert torch.equal(cell.gate_bias, torch.ones(128))
    assert torch.equal(cell.candidate_bias, torch.zeros(64))
    # xavier normal over the (F * M, out) matrix
    assert cell.gate_weight.std().item() == pytest.approx((2 / (rows + 128)) ** 0.5, rel=0.03)
    assert cell.candidate_weight.mean().abs().item() < 0.01


def test_foreign_state_dicts_are_refused_in_one_line():
    index, weight = _graph()
    graph = (torch.from_numpy(index), torch.from_numpy(weight))
    model = build_model("dcrnn", N, 2, 1, 3, 2, *graph, hidden=4)
    pgt_names = {"encoder.0.conv_x_z.weight": torch.zeros(1), "head.weight": torch.zeros(1)}
    with pytest.raises(StzarrError, match="not this dcrnn's") as info:
        model.load_state_dict(pgt_names)
    assert "\n" not in str(info.value)
    params = {k: torch.from_numpy(v) for k, v in _params(0).items()}
    with pytest.raises(SpecError, match="not a DCRNN_PyTorch"):
        load_dcrnn_pytorch(
            {**params, "extra": torch.zeros(1)}, *graph, n_node=N, input_steps=2, horizon=2
        )
    # a parameter missing
    del params["decoder_model.projection_layer.bias"]
    with pytest.raises(SpecError, match="does not fit"):
        load_dcrnn_pytorch(params, *graph, n_node=N, input_steps=2, horizon=2)


def test_bad_options_are_spec_errors():
    index, weight = _graph()
    graph = (torch.from_numpy(index), torch.from_numpy(weight))
    with pytest.raises(SpecError, match="filter_type"):
        build_model("dcrnn", N, 2, 1, 3, 2, *graph, filter_type="laplacian")
    with pytest.raises(SpecError, match="diffusion_steps"):
        build_model("dcrnn", N, 2, 1, 3, 2, *graph, diffusion_steps=-1)


def test_diffusion_plan_carries_x0_across_supports():
    """For K = 2 the second support's terms are S1 S0 x and 2 S1 S1 S0 x - S0 x."""
    assert dcrnn.diffusion_plan(2, 2) == ((0, 0, None), (0, 1, 0), (1, 1, None), (1, 3, 1))
    assert dcrnn.diffusion_plan(2, 1) == ((0, 0, None), (1, 0, None))
    assert dcrnn.diffusion_plan(2, 0) == ()


def test_recompute_is_plumbed_from_the_cli_to_the_model(tmp_path, monkeypatch):
    """``--recompute`` reaches the model: its steps run under checkpointing, and the loss curve
    is that of the run without it."""
    import argparse

    from stzarr.cli.options import add_options, run_options
    from stzarr.testing.validators import make_store
    from stzarr.training.config import RunOptions, TrainConfig
    from stzarr.training.train import train

    parser = argparse.ArgumentParser()
    add_options(parser, RunOptions)
    assert run_options(parser.parse_args(["--recompute"])).recompute
    assert not run_options(parser.parse_args([])).recompute
    with pytest.raises(SpecError, match="dcrnn only"):
        RunOptions(model="a3tgcn", recompute=True)

    calls = []
    original = dcrnn.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(dcrnn, "checkpoint", counting)
    store = make_store(tmp_path / "s.zarr", n_time=300, n_node=5, chunk_time=64)
    small = dict(batch_size=4, input_steps=3, horizon=2, max_batches=2, threads=1, progress=False)
    curves = []
    for recompute in (False, True):
        config = TrainConfig.of(
            model="dcrnn", recompute=recompute, model_options={"hidden": 4}, **small
        )
        result = train(store, config)
        curves.append([v for record in result.history for v in record["batch_losses"]])
        assert bool(calls) == recompute
    np.testing.assert_allclose(curves[1], curves[0], rtol=1e-5)
