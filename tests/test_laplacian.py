"""laplacian (every method, dims, weights), derivatives, divergence methods: against the
Hessian trace, finite differences, each other, and (stochastic) in expectation."""

import math
import warnings

import pytest
import torch
from hypothesis import given, strategies as st
from torch import nn

import functional_grads as fg
from functional_grads.testing import check_grads
from helpers import assert_close, mlp, smooth_problems

EXACT = ["forward", "taylor", "hessian", "auto"]


def _hessian_op(f, params, X, dims=None, A=None):
    H = fg.input_hessian(f)(params, X).reshape(X.shape[0], X[0].numel(), X[0].numel())
    idx = list(range(X[0].numel())) if dims is None else list(dims)
    H = H[:, idx][:, :, idx]
    A = torch.eye(len(idx), dtype=X.dtype) if A is None else A
    return (H * A).sum((1, 2))


@given(smooth_problems(), st.sampled_from(EXACT))
def test_every_exact_method_is_the_hessian_trace_and_its_param_gradient_is_right(problem, method):
    f, params, X = problem
    lap = fg.laplacian(f, method=method)
    assert_close(lap(params, X), _hessian_op(f, params, X))
    check_grads(lap, (params, X))


@pytest.mark.parametrize("method", EXACT)
def test_generic_path_for_any_function(method):
    # a lambda is never the MLP fast path: forward-over-reverse / Taylor mode / Hessian
    f, params = fg.functionalize(mlp(3, 6, 2, act="sin"))
    g = lambda p, x: f(p, x) * torch.cos(x).sum()  # noqa: E731
    X = torch.randn(4, 3, dtype=torch.float64)
    assert_close(fg.laplacian(g, method=method)(params, X), _hessian_op(g, params, X))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.norm, self.block, self.out = nn.Linear(3, 8), nn.LayerNorm(8), nn.Linear(8, 8), nn.Linear(8, 1)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        return self.out(h + nn.functional.gelu(self.block(self.norm(h))))


class SmallConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 2, 3, padding=1), nn.Linear(2 * 4 * 4, 1)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x)).flatten(1))


@pytest.mark.parametrize("make, shape", [(Residual, (3,)), (SmallConv, (1, 4, 4))])
def test_non_mlp_models_through_the_generic_path(make, shape):
    torch.manual_seed(0)
    f, params = fg.functionalize(make().double())
    X = torch.randn(3, *shape, dtype=torch.float64)
    expected = _hessian_op(f, params, X)
    assert_close(fg.laplacian(f, method="forward")(params, X), expected)
    if make is Residual:  # LayerNorm: torch's nested jvp is wrong (pytorch/pytorch#196700)
        with pytest.raises(ValueError, match="layer_norm.*196700.*method='forward'"):
            fg.laplacian(f, method="taylor")(params, X)
    else:
        assert_close(fg.laplacian(f, method="taylor")(params, X), expected)


@given(smooth_problems(), st.data())
def test_dims_and_weights(problem, data):
    f, params, X = problem
    D = X.shape[1]
    dims = data.draw(st.lists(st.integers(0, D - 1), min_size=1, max_size=D, unique=True))
    M = torch.randn(len(dims), len(dims), dtype=torch.float64, generator=torch.Generator().manual_seed(len(dims)))
    A = M + M.T
    for method in ("forward", "taylor", "hessian"):
        assert_close(fg.laplacian(f, method=method, dims=dims)(params, X), _hessian_op(f, params, X, dims))
        assert_close(fg.laplacian(f, method=method, dims=dims, weights=A)(params, X), _hessian_op(f, params, X, dims, A))


@given(smooth_problems())
def test_derivatives_bundle_equals_the_separate_transforms(problem):
    f, params, X = problem
    for g in (f, lambda p, x: f(p, x)):  # fast path and generic path
        value, grads, lap = fg.derivatives(g)(params, X)
        assert_close(value, f(params, X).reshape(-1))
        assert_close(grads, fg.input_grad(f)(params, X))
        assert_close(lap, _hessian_op(f, params, X))
    t_dims = fg.derivatives(f, dims=range(1, X.shape[1]))(params, X)[2] if X.shape[1] > 1 else None
    if t_dims is not None:
        assert_close(t_dims, _hessian_op(f, params, X, range(1, X.shape[1])))


@pytest.mark.parametrize("act", ["tanh", "softplus", "gelu", "relu"])
def test_forward_laplacian_compiles_and_equals_eager(act):
    f, params = fg.functionalize(mlp(4, 16, 2, act=act, dtype=torch.float32))
    X = torch.randn(9, 4)
    loss = lambda p, X: fg.laplacian(f)(p, X).pow(2).mean() + fg.derivatives(f)(p, X)[1].pow(2).mean()  # noqa: E731
    eager = fg.value_and_grad(loss, check=False)(params, X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fg.CompileFallbackWarning)
        compiled = fg.value_and_grad(loss, compile=True, check=False)(params, X)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method, probe", [("hutchinson", "rademacher"), ("hutchinson", "gaussian"),
                                           ("hutchinson", "sphere"), ("stde", "rademacher")])
@pytest.mark.parametrize("fast", [True, False])
def test_stochastic_estimators_are_unbiased(method, probe, fast):
    f, params = fg.functionalize(mlp(5, 8, 2, act="tanh", seed=3))
    g = f if fast else (lambda p, x: f(p, x))
    X = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    exact = _hessian_op(f, params, X)
    est = fg.laplacian(g, method=method, probe=probe, num_samples=2, generator=torch.Generator().manual_seed(0))
    draws = torch.stack([est(params, X) for _ in range(300)])  # [300, B]
    stderr = draws.std(0) / math.sqrt(len(draws))
    assert ((draws.mean(0) - exact).abs() < 4 * stderr + 1e-12).all()
    assert (draws.std(0) > 0).all()


@pytest.mark.parametrize("method", ["hutchinson", "stde"])
def test_stochastic_estimators_with_indefinite_weights_are_unbiased(method):
    f, params = fg.functionalize(mlp(3, 8, 2, act="tanh", seed=3))
    X = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    A = torch.tensor([[1.0, 0.5], [0.5, -2.0]], dtype=torch.float64)  # one negative eigenvalue
    exact = _hessian_op(f, params, X, [0, 2], A)
    est = fg.laplacian(f, method=method, dims=[0, 2], weights=A, num_samples=2, generator=torch.Generator().manual_seed(0))
    draws = torch.stack([est(params, X) for _ in range(300)])
    stderr = draws.std(0) / math.sqrt(len(draws))
    assert ((draws.mean(0) - exact).abs() < 4 * stderr + 1e-12).all()


@pytest.mark.parametrize("method", ["forward", "taylor", "hessian"])
@pytest.mark.parametrize("A", [torch.eye(3), torch.diag(torch.tensor([2.0, 2.0, -1.0])), torch.zeros(3, 3)],
                         ids=["identity", "repeated-indefinite", "zero"])
def test_a_learned_weight_matrix_gets_its_exact_gradient(method, A):
    # d tr(A H) / dA = H, also at repeated eigenvalues, where an eigendecomposition's
    # backward is NaN (the previous implementation).
    f, params = fg.functionalize(mlp(3, 8, 2, act="tanh", seed=3))
    X = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    A = A.double()
    loss = lambda p, A, X: fg.laplacian(f, method=method, weights=A)(p, X).sum()  # noqa: E731
    value, (_, dA) = fg.value_and_grad(loss, argnums=(0, 1))(params, A, X)
    H = fg.input_hessian(f)(params, X)
    assert_close(value, (H * A).sum(), rtol=1e-10, atol=1e-12)
    assert_close(dA, H.sum(0), rtol=1e-10, atol=1e-12)


def test_stochastic_estimators_are_reproducible_with_a_seeded_generator():
    f, params = fg.functionalize(mlp(5, 8, 2))
    X = torch.randn(3, 5, dtype=torch.float64)
    for method in ("hutchinson", "stde"):
        make = lambda: fg.laplacian(f, method=method, num_samples=2, generator=torch.Generator().manual_seed(7))  # noqa: E731
        assert torch.equal(make()(params, X), make()(params, X))


def test_stde_with_every_direction_is_exact():
    f, params = fg.functionalize(mlp(4, 8, 2))
    X = torch.randn(3, 4, dtype=torch.float64)
    assert_close(fg.laplacian(f, method="stde", num_samples=4)(params, X), _hessian_op(f, params, X))


@given(smooth_problems(square=True))
def test_divergence_methods_agree(problem):
    f, params, X = problem
    reference = fg.divergence(f, method="jacobian")(params, X)
    assert_close(fg.divergence(f, method="forward")(params, X), reference)
    assert_close(fg.jacobian_trace(f)(params, X), reference)
    check_grads(fg.divergence(f, method="forward"), (params, X))


def test_hutchinson_divergence_is_unbiased():
    f, params = fg.functionalize(mlp(4, 8, 1, d_out=4, seed=2))
    X = torch.randn(2, 4, dtype=torch.float64)
    exact = fg.divergence(f)(params, X)
    est = fg.divergence(f, method="hutchinson", num_samples=2, generator=torch.Generator().manual_seed(0))
    draws = torch.stack([est(params, X) for _ in range(300)])
    assert ((draws.mean(0) - exact).abs() < 4 * draws.std(0) / math.sqrt(300) + 1e-12).all()


@pytest.mark.parametrize("method", ["forward", "jacobian", "auto"])
def test_divergence_over_some_dims_is_the_spatial_divergence(method):
    # (t, x, y) -> (u, v): du/dx + dv/dy, by hand with autograd
    f, params = fg.functionalize(mlp(3, 8, 2, d_out=2, act="sin", seed=4))
    X = torch.randn(4, 3, dtype=torch.float64)
    x = X.clone().requires_grad_()
    uv = f(params, x)
    du = torch.autograd.grad(uv[:, 0].sum(), x, retain_graph=True)[0]
    dv = torch.autograd.grad(uv[:, 1].sum(), x)[0]
    want = du[:, 1] + dv[:, 2]
    assert_close(fg.divergence(f, dims=[1, 2], method=method)(params, X), want)
    assert_close(fg.divergence(f, dims=range(1, 3), method=method)(params, X), want)
    with pytest.raises(ValueError, match=r"^divergence: with dims of 3 coordinates, f's per-sample output must have "
                                         r"3 elements \(output k is differentiated by coordinate dims\[k\]\), got "
                                         r"shape \[2\]\.$"):
        fg.divergence(f, dims=[0, 1, 2], method=method)(params, X)


def test_hutchinson_divergence_over_some_dims_is_unbiased():
    f, params = fg.functionalize(mlp(4, 8, 1, d_out=3, seed=2))
    X = torch.randn(2, 4, dtype=torch.float64)
    exact = fg.divergence(f, dims=[3, 1, 2])(params, X)
    est = fg.divergence(f, dims=[3, 1, 2], method="hutchinson", num_samples=2,
                        generator=torch.Generator().manual_seed(0))
    draws = torch.stack([est(params, X) for _ in range(300)])
    assert ((draws.mean(0) - exact).abs() < 4 * draws.std(0) / math.sqrt(300) + 1e-12).all()


def test_bad_options():
    f, params = fg.functionalize(mlp(3, 4, 1))
    X = torch.randn(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="method must be one of"):
        fg.laplacian(f, method="folx")
    with pytest.raises(ValueError, match=r"dims must be distinct ints in \[0, 3\)"):
        fg.laplacian(f, dims=[0, 3])(params, X)
    with pytest.raises(ValueError, match="weights must be symmetric"):
        fg.laplacian(f, weights=torch.tensor([[1.0, 2.0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64))(params, X)
    with pytest.raises(ValueError, match=r"weights must be \[K, K\] with K = len\(dims\) = 2"):
        fg.laplacian(f, dims=[0, 1], weights=torch.eye(3, dtype=torch.float64))(params, X)
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        fg.laplacian(f, method="stde", num_samples=0)


def test_a_global_forward_hook_turns_the_fast_path_off():
    # the forward Laplacian never calls the module, so any hook must send f to the
    # generic path, which does, and gives the hooked model's Laplacian.
    f, params = fg.functionalize(mlp(3, 6, 2))
    X = torch.randn(4, 3, dtype=torch.float64)
    handle = nn.modules.module.register_module_forward_hook(lambda m, a, out: out * 2 if isinstance(m, nn.Tanh) else out)
    try:
        assert_close(fg.laplacian(f)(params, X), _hessian_op(f, params, X))
        assert not torch.allclose(fg.laplacian(f)(params, X), fg.laplacian(f, method="hessian")(params, X) / 2)
    finally:
        handle.remove()
