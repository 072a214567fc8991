"""sobolev, gradient_alignment: values, outer gradients vs finite differences, errors."""

import pytest
import torch
from hypothesis import given

import functional_grads as fg
from functional_grads.testing import check_grads
from helpers import assert_close, mlp, smooth_problems


@given(smooth_problems())
def test_sobolev_value_and_outer_gradient(problem):
    f, params, X = problem
    Y, dY = torch.randn(X.shape[0], dtype=X.dtype), torch.randn_like(X)
    loss = fg.losses.sobolev(f, value_weight=0.5, grad_weight=2.0)
    expected = 0.5 * ((f(params, X).squeeze(-1) - Y) ** 2).mean() + 2.0 * ((fg.input_grad(f)(params, X) - dY) ** 2).mean()
    assert_close(loss(params, X, Y, dY), expected)
    assert_close(loss(params, X, Y[:, None], dY), expected)  # [B, 1] targets too
    check_grads(loss, (params, X, Y, dY), order=2)


@given(smooth_problems())
def test_gradient_alignment_value_and_outer_gradient(problem):
    f, params, X = problem
    D = torch.randn_like(X)
    loss = fg.losses.gradient_alignment(f)
    g = fg.input_grad(f)(params, X)
    assert_close(loss(params, X, D), (1 - torch.nn.functional.cosine_similarity(g, D, dim=1)).mean())
    check_grads(loss, (params, X, D))
    mask = (torch.arange(X.shape[1]) % 2).to(X.dtype)
    masked = fg.losses.gradient_alignment(f, mask=mask)
    assert_close(masked(params, X), (mask * g).pow(2).sum(1).mean())
    check_grads(masked, (params, X, D))


def test_gradient_alignment_is_safe_at_a_zero_gradient():
    f = lambda p, x: p["b"].sum() + 0 * x.sum()  # noqa: E731  constant in x
    params = {"b": torch.ones(1, dtype=torch.float64)}
    X = torch.randn(3, 2, dtype=torch.float64)
    value, grads = fg.value_and_grad(fg.losses.gradient_alignment(f), check=False)(params, X, torch.randn_like(X))
    assert value == 1.0 and torch.isfinite(grads["b"]).all()


def test_shape_errors_name_the_argument():
    f, params = fg.functionalize(mlp(2, 4, 1))
    X = torch.randn(5, 2, dtype=torch.float64)
    Y = torch.randn(5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"sobolev: dY has shape \[5, 3\]"):
        fg.losses.sobolev(f)(params, X, Y, torch.randn(5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"sobolev: Y must hold one value per sample, shape \[5\] or \[5, 1\], got \[4\]"):
        fg.losses.sobolev(f)(params, X, Y[:4], X)
    with pytest.raises(ValueError, match=r"gradient_alignment: directions has shape \[5, 1\]"):
        fg.losses.gradient_alignment(f)(params, X, torch.randn(5, 1, dtype=torch.float64))
    with pytest.raises(TypeError, match="pass directions"):
        fg.losses.gradient_alignment(f)(params, X)
    with pytest.raises(TypeError, match="mask must be a tensor"):
        fg.losses.gradient_alignment(f, mask=[1, 0])
