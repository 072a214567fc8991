"""Score-matching and PINN losses: values, unbiasedness, and outer gradients by finite differences."""

import math

import pytest
import torch

import functional_grads as fg
from functional_grads.testing import check_grads
from helpers import assert_close, mlp


def _score_model():
    return fg.functionalize(mlp(3, 8, 2, d_out=3, act="softplus", seed=4))


def test_exact_score_matching_is_the_divergence_plus_half_the_squared_norm():
    s, params = _score_model()
    X = torch.randn(5, 3, dtype=torch.float64)
    J = fg.input_jacobian(s)(params, X)
    expected = (J.diagonal(dim1=1, dim2=2).sum(1) + 0.5 * s(params, X).pow(2).sum(1)).mean()
    assert_close(fg.losses.score_matching(s)(params, X), expected)
    check_grads(fg.losses.score_matching(s), (params, X))


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_sliced_score_matching_is_unbiased(probe):
    s, params = _score_model()
    X = torch.randn(4, 3, dtype=torch.float64)
    exact = fg.losses.score_matching(s)(params, X)
    loss = fg.losses.sliced_score_matching(s, num_samples=2, probe=probe, generator=torch.Generator().manual_seed(0))
    draws = torch.stack([loss(params, X) for _ in range(400)])
    assert abs(draws.mean() - exact) < 4 * draws.std() / math.sqrt(400)


def test_sliced_and_denoising_outer_gradients():
    s, params = _score_model()
    X = torch.randn(4, 3, dtype=torch.float64)
    sliced = lambda p, X: fg.losses.sliced_score_matching(s, generator=torch.Generator().manual_seed(1))(p, X)  # noqa: E731
    dsm = lambda p, X: fg.losses.denoising_score_matching(s, 0.1, generator=torch.Generator().manual_seed(1))(p, X)  # noqa: E731
    check_grads(sliced, (params, X))
    check_grads(dsm, (params, X))


def test_denoising_score_matching_value():
    s = lambda p, x: p["a"] * x  # noqa: E731
    X = torch.zeros(3, 2, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    e = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = fg.losses.denoising_score_matching(s, 0.5, generator=g)({"a": torch.tensor(-4.0, dtype=torch.float64)}, X)
    assert_close(got, 0.5 * ((-4.0 * 0.5 * e + e / 0.5) ** 2).sum(1).mean())


def test_pde_losses():
    f, params = fg.functionalize(mlp(2, 6, 1))
    X = torch.rand(5, 2, dtype=torch.float64)
    lap = fg.laplacian(f)
    res = fg.losses.pde_residual(lambda p, X: lap(p, X) - 1.0)
    assert_close(res(params, X), (lap(params, X) - 1).pow(2).mean())
    check_grads(res, (params, X))
    target = torch.zeros(5, dtype=torch.float64)
    assert_close(fg.losses.dirichlet(f)(params, X, target), f(params, X).pow(2).mean())
    with pytest.raises(ValueError, match=r"pde_residual: residual must return one loss per sample, shape \[5\]"):
        fg.losses.pde_residual(lambda p, X: lap(p, X)[:, None])(params, X)
    with pytest.raises(ValueError, match="target must hold one value per sample"):
        fg.losses.dirichlet(f)(params, X, torch.zeros(4, dtype=torch.float64))


def test_sliced_score_matching_former_spelling_warns():
    s, params = fg.functionalize(mlp(2, 4, 1, d_out=2))
    X = torch.randn(4, 2, dtype=torch.float64)
    with pytest.warns(DeprecationWarning, match="sliced_score_matching: num_projections= is deprecated"):
        old = fg.losses.sliced_score_matching(s, num_projections=2, generator=torch.Generator().manual_seed(0))
    new = fg.losses.sliced_score_matching(s, num_samples=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(old(params, X), new(params, X))
