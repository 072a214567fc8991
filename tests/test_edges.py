"""Behaviours at the edges that a one-line bug could break silently, each pinned against an
independent computation (plain autograd, a hand formula, the Hessian trace)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import functional_grads as fg
from functional_grads import inverse
from functional_grads.testing import check_grads
from helpers import assert_close, mlp

F64 = torch.float64


def _X(n=6, d=3, seed=0):
    return torch.randn(n, d, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _autograd_grad(model, X):
    x = X.clone().requires_grad_()
    return torch.autograd.grad(model(x).sum(), x, create_graph=True)[0]


@pytest.mark.parametrize("loss_name", ["gradient_matching", "sobolev"])
def test_per_sample_reduction_is_the_mean_squared_norm(loss_name):
    model = mlp(3, 8, 1, seed=1)
    f, params = fg.functionalize(model)
    X, dY, Y = _X(), _X(seed=1), torch.randn(6, dtype=F64)
    g = _autograd_grad(model, X)
    grad_term = ((g - dY) ** 2).sum(1).mean()  # Czarnecki et al.: mean over samples of ||.||^2
    if loss_name == "gradient_matching":
        got = fg.losses.gradient_matching(f, reduction="samples")(params, X, dY)
        want = grad_term
    else:
        got = fg.losses.sobolev(f, value_weight=0.5, grad_weight=2.0, reduction="samples")(params, X, Y, dY)
        want = 0.5 * ((model(X)[:, 0] - Y) ** 2).mean() + 2.0 * grad_term
    assert_close(got, want, rtol=1e-12, atol=1e-12)


ACTIVATIONS = {
    "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(), "softplus": nn.Softplus(), "softplus-beta2": nn.Softplus(beta=2.0),
    "softplus-threshold": nn.Softplus(beta=3.0, threshold=0.5), "silu": nn.SiLU(), "gelu": nn.GELU(), "relu": nn.ReLU(),
}


@pytest.mark.parametrize("act", ACTIVATIONS.values(), ids=ACTIVATIONS.keys())
def test_every_forward_laplacian_activation_rule_equals_the_hessian_trace(act):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 16), act, nn.Linear(16, 16), act, nn.Linear(16, 1)).double()
    f, params = fg.functionalize(model)
    X = 1.5 * _X(8)
    fast = fg.laplacian(f, method="forward")(params, X)  # the forward Laplacian's rule table
    reference = fg.laplacian(lambda p, x: f(p, x), method="hessian")(params, X)  # no fast path
    assert_close(fast, reference, rtol=1e-10, atol=1e-12)
    u, du, lap = fg.derivatives(f)(params, X)
    assert_close(du, _autograd_grad(model, X).detach(), rtol=1e-10, atol=1e-12)
    assert_close(lap, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["hutchinson", "stde"])
def test_stochastic_laplacian_over_some_dims_is_unbiased(method):
    f, params = fg.functionalize(mlp(4, 8, 2, seed=3))
    X = _X(2, 4, seed=1)
    H = fg.input_hessian(f)(params, X)
    exact = H[:, 1, 1] + H[:, 3, 3]
    est = fg.laplacian(f, method=method, dims=[1, 3], num_samples=1, generator=torch.Generator().manual_seed(0))
    draws = torch.stack([est(params, X) for _ in range(400)])
    stderr = draws.std(0) / math.sqrt(len(draws))
    assert ((draws.mean(0) - exact).abs() < 4 * stderr + 1e-12).all()


@pytest.mark.parametrize("make", ["value_and_grad", "make_step"])
def test_steps_differentiate_inside_no_grad(make):
    model = mlp(3, 8, 1, seed=4)
    f, params = fg.functionalize(model)
    X = _X()
    loss = fg.losses.gradient_matching(f)
    (g,) = [_autograd_grad(model, X)]
    ((g - X) ** 2).mean().backward()
    want = {k: torch.zeros_like(p) if p.grad is None else p.grad for k, p in model.named_parameters()}
    with torch.no_grad():
        if make == "value_and_grad":
            _, grads = fg.value_and_grad(loss)(params, X, X)
            got = grads
        else:
            new, _, _ = fg.make_step(loss, fg.optim.sgd(1.0))(params, fg.optim.sgd(1.0).init(params), X, X)
            got = {k: params[k] - new[k] for k in params}
    for k in want:
        assert_close(got[k], want[k], rtol=1e-10, atol=1e-12)


def test_a_forward_pre_hook_on_a_layer_is_run_by_every_path():
    model = mlp(3, 8, 1, seed=5)
    model[2].register_forward_pre_hook(lambda m, args: (args[0] * 0.5,))
    f, params = fg.functionalize(model)
    X = _X()
    assert_close(f(params, X), model(X), rtol=0, atol=0)
    assert_close(fg.input_grad(f)(params, X), _autograd_grad(model, X).detach(), rtol=1e-12, atol=1e-12)
    reference = torch.stack([torch.autograd.functional.hessian(lambda y: model(y[None]).sum(), x).trace() for x in X])
    assert_close(fg.laplacian(f)(params, X), reference, rtol=1e-10, atol=1e-12)


def test_l2_ball_leaves_points_inside_unchanged():
    center = torch.zeros(3, 2, dtype=F64)
    x = torch.tensor([[0.3, 0.4], [0.0, 0.0], [3.0, 4.0]], dtype=F64)  # inside, at the centre, outside
    got = inverse.l2_ball(center, 1.0)(x)
    assert torch.equal(got[:2], x[:2])
    assert_close(got[2], torch.tensor([0.6, 0.8], dtype=F64), rtol=1e-15, atol=1e-15)
    assert torch.equal(inverse.linf_ball(center[:2], 1.0)(x[:2]), x[:2])


def test_eager_gradient_wrt_x_of_an_input_gradient_loss():
    model = mlp(3, 8, 1, seed=6)
    f, params = fg.functionalize(model)
    X, S = _X(), _X(seed=2)
    loss = fg.losses.gradient_matching(f)
    got = fg.grad(loss, argnums=1)(params, X, S)
    x = X.clone().requires_grad_()
    (g,) = torch.autograd.grad(model(x).sum(), x, create_graph=True)
    (want,) = torch.autograd.grad(((g - S) ** 2).mean(), x)
    assert_close(got, want, rtol=1e-10, atol=1e-12)
    check_grads(lambda X: loss(params, X, S), (X,), order=2)


def test_grad_passes_its_options_on():
    loss = lambda p, x: (p["w"] * x).sum() * torch.tensor(math.nan)  # noqa: E731
    params, x = {"w": torch.ones(2)}, torch.ones(2)
    with pytest.raises(FloatingPointError, match="grad: non-finite result"):  # check=True by default
        fg.grad(loss)(params, x)
    good = lambda p, x: ((p["w"] * x) ** 2).sum()  # noqa: E731
    per_sample = torch.func.vmap(fg.grad(good, check=False), in_dims=(None, 0))(params, torch.ones(3, 2))
    assert torch.equal(per_sample["w"], torch.full((3, 2), 2.0))
    with pytest.raises(TypeError, match="grad: compile must be a bool or a dict"):
        fg.grad(good, compile="yes")


def test_apply_grads_errors_name_the_key_and_the_fix():
    model = mlp(3, 4, 1)
    model[0].requires_grad_(False)
    _, params = fg.functionalize(model)
    with pytest.raises(TypeError, match=r"^apply_grads: expected the nn.Module to write .grad into, got dict\. Pass the "
                                        r"module: apply_grads\(model, grads\), and build the optimizer on model.parameters\(\)\.$"):
        fg.apply_grads(params, params)
    with pytest.raises(ValueError, match=r"^apply_grads: grads holds \['0.weight', '0.bias'\], which the module has frozen"):
        fg.apply_grads(model, {**params, "0.weight": torch.ones(4, 3, dtype=F64), "0.bias": torch.ones(4, dtype=F64)})
    with pytest.raises(ValueError, match=r"^apply_grads: grads\['2.bias'\] has shape torch.Size\(\[2\]\)"):
        fg.apply_grads(model, {**params, "2.bias": torch.ones(2, dtype=F64)})


def test_relu_derivatives_at_a_kink_follow_autograd():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
        model[0].bias.zero_()
    f, params = fg.functionalize(model)
    X = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [-1.0, 2.0]], dtype=F64)  # pre-activations at exactly 0
    _, du, lap = fg.derivatives(f)(params, X)
    assert_close(du, _autograd_grad(model, X).detach(), rtol=0, atol=0)  # relu'(0) = 0, as autograd
    assert torch.equal(lap, torch.zeros(4, dtype=F64))


def test_a_step_failure_unrelated_to_the_state_keeps_its_own_error():
    def broken(p, x):
        raise ValueError("boom from the loss")

    params = {"w": torch.ones(2)}
    with pytest.raises(ValueError, match="^boom from the loss$"):
        fg.make_step(broken, fg.optim.adam(0.1))(params, fg.optim.adam(0.1).init(params), torch.ones(2))
    with pytest.raises(ValueError, match=r"^make_step: opt_state does not fit params: .*other keys or shapes, e\.g\. "
                                         r"before functionalize was called again\); build a new one with state = "
                                         r"optimizer\.init\(params\)\.$"):
        fg.make_step(lambda p, x: (p["w"] * x).sum(), fg.optim.adam(0.1))(params, fg.optim.adam(0.1).init({"v": torch.ones(2)}), torch.ones(2))


def test_the_result_check_names_exactly_the_bad_leaves_and_the_right_hint():
    params, x = {"a": torch.ones(2), "b": torch.ones(2)}, torch.ones(3, 2)
    nan_b = lambda p, x: (p["a"] * x).sum() + (p["b"] * x).sum() * (p["b"] * torch.tensor(math.inf)).sum() * 0  # noqa: E731
    with pytest.raises(FloatingPointError) as info:
        fg.value_and_grad(nan_b)(params, x)
    message = str(info.value)
    assert "gradient leaves with NaN/Inf: [\"grads['b']\"]" in message and "grads['a']" not in message
    assert "Check the data for NaN/Inf" in message and "empty batches" not in message  # not empty: the plain hint
    with pytest.raises(FloatingPointError, match=r"Argument\(s\) \[1\] are empty batches"):
        fg.value_and_grad(lambda p, x: (p["a"] * x).sum(1).mean())(params, x[:0])
    # make_step: finite gradients, a non-finite update: named among the results
    step = fg.make_step(lambda p, x: (p["a"] * x).sum() + (p["b"] * x).sum(), fg.optim.sgd(1e308))
    with pytest.raises(FloatingPointError, match=r"results with NaN/Inf: \[\"params\['a'\]\", \"params\['b'\]\"\]"):
        step(params, fg.optim.sgd(1e308).init(params), 1e10 * x)


def _dropout_model():
    torch.manual_seed(7)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 1)).double()


def test_matching_losses_pass_their_options_on():
    f, params = fg.functionalize(_dropout_model())
    X, dY, Y = _X(), _X(seed=1), torch.randn(6, dtype=F64)
    for loss, args in ((fg.losses.sobolev, (X, Y, dY)), (fg.losses.gradient_alignment, (X, dY)),
                       (fg.losses.gradient_matching, (X, dY)), (fg.losses.gradient_penalty, (X,))):
        with pytest.raises(ValueError, match="randomness='different'"):  # dropout refused per sample by default
            loss(f)(params, *args)
        assert torch.isfinite(loss(f, randomness="different")(params, *args))  # the option reaches input_grad
        with pytest.raises(ValueError, match="chunk_size must be a positive int"):
            loss(f, chunk_size=0)


@pytest.mark.parametrize("make, exc, match", [
    (lambda f, P, X: fg.losses.sobolev(f, reduction="sum"), ValueError, r"^sobolev: reduction must be one of"),
    (lambda f, P, X: fg.losses.sobolev(f, value_weight=-1.0), ValueError, r"^sobolev: value_weight must be a non-negative"),
    (lambda f, P, X: fg.losses.sobolev(f)(P, X, X[:, 0], X[:, :2]), ValueError,
     r"^sobolev: dY has shape \[6, 2\] but must be shaped like X \[6, 3\]"),
    (lambda f, P, X: fg.losses.sobolev(f)(P, X, X[:, 0]), TypeError, r"^sobolev: expected the arguments \(params, X, Y, dY\)"),
    (lambda f, P, X: fg.losses.gradient_alignment(f, mask=[1.0, 0.0]), TypeError,
     r"^gradient_alignment: mask must be a tensor broadcastable to \[B, \*x_shape\], got list\.$"),
    (lambda f, P, X: fg.losses.gradient_alignment(f)(P, X, X[:, :2]), ValueError,
     r"^gradient_alignment: directions has shape \[6, 2\] but must be shaped like X \[6, 3\]"),
    (lambda f, P, X: fg.losses.gradient_alignment(f, mask=torch.ones(4))(P, X), ValueError,
     r"^gradient_alignment: mask of shape \[4\] must broadcast to \[6, 3\]"),
    (lambda f, P, X: fg.losses.gradient_alignment(f, in_dims=(None, 0, 0))(P, X), TypeError,
     r"^gradient_alignment: expected the arguments \(params, X, c1\)"),
    (lambda f, P, X: fg.losses.interpolate(X, [1.0]), TypeError, r"^interpolate: x_real and x_fake must be tensors\.$"),
])
def test_matching_loss_errors_by_message(make, exc, match):
    f, params = fg.functionalize(mlp(3, 4, 1))
    with pytest.raises(exc, match=match):
        make(f, params, _X())


def test_interpolate_draws_t_uniformly_per_sample():
    real, fake = torch.zeros(4000, 2, dtype=F64), torch.full((4000, 2), 2.0, dtype=F64)
    x = fg.losses.interpolate(real, fake, generator=torch.Generator().manual_seed(0))  # (1 - t) * 2
    t = 1 - x[:, 0] / 2
    assert torch.equal(x[:, 0], x[:, 1])
    assert abs(t.mean().item() - 0.5) < 0.02 and abs(t.var().item() - 1 / 12) < 0.005
    assert t.min() >= 0 and t.max() <= 1 and t.min() < 0.01 and t.max() > 0.99
