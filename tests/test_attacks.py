"""fgsm and pgd against their closed forms and defining properties."""

import pytest
import torch
from hypothesis import given, strategies as st

import functional_grads as fg
from helpers import mlp, smooth_problems

mse = lambda out, y: ((out - y) ** 2).sum()  # noqa: E731


def _loss_grad(f, params, X, Y):
    x = X.clone().requires_grad_()
    loss = sum(mse(f(params, xi), yi) for xi, yi in zip(x, Y))
    return torch.autograd.grad(loss, x)[0]


@given(smooth_problems(), st.floats(0.0, 1.0))
def test_fgsm_is_the_closed_form(problem, eps):
    f, params, X = problem
    Y = torch.randn(X.shape[0], 1, dtype=X.dtype)
    expected = (X + eps * _loss_grad(f, params, X, Y).sign()).clamp(-1.0, 1.0)
    got = fg.fgsm(f, params, X, Y, loss_fn=mse, eps=eps, clip_min=-1.0, clip_max=1.0)
    torch.testing.assert_close(got, expected)
    targeted = fg.fgsm(f, params, X, Y, loss_fn=mse, eps=eps, targeted=True)
    torch.testing.assert_close(targeted, X - eps * _loss_grad(f, params, X, Y).sign())


@given(smooth_problems(), st.sampled_from(["linf", "l2"]))
def test_one_pgd_step_of_size_eps_is_fgsm_and_stays_in_the_ball(problem, norm):
    f, params, X = problem
    Y = torch.randn(X.shape[0], 1, dtype=X.dtype)
    if norm == "linf":
        torch.testing.assert_close(fg.pgd(f, params, X, Y, loss_fn=mse, eps=0.3, step_size=0.3, steps=1),
                                   fg.fgsm(f, params, X, Y, loss_fn=mse, eps=0.3))
    adv = fg.pgd(f, params, X, Y, loss_fn=mse, eps=0.3, steps=5, norm=norm, random_start=True,
                 generator=torch.Generator().manual_seed(0))
    size = (adv - X).abs().amax(1) if norm == "linf" else (adv - X).norm(dim=1)
    assert (size <= 0.3 + 1e-9).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_loss_is_non_decreasing_with_small_steps(norm):
    f, params = fg.functionalize(mlp(3, 8, 2))
    X, Y = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 1, dtype=torch.float64)
    losses = []
    for steps in range(1, 8):
        adv = fg.pgd(f, params, X, Y, loss_fn=mse, eps=1.0, step_size=0.01, steps=steps, norm=norm)
        losses.append(torch.stack([mse(f(params, a), y) for a, y in zip(adv, Y)]))
    losses = torch.stack(losses)
    assert (losses[1:] >= losses[:-1] - 1e-12).all()


def test_attacks_leave_the_model_alone():
    model = mlp(3, 8, 1)
    f, params = fg.functionalize(model)
    before = {k: v.clone() for k, v in params.items()}
    X, Y = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 1, dtype=torch.float64)
    fg.pgd(f, params, X, Y, loss_fn=mse, eps=0.1)
    assert all(torch.equal(before[k], params[k]) for k in params)
    assert all(p.grad is None for p in model.parameters())


def test_bad_inputs():
    f, params = fg.functionalize(mlp(3, 4, 1))
    X, Y = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="eps must be a non-negative"):
        fg.pgd(f, params, X, Y, loss_fn=mse, eps=-0.1)
    with pytest.raises(ValueError, match="norm must be one of"):
        fg.pgd(f, params, X, Y, loss_fn=mse, eps=0.1, norm="l0")
    with pytest.raises(ValueError, match="Y must hold one target per sample"):
        fg.fgsm(f, params, X, Y[:2], loss_fn=mse, eps=0.1)
    with pytest.raises(TypeError, match="must be floating point"):
        fg.fgsm(f, params, X.long(), Y, loss_fn=mse, eps=0.1)
