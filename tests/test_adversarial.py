"""The adversarial loss (FGSM/PGD inside training)."""

import warnings

import pytest
import torch
from hypothesis import given, strategies as st

import functional_grads as fg
from functional_grads.testing import check_grads
from helpers import assert_close, mlp, smooth_problems

mse = lambda out, y: ((out - y) ** 2).sum()  # noqa: E731


@given(smooth_problems(), st.sampled_from(["linf", "l2"]), st.integers(1, 3))
def test_treating_the_perturbation_as_data(problem, norm, steps):
    f, params, X = problem
    Y = torch.randn(X.shape[0], 1, dtype=X.dtype)
    loss = fg.losses.adversarial(f, mse, fg.Attack(eps=0.3, steps=steps, norm=norm))
    X_adv = fg.pgd(f, params, X, Y, loss_fn=mse, eps=0.3, steps=steps, norm=norm)
    fixed = lambda p: torch.stack([mse(f(p, x), y) for x, y in zip(X_adv, Y)]).mean()  # noqa: E731
    value, grads = fg.value_and_grad(loss, check=False)(params, X, Y)
    ref_value, ref_grads = fg.value_and_grad(fixed, check=False)(params)
    assert_close(value, ref_value)
    for k in params:
        assert_close(grads[k], ref_grads[k])
    check_grads(fixed, (params,))


@given(smooth_problems())
def test_differentiable_l2_perturbation_matches_finite_differences(problem):
    # step_size * steps < eps: the projection is inactive, so the loss is smooth.
    f, params, X = problem
    Y = torch.randn(X.shape[0], 1, dtype=X.dtype)
    loss = fg.losses.adversarial(f, mse, fg.Attack(eps=1.0, steps=2, step_size=0.3, norm="l2"), differentiable=True)
    check_grads(loss, (params, X, Y))


def test_differentiable_adds_the_path_through_the_perturbation():
    # (In one input dimension g / ||g|| is a sign and that path vanishes, so D = 3.)
    f, params = fg.functionalize(mlp(3, 6, 1))
    X, Y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    attack = fg.Attack(eps=1.0, steps=2, step_size=0.3, norm="l2")
    g_diff = fg.value_and_grad(fg.losses.adversarial(f, mse, attack, differentiable=True))(params, X, Y)[1]
    g_data = fg.value_and_grad(fg.losses.adversarial(f, mse, attack))(params, X, Y)[1]
    assert all(not torch.allclose(g_diff[k], g_data[k]) for k in ("0.weight", "2.weight"))


def test_random_start_is_deterministic_with_a_seeded_generator():
    f, params = fg.functionalize(mlp(2, 6, 1))
    X, Y = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    make = lambda: fg.losses.adversarial(f, mse, fg.Attack(eps=0.2, steps=3, random_start=True),  # noqa: E731
                                         generator=torch.Generator().manual_seed(3))
    assert torch.equal(make()(params, X, Y), make()(params, X, Y))


def test_no_grad_is_written_anywhere():
    model = mlp(2, 6, 1)
    f, params = fg.functionalize(model)
    X, Y = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    fg.value_and_grad(fg.losses.adversarial(f, mse, fg.Attack(eps=0.2, steps=2)))(params, X, Y)
    assert all(p.grad is None for p in model.parameters())
    assert all(t.grad is None for t in params.values()) and X.grad is None


def test_bad_options():
    f, _ = fg.functionalize(mlp(2, 4, 1))
    with pytest.raises(ValueError, match="eps must be positive"):
        fg.losses.adversarial(f, mse, fg.Attack(eps=0.0))
    with pytest.raises(ValueError, match="eps must be a non-negative"):
        fg.Attack(eps=-1.0)
    with pytest.raises(ValueError, match=r"norm must be one of \('linf', 'l2'\)"):
        fg.Attack(eps=0.1, norm="l1")
    with pytest.raises(ValueError, match="steps must be a positive int"):
        fg.Attack(eps=0.1, steps=0)


def test_random_start_compiles():
    f, params = fg.functionalize(mlp(2, 6, 1, dtype=torch.float32))
    X, Y = torch.randn(8, 2), torch.randn(8, 1)
    loss = fg.losses.adversarial(f, mse, fg.Attack(eps=0.2, steps=2, random_start=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error", fg.CompileFallbackWarning)
        value, grads = fg.value_and_grad(loss, compile=True)(params, X, Y)
    assert torch.isfinite(value) and set(grads) == set(params)


def test_settings_as_keywords_were_removed_in_0_3():
    f, _ = fg.functionalize(mlp(2, 4, 1))
    with pytest.raises(TypeError, match="unexpected keyword argument 'eps'"):
        fg.losses.adversarial(f, mse, eps=0.2, steps=2)
    with pytest.raises(TypeError, match="attack must be a functional_grads.Attack, got float"):
        fg.losses.adversarial(f, mse, 0.2)


def test_attack_settings_errors_name_the_function_called():
    f, params = fg.functionalize(mlp(2, 4, 1))
    X, Y = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^pgd: eps must be a non-negative"):
        fg.pgd(f, params, X, Y, loss_fn=mse, eps=-0.1)
    with pytest.raises(ValueError, match=r"^pgd: norm must be one of \('linf', 'l2'\), got 'l1'"):
        fg.pgd(f, params, X, Y, loss_fn=mse, eps=0.1, norm="l1")
    with pytest.raises(ValueError, match=r"^fgsm: clip_min \(1.0\) must not exceed clip_max"):
        fg.fgsm(f, params, X, Y, loss_fn=mse, eps=0.1, clip_min=1.0, clip_max=0.0)
    with pytest.raises(ValueError, match=r"^Attack: steps must be a positive int"):
        fg.Attack(eps=0.1, steps=0)


def test_targeted_and_clipped_attack_in_the_loss():
    f, params = fg.functionalize(mlp(2, 4, 1))
    X, Y = torch.rand(8, 2, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    attack = fg.Attack(eps=0.5, steps=3, targeted=True, clip_min=0.0, clip_max=1.0)
    X_adv = fg.perturb(f, mse, attack)(params, X, Y)
    assert (X_adv >= 0).all() and (X_adv <= 1).all()
    fixed = lambda p: torch.stack([mse(f(p, x), y) for x, y in zip(X_adv, Y)]).mean()  # noqa: E731
    assert_close(fg.losses.adversarial(f, mse, attack)(params, X, Y), fixed(params))
