"""The random probes and starts (``_random``): their distributions, pinned by exact
properties (support, norms) and by means within a few standard errors, and their generator."""

import math

import pytest
import torch

from functional_grads import _random

F64 = torch.float64
LIKE = torch.zeros((), dtype=F64)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_rademacher_probes_are_plus_or_minus_one_with_mean_zero():
    v = _random.probes(LIKE, (4000, 3), "rademacher", generator=_gen())
    assert set(v.unique().tolist()) == {-1.0, 1.0}
    assert abs(v.mean().item()) < 4 / math.sqrt(v.numel())


def test_gaussian_probes_are_not_signs_even_with_no_event_dims():
    v = _random.probes(LIKE, (2000,), "gaussian", event_dims=0, generator=_gen())
    assert len(v.unique()) == v.numel()
    assert abs(v.std().item() - 1) < 0.1


@pytest.mark.parametrize("event_dims, norm_dims", [(1, (2,)), (2, (1, 2))])
def test_sphere_probes_have_norm_sqrt_n_over_their_event_dims(event_dims, norm_dims):
    shape = (5, 3, 4)
    kwargs = {} if event_dims == 1 else {"event_dims": 2}  # the default is one event dim
    v = _random.probes(LIKE, shape, "sphere", generator=_gen(), **kwargs)
    n = math.prod(shape[-event_dims:])
    torch.testing.assert_close(torch.linalg.vector_norm(v, dim=norm_dims), torch.full(shape[:-event_dims], n**0.5,
                               dtype=F64))


def test_sphere_probes_with_no_event_dims_are_random_signs():
    v = _random.probes(LIKE, (1000,), "sphere", event_dims=0, generator=_gen())
    assert set(v.unique().tolist()) == {-1.0, 1.0}


def test_uniform_draws_between_low_and_high():
    u = _random.uniform(LIKE, (5000,), 2.0, 3.0, generator=_gen())
    assert 2.0 <= u.min().item() and u.max().item() < 3.0
    assert abs(u.mean().item() - 2.5) < 4 * (1 / math.sqrt(12)) / math.sqrt(u.numel())


@pytest.mark.parametrize("volume", [False, True], ids=["radius_uniform", "volume_uniform"])  # no "True": mutmut's -k
@pytest.mark.parametrize("n", [1, 4])
def test_points_in_the_l2_ball_have_the_documented_radius_distribution(volume, n):
    eps, N = 0.5, 20000
    like = torch.zeros(N, n, dtype=F64)
    x = _random.in_l2_ball(like, eps, volume, generator=_gen())
    r = x.norm(dim=1) / eps  # in [0, 1]: uniform (volume=False) or with density n r^(n-1)
    assert r.max().item() <= 1 + 1e-12
    k = n if volume else 1
    mean, var = k / (k + 1), k / ((k + 1) ** 2 * (k + 2))  # Beta(k, 1)
    assert abs(r.mean().item() - mean) < 4 * math.sqrt(var / N)
    assert abs(r.var().item() - var) < 0.1 * var
    if n > 1:  # the direction is uniform: coordinates have mean 0 and equal variance
        d = x / x.norm(dim=1, keepdim=True)
        assert d.mean(0).abs().max().item() < 4 / math.sqrt(N)


def test_points_in_the_l2_ball_come_from_the_generator_and_a_batch_of_one_works():
    like = torch.zeros(3, 2, dtype=F64)
    torch.manual_seed(0)
    a = _random.in_l2_ball(like, 1.0, True, generator=_gen(7))
    torch.manual_seed(1)  # the global RNG moved: the draws must not depend on it
    b = _random.in_l2_ball(like, 1.0, True, generator=_gen(7))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    one = _random.in_l2_ball(like[:1], 1.0, True, generator=_gen(7))
    assert one.shape == (1, 2) and one.norm().item() <= 1
