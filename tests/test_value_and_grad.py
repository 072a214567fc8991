"""value_and_grad: the outer gradient, its outputs and its checks."""

import warnings

import pytest
import torch

import functional_grads as fg
from functional_grads.testing import check_grads
from helpers import assert_close, mlp


def _problem():
    f, params = fg.functionalize(mlp(2, 6, 2))
    X = torch.randn(5, 2, dtype=torch.float64)
    return f, params, X


def test_value_and_grad_equals_torch_autograd():
    f, params, X = _problem()
    loss = lambda p, x: (fg.input_grad(f)(p, x) ** 2).sum()  # noqa: E731
    value, grads = fg.value_and_grad(loss)(params, X)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    x = X.clone().requires_grad_()
    (gx,) = torch.autograd.grad(torch.func.functional_call(f.module, leaves, (x,)).sum(), x, create_graph=True)
    ref = torch.autograd.grad((gx**2).sum(), list(leaves.values()), materialize_grads=True)
    assert_close(value, (gx**2).sum().detach())
    for k, r in zip(leaves, ref):
        assert_close(grads[k], r)


def test_argnums_tuple_and_has_aux():
    f, params, X = _problem()
    loss = lambda p, x: ((f(p, x) ** 2).mean(), x.sum())  # noqa: E731
    (value, aux), (gp, gx) = fg.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, X)
    assert_close(aux, X.sum())
    assert gx.shape == X.shape and set(gp) == set(params)
    check_grads(lambda p, x: loss(p, x)[0], (params, X))


def test_non_scalar_loss_is_refused():
    f, params, X = _problem()
    with pytest.raises(ValueError, match=r"value_and_grad: loss must return a scalar .*got shape \[5, 1\].*\.mean\(\)"):
        fg.value_and_grad(f)(params, X)
    with pytest.raises(TypeError, match="loss must return a tensor"):
        fg.value_and_grad(lambda p, x: 1.0)(params, X)
    with pytest.raises(TypeError, match="compile must be"):
        fg.value_and_grad(f, compile="yes")


def test_nan_is_reported_with_the_leaf():
    f, params, X = _problem()
    loss = lambda p, x: (fg.input_grad(f)(p, x) ** 2).mean() * p["2.bias"].sqrt().sum()  # noqa: E731
    bad = {**params, "2.bias": -torch.ones_like(params["2.bias"])}
    with pytest.raises(FloatingPointError, match=r"loss = nan.*\['2.bias'\]"):
        fg.value_and_grad(loss)(bad, X)
    value, _ = fg.value_and_grad(loss, check=False)(bad, X)
    assert value.isnan()


def test_no_gradient_path_warns():
    f, params, X = _problem()
    with pytest.warns(RuntimeWarning, match="exactly zero for every parameter"):
        fg.value_and_grad(lambda p, x: (f(p, x.detach()) * 0).sum())(params, X)
    # piecewise-linear activations: the Laplacian of a ReLU network is zero everywhere
    relu_f, relu_params = fg.functionalize(mlp(2, 6, 2, act="relu"))
    with pytest.warns(RuntimeWarning, match="ReLU.*second derivatives"):
        fg.value_and_grad(lambda p, x: fg.laplacian(relu_f)(p, x).pow(2).mean())(relu_params, X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fg.value_and_grad(lambda p, x: f(p, x).sum())(params, X)


def test_a_nan_or_inf_in_the_gradient_alone_is_reported():
    # d/dw sqrt(w) at w = 0 is inf while the loss sqrt(0) = 0 is finite.
    loss = lambda p, x: (p["w"].abs().sqrt() * x).sum()  # noqa: E731
    params = {"w": torch.tensor([0.0, 1.0], dtype=torch.float64), "ok": torch.ones(1, dtype=torch.float64)}
    with pytest.raises(FloatingPointError, match=r"loss = 1.0, gradient leaves with NaN/Inf: .*grads\['w'\]"):
        fg.value_and_grad(lambda p, x: loss(p, x) + 0 * p["ok"].sum())(params, torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("compile", [False, True])
def test_result_check_is_the_same_eager_and_compiled(compile):
    # Max-abs flags: an Inf in the gradient alone is caught, huge finite float32 gradients
    # (whose squared norm would overflow) are not, and all-zero gradients warn.
    step = fg.value_and_grad(lambda p, x: (p["w"].abs().sqrt() * x).sum(), compile=compile)
    with pytest.raises(FloatingPointError, match=r"gradient leaves with NaN/Inf: \[\"grads\['w'\]\"\]"):
        step({"w": torch.tensor([0.0, 1.0])}, torch.ones(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, grads = step({"w": torch.ones(2)}, torch.full((2,), 1e30))
    assert torch.isfinite(grads["w"]).all() and grads["w"].square().sum().isinf()
    with pytest.warns(RuntimeWarning, match="exactly zero for every parameter"):
        step({"w": torch.ones(2)}, torch.zeros(2))
