"""The Taylor engine (NOTE [Taylor engine]) on models of every kind, against nested
autograd of the same function."""

import re

import pytest
import torch
from torch import nn

import functional_grads as fg

F64 = torch.float64


def _seq(*layers):
    torch.manual_seed(0)
    return nn.Sequential(*layers).double()


MODELS = {
    "no_bias": lambda: _seq(nn.Linear(3, 6, bias=False), nn.Tanh(), nn.Linear(6, 1, bias=False)),
    "identity_between": lambda: _seq(nn.Linear(3, 6), nn.Identity(), nn.Softplus(), nn.Identity(), nn.Linear(6, 1)),
    "relu": lambda: _seq(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 1)),
}


@pytest.mark.parametrize("name", MODELS)
def test_edge_models_give_the_hessian_traces_answer(name):
    f, params = fg.functionalize(MODELS[name]())
    X = torch.randn(5, 3, dtype=F64)
    fast = fg.derivatives(f)(params, X)
    u = f(params, X).squeeze(-1)
    du = fg.input_grad(lambda p, x: f(p, x))(params, X)
    lap = fg.laplacian(lambda p, x: f(p, x), method="hessian")(params, X)
    for got, want in zip(fast, (u, du, lap)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_a_linear_model_has_zero_laplacian_and_its_weights_as_gradient():
    model = _seq(nn.Linear(3, 1))
    f, params = fg.functionalize(model)
    X = torch.randn(4, 3, dtype=F64)
    u, du, lap = fg.derivatives(f)(params, X)
    torch.testing.assert_close(du, model[0].weight.detach().expand(4, 3), rtol=0, atol=0)
    torch.testing.assert_close(lap, torch.zeros(4, dtype=F64), rtol=0, atol=0)


def test_a_vector_output_gives_the_laplacian_of_each_component():
    f, params = fg.functionalize(_seq(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)))
    X = torch.randn(5, 3, dtype=F64)
    got = fg.laplacian(f)(params, X)
    for i in range(2):
        want = fg.laplacian(lambda p, x: f(p, x)[..., i], method="hessian")(params, X)
        torch.testing.assert_close(got[:, i], want, rtol=1e-10, atol=1e-12)
    for method in ("hessian", "taylor"):
        torch.testing.assert_close(fg.laplacian(f, method=method)(params, X), got, rtol=1e-10, atol=1e-12)
    A = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)
    weighted = fg.laplacian(f, dims=[0, 2], weights=A)(params, X)
    for method in ("hessian", "taylor"):
        torch.testing.assert_close(fg.laplacian(f, method=method, dims=[0, 2], weights=A)(params, X), weighted,
                                   rtol=1e-10, atol=1e-12)


def test_data_dependent_control_flow_falls_back_to_forward_over_reverse_and_says_why(caplog):
    f, params = fg.functionalize(_seq(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1)))

    def g(p, x):  # a Python branch on a parameter's value: make_fx cannot trace it
        y = f(p, x)
        return y * 2 if bool(p["0.bias"].sum() > 0) else y

    X = torch.randn(5, 3, dtype=F64)
    with caplog.at_level("INFO", logger="functional_grads"):
        got = fg.laplacian(g)(params, X)
    assert any("laplacian: the Taylor engine cannot run f" in r.getMessage() for r in caplog.records)
    want = fg.laplacian(g, method="hessian")(params, X)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def _count_traces(monkeypatch):
    from functional_grads import _jit

    calls = []
    real = _jit.trace
    monkeypatch.setattr(_jit, "trace", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_an_operator_rebuilt_in_every_loss_call_traces_once(monkeypatch):
    # NOTE [trace cache]: fg.laplacian(lambda ...) inside the loss is a new Engine per call
    calls = _count_traces(monkeypatch)
    f, params = fg.functionalize(_seq(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1)))
    scale = 2.0
    loss = lambda p, X: fg.laplacian(lambda q, x: scale * f(q, x))(p, X).pow(2).mean()  # noqa: E731
    for n in (4, 4, 7):  # a new batch size is guarded, not retraced
        fg.value_and_grad(loss)(params, torch.randn(n, 3, dtype=F64))
    assert len(calls) == 1
    scale = 3.0  # a closure value is part of the key: traced again
    fg.value_and_grad(loss)(params, torch.randn(4, 3, dtype=F64))
    assert len(calls) == 2


def test_conditioning_arguments_chunks_and_vector_outputs():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 2)).double()
    f, params = fg.functionalize(net)
    score = lambda p, x, sigma: f(p, torch.cat([x, sigma[None]])) / sigma  # noqa: E731 - s(x, sigma)
    X, sigma = torch.randn(6, 3, dtype=F64), torch.rand(6, dtype=F64) + 0.5
    lap = fg.laplacian(score, in_dims=(None, 0, 0))
    got = lap(params, X, sigma)
    want = torch.stack([fg.laplacian(lambda p, x: score(p, x, sigma[i]), method="hessian")(params, X[i:i + 1])[0]
                        for i in range(6)])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fg.laplacian(score, in_dims=(None, 0, 0), chunk_size=4)(params, X, sigma), got,
                               rtol=1e-12, atol=1e-14)
    value, jac, lap2 = fg.derivatives(score, in_dims=(None, 0, 0))(params, X, sigma)
    torch.testing.assert_close(value, torch.stack([score(params, X[i], sigma[i]) for i in range(6)]))
    torch.testing.assert_close(jac, fg.input_jacobian(score, in_dims=(None, 0, 0))(params, X, sigma),
                               rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(lap2, got, rtol=1e-12, atol=1e-14)


def _user_op():
    lib = torch.library.Library("fg_test", "FRAGMENT")  # noqa: TOR901
    lib.define("scale_rows(Tensor x, Tensor w) -> Tensor")
    lib.define("cube(Tensor x) -> Tensor")
    lib.impl("scale_rows", lambda x, w: x * w, "CompositeExplicitAutograd")
    lib.impl("cube", lambda x: x ** 3, "CompositeExplicitAutograd")
    lib.impl("scale_rows", lambda x, w: torch.empty_like(x), "Meta")
    lib.impl("cube", lambda x: torch.empty_like(x), "Meta")
    return lib


_LIB = _user_op()


def test_a_user_op_needs_a_rule_and_runs_in_the_engine_with_one(monkeypatch):
    from functional_grads.operators import _rules
    from functional_grads.operators._jet import Mode
    from functional_grads.operators._taylor import Engine, Unsupported

    monkeypatch.setattr(_rules, "_RULES", dict(_rules._RULES))  # the registrations below end with the test

    ops = torch.ops.fg_test
    w = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    f = lambda p, x: ops.cube(ops.scale_rows(x, w) * p).sum()  # noqa: E731 - sum_i (p w_i x_i)^3
    X = torch.randn(4, 3, dtype=F64)
    want = (6 * (2.0 * w) ** 3 * X).sum(1)  # d2/dx_i^2 (a x_i)^3 = 6 a^3 x_i
    p = torch.tensor(2.0, dtype=F64)
    with pytest.raises(Unsupported, match=r"^no Taylor rule for fg_test\.scale_rows\.default$"):
        Engine("laplacian", f, 1, None, "error")((p, X), torch.eye(3, dtype=F64)[:, None], Mode(2, None))
    fg.operators.register_rule(ops.scale_rows, linear=(0,))
    fg.operators.register_rule(ops.cube.default, derivatives=lambda x, n: [3 * x ** 2, 6 * x, 6 + 0 * x][:n])
    torch.testing.assert_close(fg.laplacian(lambda p, x: f(p, x))(p, X), want, rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match=r"^register_rule: give exactly one of linear= \(argument positions\) or "
                                        r"derivatives=\.$"):
        fg.operators.register_rule(ops.cube)


def _directional_pair(f, chunk_size=None):
    """``(engine, fallback)``: the same Directional, with the engine and without it."""
    from functional_grads.operators._directional import Directional

    opts = dict(argnums=1, in_dims=None, chunk_size=chunk_size, randomness="error")
    engine = Directional("laplacian", f, **opts)
    return engine, Directional("laplacian", f, **opts).fallback


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("weights", ["none", "shared", "per sample"])
def test_the_fallback_gives_the_engines_coefficients(order, weights):
    torch.manual_seed(3)
    net = _seq(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))  # a vector output
    f, params = fg.functionalize(net)
    X = torch.randn(4, 3, dtype=F64)
    V = torch.randn(3, 3, dtype=F64) if weights != "per sample" else torch.randn(4, 3, 3, dtype=F64)
    w = {"none": None, "shared": torch.tensor([1.0, -0.5, 2.0], dtype=F64),
         "per sample": torch.randn(4, 3, dtype=F64)}[weights]
    engine, fallback = _directional_pair(f)
    got, want = fallback((params, X), V, w, order), engine((params, X), V, w, order)
    assert engine.served == "engine"
    torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)
    assert len(got[1]) == len(want[1]) == order - 1
    for a, b in zip(got[1], want[1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got[2], want[2], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunk", [2, 3])
def test_chunks_of_the_batch_give_the_whole_batch(chunk):
    f, params = fg.functionalize(_seq(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)))
    X = torch.randn(7, 3, dtype=F64)
    V, w = torch.randn(7, 2, 3, dtype=F64), torch.randn(7, 2, dtype=F64)  # per-sample directions too
    whole, _ = _directional_pair(f)
    chunked, chunked_fallback = _directional_pair(f, chunk_size=chunk)
    want = whole((params, X), V, w, 3)
    results = (chunked((params, X), V, w, 3), chunked_fallback((params, X), V, w, 3))
    assert whole.served == chunked.served == "engine"  # the engine ran, chunk by chunk
    for got in results:
        torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got[1][1], want[1][1], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got[2], want[2], rtol=1e-10, atol=1e-12)


def test_the_fallback_passes_the_options_on():
    from functional_grads.operators._directional import Directional

    calls = []
    net = _seq(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 1))
    f, params = fg.functionalize(net)

    def g(p, x, s):
        calls.append(1)
        return f(p, torch.cat([x, s[None]])) * s

    X, s = torch.randn(6, 3, dtype=F64), torch.rand(6, dtype=F64) + 0.5
    V = torch.eye(3, dtype=F64)[:1]  # one direction
    outs = {}
    for chunk in (None, 2):
        d = Directional("laplacian", g, argnums=1, in_dims=(None, 0, 0), chunk_size=chunk, randomness="error")
        calls.clear()
        outs[chunk] = d.fallback((params, X, s), V, None, 2)
        outs[chunk, "calls"] = len(calls)
    assert outs[2, "calls"] > outs[None, "calls"]  # f runs per chunk
    for a, b in zip(outs[2], outs[None]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    want = torch.stack([g(params, X[i], s[i]) for i in range(6)])
    torch.testing.assert_close(outs[None][0], want, rtol=1e-12, atol=1e-12)
    noisy = Directional("laplacian", lambda p, x: (x * torch.rand_like(x)).sum(), argnums=1, in_dims=None,
                        chunk_size=None, randomness="error")
    with pytest.raises(ValueError, match=r"^laplacian: f calls a random operation \(e\.g\. dropout\) inside a "
                                         r"per-sample transform"):
        noisy.fallback((None, X), V, None, 2)


def test_the_input_tangent_stays_shared_by_the_batch_through_views():
    # before the first nonlinearity the tangents do not depend on the sample: [K, 1, ...]
    from functional_grads.operators._rules import _reshape

    K, B, D = 4, 5, 3
    c = torch.randn(K, 1, D, dtype=F64)
    x = torch.zeros(B, D, dtype=F64)
    up = _reshape(c, True, [x], x[:, None])  # unsqueeze: [B, 1, D]
    assert up.shape == (K, 1, 1, D)
    flat = _reshape(up, True, [x[:, None]], x)  # view back: [B, D]
    assert flat.shape == (K, 1, D)
    torch.testing.assert_close(flat.expand(K, B, D), c.expand(K, B, D), rtol=0, atol=0)
    mixed = _reshape(c, True, [x], x.reshape(B * D))  # a view across samples: expanded first
    torch.testing.assert_close(mixed, c.expand(K, B, D).reshape(K, B * D), rtol=0, atol=0)
    one = torch.zeros(1, D, dtype=F64)
    torch.testing.assert_close(_reshape(c, True, [one], one[:, None]), c.reshape(K, 1, 1, D), rtol=0, atol=0)
    top = torch.randn(1, D, dtype=F64)  # a collapsed coefficient has no direction dim
    torch.testing.assert_close(_reshape(top, False, [x], x[:, None]), top.expand(B, D)[:, None], rtol=0, atol=0)


def test_functions_that_differ_only_in_a_closed_over_object_are_not_confused():
    def make(act):
        return lambda p, x: act(x * p).sum()

    p, X = torch.tensor(1.5, dtype=F64), torch.randn(4, 3, dtype=F64)
    for act in (torch.tanh, torch.sin, torch.sigmoid):  # same code, other closure: its own trace
        want = fg.laplacian(make(act), method="hessian")(p, X)
        torch.testing.assert_close(fg.laplacian(make(act))(p, X), want, rtol=1e-10, atol=1e-12)


def test_the_fallback_is_logged_once_with_the_engines_reason(caplog):
    from functional_grads.operators._directional import Directional

    f = lambda p, x: (x * torch.rand_like(x)).sum() * p  # noqa: E731 - random: refused inside the trace too
    d = Directional("laplacian", f, argnums=1, in_dims=None, chunk_size=None, randomness="error")
    X = torch.randn(3, 2, dtype=F64)
    with caplog.at_level("INFO", logger="functional_grads"):
        for _ in range(2):
            with pytest.raises(ValueError, match="^laplacian: f calls a random operation"):
                d((1.0, X), torch.eye(2, dtype=F64), None, 2)
    lines = [r.getMessage() for r in caplog.records if "Taylor engine" in r.getMessage()]
    assert len(lines) == 1
    assert re.match(r"^laplacian: the Taylor engine cannot run f \(ValueError: laplacian: f calls a random "
                    r"operation .*\); using nested reverse mode$", lines[0])


def test_shared_weights_are_collapsed_in_the_engine_and_per_sample_ones_after_it(monkeypatch):
    from functional_grads.operators import _taylor
    from functional_grads.operators._directional import Directional

    modes, real = [], _taylor.Engine.__call__
    monkeypatch.setattr(_taylor.Engine, "__call__", lambda self, args, t, mode: modes.append(mode) or real(self, args, t, mode))
    net = _seq(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).float()  # float32 outputs of float64 weights' math
    f, params = fg.functionalize(net)
    X = torch.randn(5, 3)
    V, w = torch.randn(3, 3), torch.tensor([0.5, -1.0, 2.0])
    d = Directional("laplacian", f, argnums=1, in_dims=None, chunk_size=None, randomness="error")
    shared = d((params, X), V, w, 2)[2]
    assert modes[-1].weights is w
    per = d((params, X), V.expand(5, 3, 3), w.expand(5, 3), 2)[2]
    assert modes[-1].weights is None
    plain = d((params, X), V, None, 2)[2]  # [K, B, 2], then weighted here by hand
    for got in (shared, per):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, (plain * w[:, None, None]).sum(0), rtol=1e-5, atol=1e-6)


def test_an_output_that_does_not_depend_on_the_input():
    p, X = torch.tensor([1.0, 2.0], dtype=F64), torch.randn(3, 2, dtype=F64)
    f = lambda p, x: (p**2).sum() + 0 * x.detach().sum()  # noqa: E731 - no derivative in x
    torch.testing.assert_close(fg.laplacian(f)(p, X), torch.zeros(3, dtype=F64))
    value, du, lap = fg.derivatives(f)(p, X)
    torch.testing.assert_close(value, torch.full((3,), 5.0, dtype=F64))
    torch.testing.assert_close(du, torch.zeros(3, 2, dtype=F64))
    torch.testing.assert_close(fg.biharmonic(f)(p, X), torch.zeros(3, dtype=F64))


def test_the_trace_cache_keys_on_what_changes_the_graph(monkeypatch):
    # NOTE [trace cache]: one trace per distinct computation, never one for two
    import functools

    from functional_grads.operators import _taylor

    calls = _count_traces(monkeypatch)
    X = torch.randn(4, 3, dtype=F64)

    def scaled(p, x, scale=1.0, *, power=2):
        return scale * (p * x).pow(power).sum()

    p = torch.tensor(0.7, dtype=F64)
    lap = lambda g: fg.laplacian(g)(p, X)  # noqa: E731
    want = lambda scale, power: scale * power * (power - 1) * (p * X).pow(power - 2).mul(p * p).sum(1)  # noqa: E731
    torch.testing.assert_close(lap(functools.partial(scaled, scale=2.0)), want(2.0, 2))
    torch.testing.assert_close(lap(functools.partial(scaled, scale=3.0)), want(3.0, 2))  # other keywords
    torch.testing.assert_close(lap(functools.partial(scaled, scale=3.0, power=3)), want(3.0, 3))
    n = len(calls)
    lap(functools.partial(scaled, scale=3.0, power=3))  # the same again: no trace
    assert len(calls) == n
    for default in (1.0, 4.0):  # a function's defaults are part of it
        g = (lambda d: lambda p, x, s=d: s * (p * x).pow(2).sum())(default)
        torch.testing.assert_close(lap(g), want(default, 2))
    for power in (2, 3):  # keyword-only defaults too
        g = (lambda q: lambda p, x, *, k=q: (p * x).pow(k).sum())(power)
        torch.testing.assert_close(lap(g), want(1.0, power))
    for scale in (2.0, 5.0):  # a closure over a closure
        inner = (lambda s: lambda y: s * y.pow(2).sum())(scale)
        torch.testing.assert_close(lap((lambda h: lambda p, x: h(p * x))(inner)), want(scale, 2))
    for w in (torch.ones(2, dtype=F64), torch.ones(3, dtype=F64)):  # a shared argument's first dim is static
        g = lambda q, x: (x[: q.shape[0]] * q).pow(2).sum()  # noqa: E731
        torch.testing.assert_close(fg.laplacian(g)(w, X), torch.full((4,), 2.0 * w.shape[0], dtype=F64))
    assert len(_taylor._CACHES) <= 256
    for i in range(260):  # the least recently used go
        _taylor._cache(("test", i))
    assert len(_taylor._CACHES) == 256 and ("test", 0) not in _taylor._CACHES and ("test", 259) in _taylor._CACHES


def test_a_module_attribute_changed_between_calls_is_seen():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.k = _seq(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)), 1.0

        def forward(self, x):
            return self.k * self.net(x)

    model = Scaled()
    f, params = fg.functionalize(model)
    X = torch.randn(4, 3, dtype=F64)
    first = fg.laplacian(f)(params, X)
    model.k = 3.0
    torch.testing.assert_close(fg.laplacian(f)(params, X), 3 * first, rtol=1e-12, atol=1e-12)


def test_pad_inserts_singleton_dims_after_the_directions():
    from functional_grads.operators._jet import full, pad

    c = torch.arange(6.0).reshape(2, 3)  # K = 2 directions of a [3] value
    assert pad(c, 3).shape == (2, 1, 1, 3)
    torch.testing.assert_close(pad(c, 3)[:, 0, 0], c)
    assert pad(c, 1) is c
    assert full(c, (4, 3), True).shape == (2, 4, 3) and full(c[0], (4, 3), False).shape == (4, 3)
    torch.testing.assert_close(full(c, (4, 3), True)[:, 2], c)
