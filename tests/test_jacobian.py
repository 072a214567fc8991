"""input_jacobian (forward, reverse, auto) and divergence."""

import pytest
import torch
from hypothesis import given, strategies as st

import functional_grads as fg
from functional_grads.testing import check_grads
from helpers import assert_close, fd_along, mlp, smooth_problems


@given(smooth_problems(d_out=None), st.sampled_from(["auto", "rev", "fwd"]))
def test_input_jacobian_matches_finite_differences(problem, mode):
    f, params, X = problem
    V = torch.randn_like(X)
    J = fg.input_jacobian(f, mode=mode)(params, X)
    d_out = f(params, X).shape[-1]
    assert J.shape == (X.shape[0], d_out, X.shape[1])
    assert_close(torch.einsum("boi,bi->bo", J, V), fd_along(f, params, X, V))
    check_grads(fg.input_jacobian(f, mode=mode), (params, X), order=2)


def test_modes_agree_and_multi_dim_shapes():
    f, params = fg.functionalize(mlp(6, 5, 1, d_out=4))
    g = lambda p, x: f(p, x.reshape(6)).reshape(2, 2)  # noqa: E731  [2, 3] -> [2, 2]
    X = torch.randn(3, 2, 3, dtype=torch.float64)
    jr = fg.input_jacobian(g, mode="rev")(params, X)
    assert jr.shape == (3, 2, 2, 2, 3)
    assert_close(fg.input_jacobian(g, mode="fwd")(params, X), jr)
    assert_close(fg.input_jacobian(g, chunk_size=2)(params, X), jr)


@given(smooth_problems(square=True))
def test_divergence_is_the_trace_of_the_finite_difference_jacobian(problem):
    f, params, X = problem
    B, D = X.shape
    fd_trace = sum(fd_along(f, params, X, torch.eye(D, dtype=X.dtype)[i].expand(B, D))[:, i] for i in range(D))
    assert_close(fg.divergence(f)(params, X), fd_trace)
    check_grads(fg.divergence(f), (params, X), order=2)


def test_divergence_refuses_a_non_square_field():
    f, params = fg.functionalize(mlp(2, 4, 1, d_out=3))
    with pytest.raises(ValueError, match=r"divergence: .*shaped like its input \[2\], got \[3\]"):
        fg.divergence(f)(params, torch.randn(4, 2, dtype=torch.float64))


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="mode must be one of"):
        fg.input_jacobian(lambda p, x: x, mode="sideways")
