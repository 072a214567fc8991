"""Score-matching losses against hand computations on the same random draws, and their errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import functional_grads as fg
from functional_grads import _random

D, B = 3, 4
A = torch.tensor([[1.0, 0.3, -0.2], [0.1, -0.7, 0.4], [0.5, 0.2, 0.9]], dtype=torch.float64)


def linear_score(p, x):
    """``s(x) = a A x`` per sample: its Jacobian is ``a A``."""
    return p["a"] * x @ A.T


def _params():
    return {"a": torch.tensor(1.3, dtype=torch.float64)}


def _X(seed=0):
    return torch.randn(B, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("probe", ["gaussian", "rademacher", "sphere"])
@pytest.mark.parametrize("num_samples", [None, 3], ids=["default", "three"])
def test_sliced_score_matching_equals_the_formula_on_the_same_probes(probe, num_samples):
    X, p = _X(), _params()
    kwargs = {} if num_samples is None else {"num_samples": num_samples}
    loss = fg.losses.sliced_score_matching(linear_score, probe=probe, generator=torch.Generator().manual_seed(5),
                                           **kwargs)
    V = _random.probes(X, (B, num_samples or 1, D), probe, generator=torch.Generator().manual_seed(5))  # [B, n, D]
    s = linear_score(p, X)  # [B, D]
    first = torch.einsum("bnd,de,bne->bn", V, p["a"] * A, V)
    second = (0.5 * (s * s).sum(1))[:, None] if probe == "gaussian" else 0.5 * torch.einsum("bnd,bd->bn", V, s) ** 2
    torch.testing.assert_close(loss(p, X), (first + second).mean(), rtol=1e-12, atol=1e-12)


def _dropout_score():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(D, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, D)).double().train()
    return fg.functionalize(net)


def test_score_losses_pass_randomness_to_their_transforms():
    f, params = _dropout_score()
    X = _X()
    for loss in (fg.losses.score_matching(f, randomness="different"),
                 fg.losses.sliced_score_matching(f, randomness="different"),
                 fg.losses.score_matching(f, randomness="same", chunk_size=2)):
        assert torch.isfinite(loss(params, X))
    with pytest.raises(ValueError, match=r"^divergence: submodule '2' \(Dropout\) is in training mode"):
        fg.losses.score_matching(f)(params, X)
    with pytest.raises(ValueError, match=r"^sliced_score_matching: submodule '2' \(Dropout\) is in training mode"):
        fg.losses.sliced_score_matching(f)(params, X)


def test_score_matching_with_a_condition_and_chunks_equals_the_formula():
    X, p = _X(), _params()
    c = torch.linspace(0.5, 2.0, B, dtype=torch.float64)

    def conditional(p, x, c):  # s = c a A x per sample: divergence c a tr(A)
        return c[..., None] * linear_score(p, x)

    want = (c * p["a"] * A.trace() + 0.5 * (c[:, None] * linear_score(p, X)).pow(2).sum(1)).mean()
    for kwargs in ({}, {"chunk_size": 3}):
        loss = fg.losses.score_matching(conditional, in_dims=(None, 0, 0), **kwargs)
        torch.testing.assert_close(loss(p, X, c), want, rtol=1e-12, atol=1e-12)
    V = _random.probes(X, (B, 1, D), "rademacher", generator=torch.Generator().manual_seed(1))
    sliced = fg.losses.sliced_score_matching(conditional, in_dims=(None, 0, 0), probe="rademacher",
                                             generator=torch.Generator().manual_seed(1), chunk_size=3)
    s = c[:, None] * linear_score(p, X)
    hand = (c * torch.einsum("bnd,de,bne->bn", V, p["a"] * A, V)[:, 0] + 0.5 * (V[:, 0] * s).sum(1) ** 2).mean()
    torch.testing.assert_close(sliced(p, X, c), hand, rtol=1e-12, atol=1e-12)


def _noise(X, seed):
    return _random.probes(X, X.shape, "gaussian", generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("weighting", ["auto", "none", "sigma2", "edm"])
def test_denoising_score_matching_at_one_level_equals_the_formula(weighting):
    X, p, sigma = _X(), _params(), 0.4
    loss = fg.losses.denoising_score_matching(linear_score, sigma, weighting=weighting, sigma_data=0.7,
                                              generator=torch.Generator().manual_seed(2))
    e = _noise(X, 2)
    error = 0.5 * (linear_score(p, X + sigma * e) + e / sigma).pow(2).sum(1)
    weight = {"auto": 1.0, "none": 1.0, "sigma2": sigma**2,
              "edm": 2 * (sigma**2 + 0.7**2) * sigma**2 / 0.7**2}[weighting]
    torch.testing.assert_close(loss(p, X), (weight * error).mean(), rtol=1e-12, atol=1e-12)


def test_denoising_score_matching_over_levels_equals_the_formula():
    X, p = _X(), _params()
    levels = torch.tensor([0.1, 0.5, 2.0])  # float32 levels, float64 data: cast to X's dtype

    def conditional(p, x, sigma):
        return linear_score(p, x) / (1 + sigma[:, None] ** 2)

    for weighting, weight in [("auto", lambda s: s**2), ("edm", lambda s: 2 * (s**2 + 0.25) * s**2 / 0.25)]:
        loss = fg.losses.denoising_score_matching(conditional, levels, weighting=weighting,
                                                  generator=torch.Generator().manual_seed(3))
        g = torch.Generator().manual_seed(3)
        e = _random.probes(X, X.shape, "gaussian", generator=g)  # the loss draws the noise first,
        pick = (_random.uniform(X, (B,), 0.0, 1.0, g) * 3).long()  # then the levels
        sig = levels.to(torch.float64)[pick]
        error = 0.5 * (conditional(p, X + sig[:, None] * e, sig) + e / sig[:, None]).pow(2).sum(1)
        value = loss(p, X)
        assert value.dtype == torch.float64
        torch.testing.assert_close(value, (weight(sig) * error).mean(), rtol=1e-12, atol=1e-12)
    sampler = lambda X: torch.full((X.shape[0],), 0.3, dtype=torch.float32)  # noqa: E731
    e = _noise(X, 4)
    loss = fg.losses.denoising_score_matching(conditional, sampler, generator=torch.Generator().manual_seed(4))
    sig = torch.full((B,), 0.3, dtype=torch.float64).to(torch.float32).to(torch.float64)
    error = 0.5 * (conditional(p, X + sig[:, None] * e, sig) + e / sig[:, None]).pow(2).sum(1)
    torch.testing.assert_close(loss(p, X), (sig**2 * error).mean(), rtol=1e-12, atol=1e-12)


def _s(p, x, *rest):
    return x


@pytest.mark.parametrize("call, error, match", [
    (lambda: fg.losses.score_matching(lambda p, x: x[..., :1])({}, torch.ones(2, 3)), ValueError,
     r"^score_matching: f must be a vector field"),
    (lambda: fg.losses.score_matching(_s, in_dims=(None, 0, 0))({}, torch.ones(2, 3)), TypeError,
     r"^score_matching: expected the arguments \(params, X, c1\)"),
    (lambda: fg.losses.score_matching(_s, chunk_size=0), ValueError, r"chunk_size must be a positive int or None, got 0"),
    (lambda: fg.losses.sliced_score_matching(None), TypeError, r"^sliced_score_matching: f must be callable"),
    (lambda: fg.losses.sliced_score_matching(_s, num_samples=0), ValueError,
     r"^sliced_score_matching: num_samples must be a positive int, got 0\.$"),
    (lambda: fg.losses.sliced_score_matching(_s, num_samples=1.0), ValueError,
     r"^sliced_score_matching: num_samples must be a positive int, got 1\.0\.$"),
    (lambda: fg.losses.sliced_score_matching(_s, probe="normal"), ValueError,
     r"^sliced_score_matching: probe must be one of \('rademacher', 'gaussian', 'sphere'\), got 'normal'\.$"),
    (lambda: fg.losses.sliced_score_matching(_s, in_dims=(0, 0)), ValueError, r"^sliced_score_matching: in_dims\[0\]"),
    (lambda: fg.losses.sliced_score_matching(_s, in_dims=(None, 0, 0))({}, torch.ones(2, 3)), TypeError,
     r"^sliced_score_matching: expected the arguments \(params, X, c1\)"),
    (lambda: fg.losses.sliced_score_matching(_s)({}, torch.tensor(1.0)), ValueError,
     r"^sliced_score_matching: X \(argument 1\) needs a leading batch dimension"),
    (lambda: fg.losses.sliced_score_matching(lambda p, x: x[:1])({}, torch.ones(2, 3)), ValueError,
     r"^sliced_score_matching: f must be a vector field"),
    (lambda: fg.losses.denoising_score_matching(None), TypeError, r"^denoising_score_matching: f must be callable"),
    (lambda: fg.losses.denoising_score_matching(_s, weighting="x"), ValueError,
     r"^denoising_score_matching: weighting must be one of"),
    (lambda: fg.losses.denoising_score_matching(_s, sigma_data=0.0), ValueError,
     r"^denoising_score_matching: sigma_data must be a positive number \(finite\), got 0\.0\.$"),
    (lambda: fg.losses.denoising_score_matching(_s, torch.tensor([0.0, 1.0])), ValueError,
     r"^denoising_score_matching: sigma as a tensor must be the noise levels, a 1-D tensor of positive finite"),
    (lambda: fg.losses.denoising_score_matching(_s, -1.0), ValueError,
     r"^denoising_score_matching: sigma must be a positive number \(finite\), got -1\.0\.$"),
    (lambda: fg.losses.denoising_score_matching(_s)({}, torch.ones(2, 3), torch.ones(3)), ValueError,
     r"^denoising_score_matching: sigma must hold one value per sample, shape \[2\]"),
    (lambda: fg.losses.denoising_score_matching(_s, lambda X: torch.ones(3))({}, torch.ones(2, 3)), ValueError,
     r"^denoising_score_matching: sigma\(X\) must hold one value per sample"),
    (lambda: fg.losses.denoising_score_matching(_s, 0.5)({}, torch.tensor(1.0)), ValueError,
     r"^denoising_score_matching: X \(argument 1\) needs a leading batch dimension"),
    (lambda: fg.losses.denoising_score_matching(_s)({}, torch.ones(2, 3)), TypeError,
     r"^denoising_score_matching: call as loss\(params, X, sigma\); got 0 argument\(s\) after X\.$"),
    (lambda: fg.losses.denoising_score_matching(_s, 0.5)({}, torch.ones(2, 3), torch.ones(2)), TypeError,
     r"^denoising_score_matching: call as loss\(params, X\); got 1 argument\(s\) after X\.$"),
    (lambda: fg.losses.denoising_score_matching(lambda p, x: [x], 0.5)({}, torch.ones(2, 3)), TypeError,
     r"^denoising_score_matching: score must return a tensor, got list"),
])
def test_score_loss_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
