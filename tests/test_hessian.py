"""input_hessian, hvp and laplacian."""

import pytest
import torch
from hypothesis import given

import functional_grads as fg
from functional_grads.testing import check_grads
from helpers import assert_close, fd_along, mlp, smooth_problems


@given(smooth_problems())
def test_input_hessian_matches_finite_differences_of_the_gradient(problem):
    f, params, X = problem
    V = torch.randn_like(X)
    H = fg.input_hessian(f)(params, X)
    assert H.shape == (*X.shape, X.shape[1])
    assert_close(H, H.transpose(1, 2))
    assert_close(torch.einsum("bij,bj->bi", H, V), fd_along(fg.input_grad(f), params, X, V))
    check_grads(fg.input_hessian(f), (params, X), order=2)


@given(smooth_problems())
def test_hvp_equals_hessian_times_vector(problem):
    f, params, X = problem
    V = torch.randn_like(X)
    Hv = fg.hvp(f)(params, X, V)
    assert_close(Hv, fd_along(fg.input_grad(f), params, X, V))
    assert_close(Hv, torch.einsum("bij,bj->bi", fg.input_hessian(f)(params, X), V))
    check_grads(fg.hvp(f), (params, X, V), order=2)


@given(smooth_problems())
def test_laplacian_matches_second_differences(problem):
    f, params, X = problem
    B, D = X.shape
    h = 1e-4
    second = sum(
        (f(params, X + h * e) - 2 * f(params, X) + f(params, X - h * e)).squeeze(-1) / h**2
        for e in torch.eye(D, dtype=X.dtype)
    )
    assert_close(fg.laplacian(f)(params, X), second, rtol=1e-5, atol=1e-5)
    check_grads(fg.laplacian(f), (params, X), order=2)


def test_multi_dim_inputs_and_chunks():
    f, params = fg.functionalize(mlp(6, 5, 2))
    g = lambda p, x: f(p, x.reshape(6))  # noqa: E731  [2, 3] -> [1]
    X = torch.randn(4, 2, 3, dtype=torch.float64)
    H = fg.input_hessian(g)(params, X)
    assert H.shape == (4, 2, 3, 2, 3)
    assert_close(fg.input_hessian(g, chunk_size=3)(params, X), H)
    assert_close(fg.laplacian(g)(params, X), H.reshape(4, 6, 6).diagonal(dim1=1, dim2=2).sum(-1))


def test_hvp_refuses_a_misshaped_vector():
    f, params = fg.functionalize(mlp(2, 4, 1))
    X = torch.randn(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"hvp: V .*shaped like X \[3, 2\].*got \[3, 3\]"):
        fg.hvp(f)(params, X, torch.randn(3, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="hvp"):
        fg.hvp(f)(params)
