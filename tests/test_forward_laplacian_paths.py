"""Which models the forward Laplacian's fast path takes (``supports``), and its answers on
the edge cases of that path, each against the Hessian trace of the same function."""

import pytest
import torch
from torch import nn

import functional_grads as fg
from functional_grads.operators._forward_laplacian import supports

F64 = torch.float64


def _seq(*layers):
    torch.manual_seed(0)
    return nn.Sequential(*layers).double()


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _seq(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))

    def forward(self, x):
        return self.net(x)


CASES = {
    "tanh_mlp": (lambda: _seq(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)), 1, 2, True),
    "identity_and_exact_gelu": (lambda: _seq(nn.Linear(3, 4), nn.Identity(), nn.GELU(), nn.Linear(4, 1)), 1, 2, True),
    "linear_only": (lambda: _seq(nn.Linear(3, 1)), 1, 2, True),
    "tanh_gelu": (lambda: _seq(nn.Linear(3, 4), nn.GELU(approximate="tanh"), nn.Linear(4, 1)), 1, 2, False),
    "dropout": (lambda: _seq(nn.Linear(3, 4), nn.Dropout(0.0), nn.Linear(4, 1)), 1, 2, False),
    "custom_module": (Wrapper, 1, 2, False),
    "argnums_0": (lambda: _seq(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)), 0, 2, False),
    "batch_of_images": (lambda: _seq(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)), 1, 3, False),
}


@pytest.mark.parametrize("name", CASES)
def test_supports_takes_exactly_the_sequential_mlps_it_can_propagate(name):
    build, argnums, ndim, want = CASES[name]
    f, _ = fg.functionalize(build())
    X = torch.zeros((2, 3) if ndim == 2 else (2, 1, 3), dtype=F64)
    assert supports(f, X, argnums) is want
    assert supports(lambda p, x: f(p, x), X, 1) is False  # a plain function: never


def test_tied_weights_are_not_taken():
    lin = nn.Linear(3, 3)
    model = _seq(lin, nn.Tanh(), lin)
    f, _ = fg.functionalize(model)
    assert supports(f, torch.zeros(2, 3, dtype=F64), 1) is False


MODELS = {
    "no_bias": lambda: _seq(nn.Linear(3, 6, bias=False), nn.Tanh(), nn.Linear(6, 1, bias=False)),
    "identity_between": lambda: _seq(nn.Linear(3, 6), nn.Identity(), nn.Softplus(), nn.Identity(), nn.Linear(6, 1)),
    "relu": lambda: _seq(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 1)),
}


@pytest.mark.parametrize("name", MODELS)
def test_edge_models_give_the_hessian_traces_answer(name):
    f, params = fg.functionalize(MODELS[name]())
    X = torch.randn(5, 3, dtype=F64)
    fast = fg.derivatives(f)(params, X)  # the fast path (supports() is tested above)
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


def test_a_vector_output_is_refused_by_the_fast_path():
    f, params = fg.functionalize(_seq(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match=r"^laplacian: f must return one scalar per sample \(shape \[\] or \[1\]\), "
                                         r"but its per-sample output has shape \[2\]\."):
        fg.laplacian(f, method="forward")(params, torch.zeros(2, 3, dtype=F64))
