"""partial_derivative, partials and biharmonic (the Taylor engine at orders 1-4) on models of
every kind, against nested ``torch.autograd`` (``create_graph``) of the same function."""

import itertools
import math

import pytest
import torch
from hypothesis import given, strategies as st
from torch import nn

import functional_grads as fg
from functional_grads.operators._directions import polarize
from functional_grads.testing import check_grads
from helpers import assert_close, mlp, smooth_problems

F64 = torch.float64


def nested(f, params, X, index):
    """``d^n f / dx_index`` per sample and output component by nested autograd: ``[B, *out]``."""
    rows = []
    for x in X:
        x = x.clone().requires_grad_()
        y = f(params, x[None])[0]
        comps = []
        for c in y.reshape(-1):
            g = c
            for i in index:
                (d,) = torch.autograd.grad(g, x, create_graph=True)
                g = d.reshape(-1)[i]
            comps.append(g)
        rows.append(torch.stack(comps).reshape(y.shape))
    out = torch.stack(rows).detach()
    return out.reshape(out.shape[0]) if out.shape[1:] == (1,) else out


def nested_biharmonic(f, params, X, dims=None):
    D = X[0].numel()
    idx = range(D) if dims is None else dims
    return sum(nested(f, params, X, (i, i, j, j)) for i in idx for j in idx)


class ManualLayerNorm(nn.Module):
    """LayerNorm written out: torch's own third derivative of layer_norm is wrong on 2.13
    (reverse mode, as its nested jvp, NOTE [nested jvp of norms]), so the references at
    orders 3 and 4 run this twin."""

    def __init__(self, norm):
        super().__init__()
        self.norm = norm

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.norm.eps) * self.norm.weight + self.norm.bias


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp(3, 6, 2, act="tanh", seed=1)

    def forward(self, x):
        return self.net(x)


class Residual(nn.Module):
    def __init__(self, d_out=1):
        super().__init__()
        torch.manual_seed(2)
        self.inp, self.norm, self.block, self.out = nn.Linear(3, 8), nn.LayerNorm(8), nn.Linear(8, 8), nn.Linear(8, d_out)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        return self.out(h + nn.functional.gelu(self.block(self.norm(h))))


class FourierGated(nn.Module):
    """Fourier features into a modified MLP (gating by two encoders), softplus and SiLU."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.B = nn.Parameter(torch.randn(3, 4))
        self.u, self.v, self.h, self.out = nn.Linear(8, 6), nn.Linear(8, 6), nn.Linear(8, 6), nn.Linear(6, 2)

    def forward(self, x):
        z = x @ self.B
        feats = torch.cat([torch.sin(z), torch.cos(z)], -1)
        u, v = torch.tanh(self.u(feats)), nn.functional.silu(self.v(feats))
        g = torch.sigmoid(self.h(feats))
        return self.out(nn.functional.softplus(g * u + (1 - g) * v, beta=2.0))


class SmallConv(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.conv, self.head = nn.Conv1d(1, 2, 3, padding=1), nn.Linear(2 * 3, 1)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x[:, None, :])).flatten(1))


def _shared_activation():
    act = nn.Softplus()
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(3, 6), act, nn.Linear(6, 6), act, nn.Linear(6, 1))


def _tied():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(),
                          nn.Linear(6, 1))
    model[4].weight = model[2].weight
    return model


MODELS = {"mlp": lambda: mlp(3, 6, 2, act="gelu", seed=7), "wrapper": Wrapper, "residual": Residual,
          "fourier gated (2 outputs)": FourierGated, "conv": SmallConv, "shared activation": _shared_activation,
          "tied weights": _tied}


def _twin(model):
    """The same model with every LayerNorm written out (the reference for orders >= 3)."""
    if isinstance(model, Residual):
        model.norm = ManualLayerNorm(model.norm)
    return model


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("index", [(0,), (0, 2), (2, 2, 2), (0, 1, 2), (0, 0, 2, 2)])
def test_partial_derivative_equals_nested_autograd(name, index):
    model = MODELS[name]().double()
    f, params = fg.functionalize(model)
    X = torch.randn(3, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    got = fg.partial_derivative(f, index)(params, X)
    ref_f, ref_params = fg.functionalize(_twin(model) if len(index) > 2 else model)
    assert_close(got, nested(ref_f, ref_params, X, index), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", MODELS)
def test_biharmonic_and_the_vector_laplacian_equal_nested_autograd(name):
    model = MODELS[name]().double()
    f, params = fg.functionalize(model)
    X = torch.randn(2, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    lap = fg.laplacian(f)(params, X)
    assert_close(lap, sum(nested(f, params, X, (i, i)) for i in range(3)), rtol=1e-9, atol=1e-10)
    got = fg.biharmonic(f)(params, X)
    ref_f, ref_params = fg.functionalize(_twin(model))
    assert_close(got, nested_biharmonic(ref_f, ref_params, X), rtol=1e-9, atol=1e-9)


@given(smooth_problems(d_out=None), st.data())
def test_partials_of_random_multi_indices_on_random_mlps(problem, data):
    f, params, X = problem
    D = X.shape[1]
    n = data.draw(st.integers(1, 4))
    index = tuple(data.draw(st.lists(st.integers(0, D - 1), min_size=n, max_size=n)))
    assert_close(fg.partial_derivative(f, index)(params, X), nested(f, params, X, index), rtol=1e-8, atol=1e-9)


@given(smooth_problems(d_out=None))
def test_the_bundle_equals_each_partial_alone(problem):
    f, params, X = problem
    D = X.shape[1]
    wanted = {"u": (), "u_0": (0,), "u_00": (0, 0), "u_last4": (D - 1,) * 4, "mixed": (0, D - 1, D - 1)}
    got = fg.partials(f, wanted)(params, X)
    assert set(got) == set(wanted)
    for name, index in wanted.items():
        want = fg.partial_derivative(f, index)(params, X)
        assert_close(got[name], want, rtol=1e-9, atol=1e-10)


def test_param_gradients_of_high_order_residuals_match_finite_differences():
    f, params = fg.functionalize(Residual().double())
    X = torch.randn(3, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    check_grads(lambda p, X: fg.biharmonic(f)(p, X), (params, X))
    check_grads(lambda p, X: fg.partials(f, {"a": (0, 0, 1), "b": (2,)})(p, X)["a"], (params, X))
    check_grads(lambda p, X: fg.partial_derivative(f, (1, 2))(p, X), (params, X), order=2)


def test_compiled_equals_eager():
    f, params = fg.functionalize(FourierGated().double())
    X = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(3))

    def loss(p, X):
        d = fg.partials(f, {"u_t": (0,), "u_xxxx": (1, 1, 1, 1)})(p, X)
        return (d["u_t"] + d["u_xxxx"]).pow(2).mean() + fg.biharmonic(f)(p, X).pow(2).mean()

    eager = fg.value_and_grad(loss)(params, X)
    compiled = fg.value_and_grad(loss, compile=True)(params, X)
    assert_close(compiled[0], eager[0], rtol=1e-10, atol=1e-12)
    for k in params:
        assert_close(compiled[1][k], eager[1][k], rtol=1e-9, atol=1e-11)


def test_stde_biharmonic_is_unbiased():
    f, params = fg.functionalize(mlp(3, 6, 1, act="tanh", seed=8))
    X = torch.randn(2, 3, dtype=F64, generator=torch.Generator().manual_seed(4))
    exact = fg.biharmonic(f)(params, X)
    est = fg.biharmonic(f, method="stde", num_samples=3, generator=torch.Generator().manual_seed(0))
    draws = torch.stack([est(params, X) for _ in range(300)])
    stderr = draws.std(0) / math.sqrt(len(draws))
    assert ((draws.mean(0) - exact).abs() < 4 * stderr + 1e-12).all()
    assert (draws.std(0) > 0).all()


def test_biharmonic_over_some_dims():
    f, params = fg.functionalize(mlp(3, 6, 2, act="sin", seed=9))
    X = torch.randn(3, 3, dtype=F64)
    assert_close(fg.biharmonic(f, dims=[0, 2])(params, X), nested_biharmonic(f, params, X, [0, 2]), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("index", [(0,), (0, 0), (0, 1), (0, 0, 0), (0, 0, 1), (0, 1, 2), (0, 0, 1, 1), (0, 1, 2, 3)])
def test_polarization_reproduces_every_monomial(index):
    # d^n / dx_index of prod_i x_i^a_i / a! is 1 for a = the index's counts, else 0; its
    # n-th directional derivative along v is n! prod_i v_i^a_i / a!
    n = len(index)
    for alpha in itertools.product(range(n + 1), repeat=4):
        if sum(alpha) != n:
            continue
        got = sum(w * math.factorial(n) * math.prod(dict(v).get(i, 0) ** a for i, a in enumerate(alpha))
                  / math.prod(math.factorial(a) for a in alpha) for v, w in polarize(index).items())
        want = 1 if all(index.count(i) == a for i, a in enumerate(alpha)) else 0
        assert got == want


def test_bad_arguments_are_named():
    f = lambda p, x: x.sum()  # noqa: E731
    X = torch.zeros(2, 3)
    with pytest.raises(TypeError, match=r"^partial_derivative: a multi-index must be a tuple of coordinates "
                                        r"\(non-negative ints\), e.g. \(0, 1\) for d2f/dx0 dx1; got \(0, -1\)\.$"):
        fg.partial_derivative(f, (0, -1))
    with pytest.raises(ValueError, match=r"^partial_derivative: index = \(3,\) names a coordinate outside the "
                                         r"flattened sample's 3\.$"):
        fg.partial_derivative(f, (3,))(None, X)
    with pytest.raises(TypeError, match=r"^partials: wanted must be a non-empty dict name -> multi-index"):
        fg.partials(f, [(0,)])
    with pytest.raises(ValueError, match=r"^biharmonic: method must be one of"):
        fg.biharmonic(f, method="hessian")
    with pytest.raises(ValueError, match=r"^biharmonic: dims must be distinct ints in \[0, 3\)"):
        fg.biharmonic(f, dims=[0, 0])(None, X)
