"""The Taylor engine (NOTE [Taylor engine]) on models of every kind, against nested
autograd of the same function."""

import pytest
import torch
from torch import nn

import functional_grads as fg

F64 = torch.float64


def _seq(*layers):
    torch.manual_seed(0)
    return nn.Sequential(*layers).double()


MODELS = {
    "no_bias": lambda: _seq(nn.Linear(3, 6, bias=False), nn.Tanh(), nn.Linear(6, 1, bias=False)),
    "identity_between": lambda: _seq(nn.Linear(3, 6), nn.Identity(), nn.Softplus(), nn.Identity(), nn.Linear(6, 1)),
    "relu": lambda: _seq(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 1)),
}


@pytest.mark.parametrize("name", MODELS)
def test_edge_models_give_the_hessian_traces_answer(name):
    f, params = fg.functionalize(MODELS[name]())
    X = torch.randn(5, 3, dtype=F64)
    fast = fg.derivatives(f)(params, X)
    u = f(params, X).squeeze(-1)
    du = fg.input_grad(lambda p, x: f(p, x))(params, X)
    lap = fg.laplacian(lambda p, x: f(p, x), method="hessian")(params, X)
    for got, want in zip(fast, (u, du, lap)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_a_linear_model_has_zero_laplacian_and_its_weights_as_gradient():
    model = _seq(nn.Linear(3, 1))
    f, params = fg.functionalize(model)
    X = torch.randn(4, 3, dtype=F64)
    u, du, lap = fg.derivatives(f)(params, X)
    torch.testing.assert_close(du, model[0].weight.detach().expand(4, 3), rtol=0, atol=0)
    torch.testing.assert_close(lap, torch.zeros(4, dtype=F64), rtol=0, atol=0)


def test_a_vector_output_gives_the_laplacian_of_each_component():
    f, params = fg.functionalize(_seq(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)))
    X = torch.randn(5, 3, dtype=F64)
    got = fg.laplacian(f)(params, X)
    for i in range(2):
        want = fg.laplacian(lambda p, x: f(p, x)[..., i], method="hessian")(params, X)
        torch.testing.assert_close(got[:, i], want, rtol=1e-10, atol=1e-12)
