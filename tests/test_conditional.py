"""Per-sample arguments beyond X (``in_dims``, as ``torch.func.vmap``) on every per-sample
transform and loss: against hand-written ``autograd.grad(create_graph=True)`` references
in float64, finite differences of the outer gradient, eager == compiled, and the checks."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import functional_grads as fg
from functional_grads.testing import check_grads
from helpers import assert_close

F64 = torch.float64
COND = (None, 0, 0)


class Critic(nn.Module):
    """``D(x, y)`` written for batches: it insists on ``x [B, 3]`` and ``y [B, 2]``."""

    def __init__(self, d_out: int = 1):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.Softplus(), nn.Linear(16, d_out))

    def forward(self, x, y):
        assert x.ndim == 2 and y.ndim == 2, (x.shape, y.shape)
        return self.net(torch.cat([x, y * x[:, :2]], 1))


def _data(B=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 3, dtype=F64, generator=g), torch.randn(B, 2, dtype=F64, generator=g)


def _per_sample(model, x, y):
    return model(x[None], y[None])[0]


def _ref_grad(model, X, Y, create_graph=False):
    x = X if X.requires_grad else X.clone().requires_grad_()
    return torch.autograd.grad(model(x, Y).sum(), x, create_graph=create_graph)[0]


def _ref_hessians(model, X, Y, create_graph=False):
    return torch.stack([torch.autograd.functional.hessian(lambda z: _per_sample(model, z, y).sum(), x,
                                                          create_graph=create_graph) for x, y in zip(X, Y)])


def test_every_transform_takes_per_sample_conditions():
    model = Critic().double()
    f, params = fg.functionalize(model)
    X, Y = _data()
    grad, H = _ref_grad(model, X, Y), _ref_hessians(model, X, Y)
    assert_close(fg.input_grad(f, in_dims=COND)(params, X, Y), grad, rtol=1e-12, atol=1e-12)
    values, grads = fg.value_and_input_grad(f, in_dims=COND)(params, X, Y)
    assert_close(values, model(X, Y)[:, 0], rtol=1e-12, atol=1e-12)
    assert_close(grads, grad, rtol=1e-12, atol=1e-12)
    for mode in ("rev", "fwd"):
        assert_close(fg.input_jacobian(f, in_dims=COND, mode=mode)(params, X, Y)[:, 0], grad, rtol=1e-12, atol=1e-12)
    assert_close(fg.input_hessian(f, in_dims=COND)(params, X, Y), H, rtol=1e-10, atol=1e-12)
    V = torch.randn_like(X)
    assert_close(fg.hvp(f, in_dims=COND)(params, X, Y, V), torch.einsum("bij,bj->bi", H, V), rtol=1e-10, atol=1e-12)
    trace = H.diagonal(dim1=1, dim2=2).sum(-1)
    for method in ("forward", "taylor", "hessian", "auto"):
        assert_close(fg.laplacian(f, method=method, in_dims=COND)(params, X, Y), trace, rtol=1e-10, atol=1e-12)
    u, du, lap = fg.derivatives(f, in_dims=COND, dims=[0, 2])(params, X, Y)
    assert_close(du, grad, rtol=1e-12, atol=1e-12)
    assert_close(lap, H[:, 0, 0] + H[:, 2, 2], rtol=1e-10, atol=1e-12)


def test_divergence_of_a_conditional_field():
    model = Critic(d_out=3).double()
    f, params = fg.functionalize(model)
    X, Y = _data()
    J = torch.stack([torch.autograd.functional.jacobian(lambda z: _per_sample(model, z, y), x) for x, y in zip(X, Y)])
    for method in ("forward", "jacobian"):
        assert_close(fg.divergence(f, method=method, in_dims=COND)(params, X, Y),
                     J.diagonal(dim1=1, dim2=2).sum(-1), rtol=1e-10, atol=1e-12)


def test_a_shared_argument_is_never_refused_when_declared():
    A = torch.randn(3, 3, dtype=F64)  # shared, and shaped like a batch of 3
    f = lambda p, x, A: (p["w"] * (A @ x)).sum()  # noqa: E731
    params, X = {"w": torch.ones(3, dtype=F64)}, torch.randn(3, 3, dtype=F64)
    assert_close(fg.input_grad(f, in_dims=(None, 0, None))(params, X, A), (A.T @ params["w"]).expand(3, 3))
    with pytest.raises(ValueError, match=r"argument 2 has shape \[3, 3\], one row per sample like X.*in_dims=\(None, 0, 0\)"):
        fg.input_grad(f)(params, X, A)
    assert fg.input_grad(f)(params, torch.randn(4, 3, dtype=F64), A).shape == (4, 3)  # not batch-shaped: shared


@pytest.mark.parametrize("in_dims, match", [
    ((None, 0, 1), r"in_dims must be a tuple with one entry per positional argument of f, each 0 .* or None"),
    ([None, False], "in_dims must be a tuple"),
    ("abc", "in_dims must be a tuple"),
    ((None, None, 0), r"in_dims\[1\] must be 0: the argument differentiated \(argnums=1\) is the batch X"),
    ((0, 0), r"in_dims\[0\] must be None: the params \(argument 0\) are shared"),
])
def test_in_dims_checked_when_built(in_dims, match):
    with pytest.raises(ValueError, match=match):
        fg.input_grad(lambda p, x, y: x.sum(), in_dims=in_dims)


def test_in_dims_checked_when_called():
    f, params = fg.functionalize(Critic().double())
    X, Y = _data()
    with pytest.raises(ValueError, match=r"input_grad: in_dims has 3 entries but f was called with 2 positional"):
        fg.input_grad(f, in_dims=COND)(params, X)
    with pytest.raises(ValueError, match=r"laplacian: argument 2 is mapped over the batch \(in_dims\[2\] = 0\) but has "
                                         r"shape \[4, 2\], not a leading dimension of X's batch size 5"):
        fg.laplacian(f, in_dims=COND)(params, X, Y[:4])
    with pytest.raises(ValueError, match=r"argument 2 is mapped .* but has shape \[\]"):
        fg.input_grad(f, in_dims=COND)(params, X, torch.tensor(1.0, dtype=F64))


def test_a_module_sees_a_mapped_scalar_as_a_batch_of_one():
    class NoiseConditional(nn.Module):  # s(x, sigma) for batches: x [B, 2], sigma [B]
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2))

        def forward(self, x, sigma):
            assert sigma.ndim == 1 and sigma.shape[0] == x.shape[0], (x.shape, sigma.shape)
            return self.net(torch.cat([x, sigma[:, None].log()], 1)) / sigma[:, None]

    model = NoiseConditional().double()
    f, params = fg.functionalize(model)
    X, sigma = torch.randn(6, 2, dtype=F64), torch.linspace(0.1, 1.0, 6, dtype=F64)
    J = torch.stack([torch.autograd.functional.jacobian(lambda z: model(z[None], s[None])[0], x)
                     for x, s in zip(X, sigma)])
    assert_close(fg.divergence(f, in_dims=COND)(params, X, sigma), J.diagonal(dim1=1, dim2=2).sum(-1),
                 rtol=1e-10, atol=1e-12)


# --- conditional losses ----------------------------------------------------------------


def _param_grads(model, value):
    named = dict(model.named_parameters())
    return dict(zip(named, torch.autograd.grad(value, list(named.values()), allow_unused=True)))


def _reference_losses(model, X, Y, T, S):
    """The hand-written create_graph versions of the conditional losses."""
    x = X.clone().requires_grad_()
    out = model(x, Y)
    (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    J = torch.stack([torch.autograd.functional.jacobian(lambda z: _per_sample(model, z, y), xx, create_graph=True)
                     for xx, y in zip(X, Y)])
    cos = (g * S).sum(1) / (g.norm(dim=1).clamp_min(1e-8) * S.norm(dim=1).clamp_min(1e-8))
    return {
        "gradient_penalty": ((g.norm(dim=1) - 1.0) ** 2).mean(),
        "gradient_matching": ((g - S) ** 2).mean(),
        "sobolev": ((out[:, 0] - T) ** 2).mean() + ((g - S) ** 2).mean(),
        "gradient_alignment": (1 - cos).mean(),
        "jacobian_penalty": J.pow(2).flatten(1).sum(1).mean(),
    }


def _our_losses(f):
    return {
        "gradient_penalty": (fg.losses.gradient_penalty(f, target=1.0, in_dims=COND), lambda X, Y, T, S: (X, Y)),
        "gradient_matching": (fg.losses.gradient_matching(f, in_dims=COND), lambda X, Y, T, S: (X, Y, S)),
        "sobolev": (fg.losses.sobolev(f, in_dims=COND), lambda X, Y, T, S: (X, Y, T, S)),
        "gradient_alignment": (fg.losses.gradient_alignment(f, in_dims=COND), lambda X, Y, T, S: (X, Y, S)),
        "jacobian_penalty": (fg.losses.jacobian_penalty(f, in_dims=COND), lambda X, Y, T, S: (X, Y)),
    }


@pytest.mark.parametrize("name", ["gradient_penalty", "gradient_matching", "sobolev", "gradient_alignment",
                                  "jacobian_penalty"])
def test_conditional_losses_equal_create_graph_references(name):
    model = Critic().double()
    f, params = fg.functionalize(model)
    X, Y = _data()
    T, S = torch.randn(5, dtype=F64), torch.randn(5, 3, dtype=F64)
    loss, args = _our_losses(f)[name]
    value, grads = fg.value_and_grad(loss)(params, *args(X, Y, T, S))
    ref = _reference_losses(model, X, Y, T, S)[name]
    assert_close(value, ref, rtol=1e-12, atol=1e-12)
    for k, r in _param_grads(model, ref).items():
        assert_close(grads[k], torch.zeros_like(grads[k]) if r is None else r, rtol=1e-9, atol=1e-12)


def test_conditional_loss_second_order_against_finite_differences():
    f, params = fg.functionalize(Critic().double())
    X, Y = _data(3)
    loss = fg.losses.gradient_penalty(f, target=1.0, in_dims=COND)
    check_grads(loss, (params, X, Y), order=2)


def test_adversarial_loss_on_a_conditional_classifier():
    model = Critic(d_out=2).double()
    f, params = fg.functionalize(model)
    X, Y = _data()
    labels = torch.tensor([0, 1, 1, 0, 1])
    ce = lambda out, y: nn.functional.cross_entropy(out, y)  # noqa: E731
    attack = fg.Attack(eps=0.1, steps=2, norm="l2")
    value = fg.losses.adversarial(f, ce, attack, in_dims=COND)(params, X, Y, labels)
    # by hand: two normalised ascent steps on each sample's own loss, projected to the ball
    x = X.clone()
    for _ in range(2):
        xr = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(xr, Y), labels, reduction="sum"), xr)
        delta = x + attack.step_size * g / g.norm(dim=1, keepdim=True) - X
        x = X + delta * (0.1 / delta.norm(dim=1, keepdim=True)).clamp(max=1.0)
    assert_close(value, nn.functional.cross_entropy(model(x, Y), labels), rtol=1e-10, atol=1e-12)
    X_adv = fg.perturb(f, ce, attack, in_dims=COND)(params, X, Y, labels)
    assert_close(X_adv, x, rtol=1e-10, atol=1e-12)


def test_conditional_score_matching_losses():
    class Score(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2))

        def forward(self, x, c):
            return self.net(torch.cat([x, c], 1))

    model = Score().double()
    s, params = fg.functionalize(model)
    X, C = torch.randn(5, 2, dtype=F64), torch.randn(5, 1, dtype=F64)
    J = torch.stack([torch.autograd.functional.jacobian(lambda z: model(z[None], c[None])[0], x, create_graph=True)
                     for x, c in zip(X, C)])
    ref = (J.diagonal(dim1=1, dim2=2).sum(-1) + 0.5 * model(X, C).pow(2).sum(1)).mean()
    value, grads = fg.value_and_grad(fg.losses.score_matching(s, in_dims=COND))(params, X, C)
    assert_close(value, ref, rtol=1e-12, atol=1e-12)
    for k, r in _param_grads(model, ref).items():
        assert_close(grads[k], r, rtol=1e-9, atol=1e-12)
    # sliced: with one condition for all samples, equal to the same score with it closed over
    net, net_params = fg.functionalize(model.net)
    plain = lambda p, x, c: net(p, torch.cat([x, c], -1))  # noqa: E731
    c = torch.full((5, 1), 0.3, dtype=F64)
    sliced = fg.losses.sliced_score_matching(plain, num_samples=3, in_dims=COND,
                                             generator=torch.Generator().manual_seed(1))
    closed = fg.losses.sliced_score_matching(lambda p, x: plain(p, x, c[0]), num_samples=3,
                                             generator=torch.Generator().manual_seed(1))
    assert_close(sliced(net_params, X, c), closed(net_params, X), rtol=1e-12, atol=1e-12)


def test_conditional_losses_take_their_arguments_in_order():
    f, params = fg.functionalize(Critic().double())
    X, Y = _data()
    with pytest.raises(TypeError, match=r"gradient_matching: expected the arguments \(params, X, c1, target_grads\)"):
        fg.losses.gradient_matching(f, in_dims=COND)(params, X, X)


def test_conditional_step_compiles_and_equals_eager():
    f, params = fg.functionalize(Critic().float())
    X, Y = (t.float() for t in _data())
    loss = fg.losses.gradient_penalty(f, target=1.0, in_dims=COND)
    eager = fg.value_and_grad(loss)(params, X, Y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fg.CompileFallbackWarning)
        step = fg.value_and_grad(loss, compile=True)
        compiled = step(params, X, Y)
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
        X2, Y2 = (t.float() for t in _data(9, seed=1))  # a new batch size
        torch.testing.assert_close(step(params, X2, Y2), fg.value_and_grad(loss)(params, X2, Y2), rtol=1e-4, atol=1e-5)


def test_conditional_transform_with_chunks():
    model = Critic().double()
    f, params = fg.functionalize(model)
    X, Y = _data(7)
    assert_close(fg.input_grad(f, in_dims=COND, chunk_size=3)(params, X, Y), _ref_grad(model, X, Y),
                 rtol=1e-12, atol=1e-12)


# --- multi-scale denoising score matching ----------------------------------------------


def _dsm_reference(score, params, X, sigma, e, weight):
    s = score(params, X + sigma[:, None] * e, sigma)
    return (weight * 0.5 * (s + e / sigma[:, None]).pow(2).sum(1)).mean()


def test_denoising_score_matching_forms_and_weightings():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 16), nn.SiLU(), nn.Linear(16, 2)).double()
    g, params = fg.functionalize(net)
    score = lambda p, x, sigma: g(p, torch.cat([x, sigma[:, None].log()], 1)) / sigma[:, None]  # noqa: E731
    X = torch.randn(8, 2, dtype=F64)
    levels = torch.tensor([0.05, 0.2, 1.0], dtype=F64)
    # the same draws as the loss: the noise, then a uniform level per sample
    gen = torch.Generator().manual_seed(3)
    e = torch.randn(8, 2, dtype=F64, generator=gen)
    sigma = levels[(torch.rand(8, dtype=F64, generator=gen) * 3).long()]
    for weighting, weight in (("sigma2", sigma**2), ("none", torch.ones(8, dtype=F64)),
                              ("edm", 2 * (sigma**2 + 0.25) * sigma**2 / 0.25)):
        loss = fg.losses.denoising_score_matching(score, levels, weighting=weighting,
                                                  generator=torch.Generator().manual_seed(3))
        assert_close(loss(params, X), _dsm_reference(score, params, X, sigma, e, weight), rtol=1e-12, atol=1e-12)
    # levels given per call, and a sampler: the default weighting is sigma^2
    e = torch.randn(8, 2, dtype=F64, generator=torch.Generator().manual_seed(4))
    per_call = fg.losses.denoising_score_matching(score, generator=torch.Generator().manual_seed(4))
    assert_close(per_call(params, X, sigma), _dsm_reference(score, params, X, sigma, e, sigma**2), rtol=1e-12, atol=1e-12)
    sampler = fg.losses.denoising_score_matching(score, lambda X: sigma, generator=torch.Generator().manual_seed(4))
    assert_close(sampler(params, X), _dsm_reference(score, params, X, sigma, e, sigma**2), rtol=1e-12, atol=1e-12)
    _, grads = fg.value_and_grad(per_call)(params, X, sigma)
    assert all(torch.isfinite(v).all() and v.abs().sum() > 0 for v in grads.values())


def test_denoising_score_matching_checks_its_levels():
    s = lambda p, x, sigma: x  # noqa: E731
    for bad, match in ((torch.tensor([0.1, -1.0]), "1-D tensor of positive"), (torch.ones(2, 2), "1-D tensor"),
                       (0.0, "sigma must be a positive number"), (math.nan, "sigma must be a positive number")):
        with pytest.raises(ValueError, match=match):
            fg.losses.denoising_score_matching(s, bad)
    with pytest.raises(ValueError, match=r"weighting must be one of \('auto', 'none', 'sigma2', 'edm'\)"):
        fg.losses.denoising_score_matching(s, 0.1, weighting="song")
    with pytest.raises(TypeError, match=r"call as loss\(params, X, sigma\)"):
        fg.losses.denoising_score_matching(s)({}, torch.ones(3, 2))
    with pytest.raises(ValueError, match=r"sigma must hold one value per sample, shape \[3\]"):
        fg.losses.denoising_score_matching(s)({}, torch.ones(3, 2), torch.ones(2))


def test_multi_scale_denoising_score_matching_compiles():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 16), nn.SiLU(), nn.Linear(16, 2))
    g, params = fg.functionalize(net)
    score = lambda p, x, sigma: g(p, torch.cat([x, sigma[:, None].log()], 1)) / sigma[:, None]  # noqa: E731
    loss = fg.losses.denoising_score_matching(score, torch.tensor([0.1, 0.5, 1.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", fg.CompileFallbackWarning)
        value, grads = fg.value_and_grad(loss, compile=True)(params, torch.randn(32, 2))
    assert torch.isfinite(value) and set(grads) == set(params)


def test_jacobian_penalty_estimator_with_conditions():
    model = Critic(d_out=2).double()
    f, params = fg.functionalize(model)
    X, Y = _data()
    exact = fg.losses.jacobian_penalty(f, in_dims=COND)(params, X, Y)
    J = torch.stack([torch.autograd.functional.jacobian(lambda z: _per_sample(model, z, y), x) for x, y in zip(X, Y)])
    assert_close(exact, J.pow(2).flatten(1).sum(1).mean(), rtol=1e-12, atol=1e-12)
    est = fg.losses.jacobian_penalty(f, method="hutchinson", in_dims=COND, num_samples=64, chunk_size=2,
                                     generator=torch.Generator().manual_seed(0))
    draws = torch.stack([est(params, X, Y) for _ in range(40)])
    assert abs(draws.mean().item() - exact.item()) < 4 * draws.std().item() / math.sqrt(40)
    # one projection by default: a sphere probe of radius sqrt(2) gives n_out * (u . J)^2 exactly
    one = fg.losses.jacobian_penalty(f, method="hutchinson", in_dims=COND, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    v = torch.randn(5, 1, 2, dtype=F64, generator=gen)
    v = v / v.norm(dim=-1, keepdim=True) * math.sqrt(2)
    assert_close(one(params, X, Y), torch.einsum("bpo,boi->bpi", v, J).pow(2).sum(-1).mean(), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"^jacobian_penalty: in_dims\[1\] must be 0"):
        fg.losses.jacobian_penalty(f, in_dims=(None, None, 0))
    with pytest.raises(ValueError, match=r"^jacobian_penalty: num_samples must be a positive int"):
        fg.losses.jacobian_penalty(f, method="hutchinson", num_samples=0)
    with pytest.raises(ValueError, match=r"chunk_size must be a positive int"):  # reaches input_jacobian
        fg.losses.jacobian_penalty(f, chunk_size=0)
    with pytest.raises(ValueError, match="randomness must be one of"):
        fg.losses.jacobian_penalty(f, randomness="sometimes")
