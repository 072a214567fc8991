"""partials / partial_derivative / biharmonic: options checked when built and passed on,
errors naming the API, STDE's draws, and the one-sample batch."""

import pytest
import torch

import functional_grads as fg
from helpers import mlp

F64 = torch.float64
APIS = {
    "partials": lambda f, **kw: fg.partials(f, {"u_x": (0,)}, **kw),
    "partial_derivative": lambda f, **kw: fg.partial_derivative(f, (0, 0), **kw),
    "biharmonic": lambda f, **kw: fg.biharmonic(f, **kw),
}
f0 = lambda p, x: (p * x**4).sum()  # noqa: E731 - every partial by hand


@pytest.mark.parametrize("name", APIS)
def test_options_are_checked_when_built_naming_the_api(name):
    build = APIS[name]
    with pytest.raises(TypeError, match=rf"^{name}: f must be callable, got int\.$"):
        build(3)
    with pytest.raises(ValueError, match=rf"^{name}: chunk_size must be a positive int or None, got 0\.$"):
        build(f0, chunk_size=0)
    with pytest.raises(ValueError, match=rf"^{name}: in_dims\[1\] must be 0: the argument differentiated"):
        build(f0, in_dims=(None, None))
    with pytest.raises(TypeError, match=rf"^{name}: X \(argument 1\) must be a tensor \[B, \*x_shape\], got list\.$"):
        build(f0)(1.0, [1.0])
    with pytest.raises(ValueError, match=rf"^{name}: in_dims has 3 entries but f was called with 2 positional"):
        build(f0, in_dims=(None, 0, None))(torch.tensor(1.0, dtype=F64), torch.ones(2, 3, dtype=F64))


def test_the_other_refusals_name_the_api():
    with pytest.raises(ValueError, match=r"^biharmonic: num_samples must be a positive int, got 0\.$"):
        fg.biharmonic(f0, method="stde", num_samples=0)
    with pytest.raises(TypeError, match=r"^partials: a multi-index must be a tuple of coordinates"):
        fg.partials(f0, {"a": (0.5,)})
    with pytest.raises(ValueError, match=r"^partials: u_z = \(0, 7\) names a coordinate outside the flattened "
                                         r"sample's 3\.$"):
        fg.partials(f0, {"u": (), "u_z": (0, 7)})(torch.tensor(1.0, dtype=F64), torch.ones(2, 3, dtype=F64))
    with pytest.raises(TypeError, match=r"^partials: wanted must be a non-empty dict name -> multi-index, e\.g\. "
                                        r"\{'u_xx': \(1, 1\)\}; got dict\.$"):
        fg.partials(f0, {})


def test_values_alone_and_one_sample():
    p, X = torch.tensor(2.0, dtype=F64), torch.tensor([[1.0, 2.0, 0.5]], dtype=F64)  # B = 1
    u = (2 * X**4).sum(1)
    torch.testing.assert_close(fg.partials(f0, {"u": ()})(p, X), {"u": u})
    torch.testing.assert_close(fg.partial_derivative(f0, ())(p, X), u)
    got = fg.partials(f0, {"u": (), "u_yyy": (1, 1, 1), "u_x": (0,)})(p, X)
    torch.testing.assert_close(got, {"u": u, "u_yyy": 2 * 24 * X[:, 1], "u_x": 2 * 4 * X[:, 0] ** 3})
    torch.testing.assert_close(fg.biharmonic(f0)(p, X), torch.full((1,), 3 * 2 * 24.0, dtype=F64))  # sum_i d4/dxi4


@pytest.mark.parametrize("name", APIS)
def test_chunk_size_in_dims_argnums_and_randomness_are_passed_on(name, monkeypatch):
    from functional_grads.operators import _taylor

    seen, real = [], _taylor.Engine.__call__
    monkeypatch.setattr(_taylor.Engine, "__call__", lambda self, args, *a: seen.append(self.randomness) or
                        seen.append(args[self.argnums].shape[0]) or real(self, args, *a))
    build = APIS[name]
    f, params = fg.functionalize(mlp(3, 6, 1, act="tanh", seed=1))
    X = torch.randn(5, 3, dtype=F64)
    whole = build(f)(params, X)
    chunked = build(f, chunk_size=2)(params, X)
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)
    assert seen == ["error", 5, "error", 2, "error", 2, "error", 1]
    swapped = build(lambda x, p: f(p, x), argnums=0)(X, params)
    torch.testing.assert_close(swapped, whole, rtol=1e-12, atol=1e-12)
    sigma = torch.rand(5, dtype=F64) + 0.5
    cond = build(lambda p, x, s: f(p, x) * s, in_dims=(None, 0, 0))(params, X, sigma)
    want = {k: v * sigma for k, v in whole.items()} if name == "partials" else whole * sigma
    torch.testing.assert_close(cond, want, rtol=1e-12, atol=1e-12)
    seen.clear()
    build(f, randomness="different")(params, X)
    assert seen[0] == "different"


def test_stde_draws_from_its_generator_one_direction_by_default():
    f, params = fg.functionalize(mlp(3, 6, 1, act="tanh", seed=2))
    X = torch.randn(4, 3, dtype=F64)
    draw = lambda **kw: fg.biharmonic(f, method="stde", generator=torch.Generator().manual_seed(7), **kw)(params, X)  # noqa: E731
    torch.testing.assert_close(draw(), draw(num_samples=1), rtol=0, atol=0)
    assert not torch.equal(draw(), draw(num_samples=2))
    assert not torch.equal(draw(), fg.biharmonic(f, method="stde", generator=torch.Generator().manual_seed(8))(params, X))


@pytest.mark.parametrize("name", APIS)
def test_a_non_tensor_output_is_refused_naming_the_api(name):
    with pytest.raises(TypeError, match=rf"^{name}: f must return a tensor, got float\."):
        APIS[name](lambda p, x: 1.0)(torch.tensor(1.0, dtype=F64), torch.ones(2, 3, dtype=F64))


def test_polarization_merges_multiples_of_one_direction():
    from fractions import Fraction

    from functional_grads.operators._directions import polarize

    assert polarize((0, 0, 0, 0)) == {((0, 1),): Fraction(1, 1)}  # a pure partial: e_0 alone
    assert polarize((2, 0)) == {((0, 1), (2, 1)): Fraction(1, 4), ((0, 1), (2, -1)): Fraction(-1, 4)}
    assert set(polarize((1, 0, 0))) == {((0, 2), (1, 1)), ((0, 2), (1, -1)), ((1, 1),)}  # 2 e0 +- e1, e1


def test_the_biharmonic_of_one_coordinate_is_its_fourth_derivative():
    p, X = torch.tensor(2.0, dtype=F64), torch.tensor([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]], dtype=F64)
    torch.testing.assert_close(fg.biharmonic(f0, dims=[1])(p, X), torch.full((2,), 2 * 24.0, dtype=F64))
