"""gradient_penalty, interpolate, jacobian_penalty."""

import math
import warnings

import pytest
import torch
from hypothesis import given, strategies as st

import functional_grads as fg
from functional_grads.testing import check_grads
from helpers import assert_close, mlp, smooth_problems


@given(smooth_problems(), st.sampled_from([0.0, 1.0]), st.booleans(), st.sampled_from(["l1", "l2", "linf"]))
def test_gradient_penalty_value_and_outer_gradient(problem, target, one_sided, norm):
    f, params, X = problem
    loss = fg.losses.gradient_penalty(f, target=target, one_sided=one_sided, norm=norm)
    order = {"l1": 1, "l2": 2, "linf": math.inf}[norm]
    size = torch.linalg.vector_norm(fg.input_grad(f)(params, X), ord=order, dim=1)
    excess = (size - target).clamp_min(0) if one_sided else size - target
    assert_close(loss(params, X), excess.pow(2).mean())
    if norm == "l2":  # the 1- and inf-norms have kinks where finite differences are unreliable
        check_grads(loss, (params, X), order=2)


def test_gradient_penalty_is_safe_at_a_zero_gradient():
    f = lambda p, x: p["b"].sum() * (1 + 0 * x.sum())  # noqa: E731  constant in x
    params = {"b": torch.ones(1, dtype=torch.float64)}
    for target in (0.0, 1.0):
        value, grads = fg.value_and_grad(fg.losses.gradient_penalty(f, target=target), check=False)(
            params, torch.randn(3, 2, dtype=torch.float64))
        assert value == target**2 and torch.isfinite(grads["b"]).all()


def test_interpolate_lies_between_and_is_reproducible():
    real, fake = torch.zeros(50, 3), torch.ones(50, 3)
    a = fg.losses.interpolate(real, fake, generator=torch.Generator().manual_seed(1))
    b = fg.losses.interpolate(real, fake, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and (a >= 0).all() and (a <= 1).all()
    assert_close(a[:, 0], a[:, 2])  # one t per sample
    with pytest.raises(ValueError, match="same shape"):
        fg.losses.interpolate(real, fake[:3])


@given(smooth_problems(d_out=None))
def test_jacobian_penalty_exact_and_projection(problem):
    f, params, X = problem
    exact = fg.losses.jacobian_penalty(f)
    assert_close(exact(params, X), fg.input_jacobian(f)(params, X).pow(2).sum((1, 2)).mean())
    check_grads(exact, (params, X), order=2)
    proj = lambda p, x: fg.losses.jacobian_penalty(  # noqa: E731  the same draws every call
        f, method="hutchinson", num_samples=3, generator=torch.Generator().manual_seed(0))(p, x)
    check_grads(proj, (params, X))
    assert torch.equal(proj(params, X), proj(params, X))


def test_projection_estimator_is_unbiased():
    f, params = fg.functionalize(mlp(3, 8, 1, d_out=4))
    X = torch.randn(4, 3, dtype=torch.float64)
    exact = fg.losses.jacobian_penalty(f)(params, X)
    loss = fg.losses.jacobian_penalty(f, method="hutchinson", generator=torch.Generator().manual_seed(0))
    draws = torch.stack([loss(params, X) for _ in range(400)])
    stderr = draws.std() / math.sqrt(len(draws))
    assert abs(draws.mean() - exact) < 4 * stderr
    assert draws.std() > 0  # it really is random


def test_bad_options():
    f, _ = fg.functionalize(mlp(2, 4, 1))
    with pytest.raises(ValueError, match=r"norm must be one of \('l1', 'l2', 'linf'\)"):
        fg.losses.gradient_penalty(f, norm=3)
    with pytest.raises(ValueError, match=r"norm must be one of .*got 2; write norm='l2'"):
        fg.losses.gradient_penalty(f, norm=2)
    with pytest.raises(ValueError, match="target must be a non-negative"):
        fg.losses.gradient_penalty(f, target=-1)
    with pytest.raises(ValueError, match=r"jacobian_penalty: method must be one of \('jacobian', 'hutchinson'\)"):
        fg.losses.jacobian_penalty(f, method="projections")
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        fg.losses.jacobian_penalty(f, method="hutchinson", num_samples=0)


def test_penalties_compile_and_equal_eager():
    f, params = fg.functionalize(mlp(3, 8, 1, d_out=4, dtype=torch.float32))
    g, gparams = fg.functionalize(mlp(3, 8, 1, dtype=torch.float32))
    X, D = torch.randn(6, 3), torch.randn(6, 3)
    cases = [
        (fg.losses.gradient_alignment(g), (gparams, X, D)),
        (fg.losses.jacobian_penalty(f), (params, X)),
        (lambda p, X: fg.losses.gradient_penalty(g, target=1.0)(p, fg.losses.interpolate(X, 2 * X)), (gparams, X)),
    ]
    for loss, args in cases:
        torch.manual_seed(7)  # random interpolates: the same global-RNG draws eagerly and compiled
        eager = fg.value_and_grad(loss)(*args)
        with warnings.catch_warnings():
            warnings.simplefilter("error", fg.CompileFallbackWarning)
            step = fg.value_and_grad(loss, compile=True)
            step(*args)  # compile; then replay the same draws
            torch.manual_seed(7)
            compiled = step(*args)
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    # The projection estimator compiles with the global RNG: same draws, same value.
    proj = fg.losses.jacobian_penalty(f, method="hutchinson", num_samples=2)
    torch.manual_seed(5)
    eager = fg.value_and_grad(proj)(params, X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fg.CompileFallbackWarning)
        step = fg.value_and_grad(proj, compile=True)
        step(params, X)  # compile; then replay the same draws
        torch.manual_seed(5)
        compiled = step(params, X)
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-5)


def test_former_spellings_warn_and_mean_the_same():
    f, params = fg.functionalize(mlp(3, 4, 1, d_out=2))
    X = torch.randn(4, 3, dtype=torch.float64)
    with pytest.warns(DeprecationWarning, match="^jacobian_penalty: method='exact' is deprecated; write method='jacobian'"):
        old = fg.losses.jacobian_penalty(f, method="exact")
    assert torch.equal(old(params, X), fg.losses.jacobian_penalty(f, method="jacobian")(params, X))
    with pytest.warns(DeprecationWarning, match="^jacobian_penalty: num_projections= is deprecated; write num_samples=3"):
        old = fg.losses.jacobian_penalty(f, method="hutchinson", num_projections=3,
                                         generator=torch.Generator().manual_seed(0))
    new = fg.losses.jacobian_penalty(f, method="hutchinson", num_samples=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(old(params, X), new(params, X))
    with pytest.warns(DeprecationWarning, match="method='projection' is deprecated; write method='hutchinson'"):
        fg.losses.jacobian_penalty(f, method="projection")
