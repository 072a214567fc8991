"""The operators keep autograd's semantics for ordinary code inside ``f``: what autograd
treats as constant is constant (no_grad blocks, detach, integer casts, rounding, rounding
division, indices), tensors reached through closures keep their gradient, powers with a
tensor exponent are exact at 0, the fallback batches correctly, and an ``f`` with
data-dependent control flow is served one sample at a time. Every case is checked against
nested ``torch.autograd`` on the same code, sample by sample."""

import pytest
import torch
from torch import nn

import functional_grads as fg

F64 = torch.float64


def ref_partial(f, params, x, index):
    """``d^n f / dx_index`` of one sample by nested ``torch.autograd.grad``."""
    x = x.detach().requires_grad_(True)
    y = f(params, x)
    for i in index:
        (g,) = torch.autograd.grad(y, x, create_graph=True, allow_unused=True)
        y = (torch.zeros_like(x) if g is None else g).reshape(-1)[i]
    return y


def ref_laplacian(f, params, X):
    return torch.stack([sum(ref_partial(f, params, x, (i, i)) for i in range(x.numel())) for x in X])


def ref(f, params, X, index):
    return torch.stack([ref_partial(f, params, x, index) for x in X])


def assert_like_autograd(f, X, params=None):
    """laplacian (auto), derivatives, partials of orders 1-4 and a mixed one, biharmonic."""
    close = dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fg.laplacian(f)(params, X), ref_laplacian(f, params, X), **close)
    u, du, lap = fg.derivatives(f)(params, X)
    torch.testing.assert_close(u, torch.stack([f(params, x) for x in X]), **close)
    torch.testing.assert_close(du, torch.stack([ref(f, params, X, (i,)) for i in range(X.shape[1])], 1), **close)
    torch.testing.assert_close(lap, ref_laplacian(f, params, X), **close)
    wanted = {"x0": (0,), "x0x1": (0, 1), "x000": (0, 0, 0), "x0011": (0, 0, 1, 1)}
    got = fg.partials(f, wanted)(params, X)
    for name, index in wanted.items():
        torch.testing.assert_close(got[name], ref(f, params, X, index), **close)
        torch.testing.assert_close(fg.partial_derivative(f, index)(params, X), ref(f, params, X, index), **close)
    bih = sum(ref(f, params, X, (i, i, j, j)) for i in range(X.shape[1]) for j in range(X.shape[1]))
    torch.testing.assert_close(fg.biharmonic(f)(params, X), bih, **close)


X = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(0)) * 1.7


def smooth(x):
    return torch.sin(x).sum() * (x ** 2).sum() + x[0] ** 4


def _no_grad(p, x):
    with torch.no_grad():
        s = (x ** 2).sum()
    return s * smooth(x)


def _grad_disabled(p, x):
    with torch.set_grad_enabled(False):
        s = torch.tanh(x).sum()
    return s ** 2 * smooth(x)


CONSTANT_CODE = {
    "long cast": lambda p, x: ((x - x.long()) ** 2).sum() + smooth(x),
    "to int64": lambda p, x: x.to(torch.int64).double().sum() * smooth(x),
    "bool cast": lambda p, x: (x > 0).double().sum() * smooth(x) + x.bool().sum() * x[1] ** 3,
    "floor division": lambda p, x: torch.div(x * 3, 2.0, rounding_mode="floor").sum() * smooth(x),
    "trunc division": lambda p, x: torch.div(x, x[0].abs() + 1, rounding_mode="trunc").sum() * smooth(x),
    "rounding": lambda p, x: (torch.round(x) + torch.floor(x) + torch.ceil(x) + torch.trunc(x)).sum() * smooth(x),
    "no_grad": _no_grad,
    "set_grad_enabled(False)": _grad_disabled,
    "detach": lambda p, x: x.detach().sum() * smooth(x) + x.detach()[0] * x[1] ** 3,
    "argmax index": lambda p, x: x[x.argmax()] * smooth(x) + x.argmax().double() * x[2] ** 2,
}


@pytest.mark.parametrize("name", sorted(CONSTANT_CODE))
def test_what_autograd_treats_as_constant_is_constant(name):
    assert_like_autograd(CONSTANT_CODE[name], X)


def test_floor_division_by_the_operator_is_rounding_division():
    # autograd has no derivative for aten::floor_divide; x // y is div(rounding_mode="floor"), derivative 0
    spelled = lambda p, x: torch.div(x, 0.5, rounding_mode="floor").sum() * smooth(x)  # noqa: E731
    operator = lambda p, x: (x // 0.5).sum() * smooth(x)  # noqa: E731
    for op in (fg.laplacian, lambda f: fg.partial_derivative(f, (0, 1, 1))):
        torch.testing.assert_close(op(operator)(None, X), op(spelled)(None, X), rtol=0, atol=0)


def test_a_closure_over_a_model_keeps_the_models_gradient():
    torch.manual_seed(1)
    make = lambda: nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double()  # noqa: E731
    model, twin = make(), make()
    twin.load_state_dict(model.state_dict())
    Y = torch.randn(4, dtype=F64)

    def loss(net, lap):
        return ((net(X)[:, 0] - Y) ** 2).mean() + (lap ** 2).mean()

    ours = torch.optim.SGD(model.parameters(), lr=0.05)
    theirs = torch.optim.SGD(twin.parameters(), lr=0.05)
    for _ in range(3):  # the same training, its Laplacian term by nested autograd
        ours.zero_grad()
        lap = fg.laplacian(lambda p, x: model(x[None])[0, 0])(None, X)
        assert lap.requires_grad
        loss(model, lap).backward()
        ours.step()
        theirs.zero_grad()
        loss(twin, ref_laplacian(lambda p, x: twin(x[None])[0, 0], None, X)).backward()
        theirs.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_a_closure_tensor_that_requires_grad_gets_its_gradient():
    w = torch.randn(3, dtype=F64, requires_grad=True)
    f = lambda p, x: torch.tanh(x * w).sum() * (x * w).sum()  # noqa: E731
    for op, want in [(fg.laplacian(f), ref_laplacian(f, None, X)),
                     (fg.partial_derivative(f, (0, 1, 1)), ref(f, None, X, (0, 1, 1)))]:
        got = op(None, X)
        (g,), (h,) = torch.autograd.grad(got.sum(), w), torch.autograd.grad(want.sum(), w)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(g, h, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("exponent", [2.0, 3.0, 1.0])
def test_a_tensor_exponent_is_exact_at_zero(exponent):
    # autograd is finite up to the order where x^(e - m) meets 0 * inf in its own where's
    # gradient (the fourth mixed one of x0^2 x1 is NaN there); the number exponent is exact
    e = torch.tensor(exponent, dtype=F64, requires_grad=True)
    f = lambda p, x: (x ** e).sum() + (x[0] ** e) * x[1]  # noqa: E731
    number = lambda p, x: (x ** exponent).sum() + (x[0] ** exponent) * x[1]  # noqa: E731
    Z = torch.zeros(2, 3, dtype=F64)
    torch.testing.assert_close(fg.laplacian(f)(None, Z), ref_laplacian(f, None, Z))
    for index in [(0,), (0, 0), (0, 1), (0, 0, 0), (0, 0, 1), (0, 0, 0, 0), (0, 0, 1, 1)]:
        got = fg.partial_derivative(f, index)(None, Z)
        torch.testing.assert_close(got, fg.partial_derivative(number, index)(None, Z), rtol=0, atol=0)
        want = ref(f, None, Z, index)
        if torch.isfinite(want).all():
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        assert torch.isfinite(got).all() and torch.isfinite(torch.autograd.grad(got.sum(), e)[0]).all()


def test_the_fallback_is_right_for_every_sample_of_a_batch():
    # logdet has no Taylor rule; vmap over samples of vmap over directions gets it wrong
    def f(p, x):
        A = x.reshape(2, 2) @ x.reshape(2, 2).T + torch.eye(2, dtype=F64)
        return torch.logdet(A) * x.sum()

    assert_like_autograd(f, torch.randn(3, 4, dtype=F64, generator=torch.Generator().manual_seed(2)))


def test_data_dependent_control_flow_runs_one_sample_at_a_time():
    def f(p, x):
        if x.sum() > 0:
            return smooth(x)
        return torch.cos(x).prod() * x[0]

    from functional_grads.operators._directional import Directional

    assert_like_autograd(f, X)
    assert (X.sum(1) > 0).any() and (X.sum(1) <= 0).any()  # both branches are taken
    d = Directional("laplacian", f, argnums=1, in_dims=None, chunk_size=None, randomness="error")
    d((None, X), torch.eye(3, dtype=F64), None, 2)
    assert d.served == "loop"


def test_the_fallback_is_chosen_per_call_signature():
    from functional_grads.operators._directional import Directional

    def f(p, x):  # logdet (no rule) only for samples of four coordinates
        if x.shape[0] == 4:
            return torch.logdet(x.reshape(2, 2) @ x.reshape(2, 2).T + torch.eye(2, dtype=F64))
        return smooth(x)

    d = Directional("laplacian", f, argnums=1, in_dims=None, chunk_size=None, randomness="error")
    for X_, want in [(X, "engine"), (torch.randn(2, 4, dtype=F64), "fallback"), (X, "engine")]:
        d((None, X_), torch.eye(X_.shape[1], dtype=F64), None, 2)
        assert d.served == want


def test_a_lambda_over_a_rebound_global_gets_its_own_trace():
    # the same code naming a global that a loop rebinds: the trace cache keys on the global's value
    global ACTIVATION
    want, got = [], []
    for ACTIVATION in (torch.tanh, torch.sin, lambda y: y - y):
        f = lambda p, x: ACTIVATION(x).sum() * x[0]  # noqa: E731
        got.append(fg.laplacian(f)(None, X))
        want.append(ref_laplacian(f, None, X))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


ACTIVATION = None


def test_attention_runs_through_the_engine_and_the_fallback():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from functional_grads.operators._directional import Directional

    torch.manual_seed(0)
    attention = nn.MultiheadAttention(4, 2, batch_first=True).double().eval()

    def f(p, x):
        s = x.reshape(1, 3, 4)
        return attention(s, s, s, need_weights=False)[0].sum() * x[0]

    Xa = torch.randn(2, 12, dtype=F64)
    with sdpa_kernel(SDPBackend.MATH):  # autograd has no second derivative of the fused CPU kernel
        want = ref_laplacian(f, None, Xa)
    d = Directional("laplacian", f, argnums=1, in_dims=None, chunk_size=None, randomness="error")
    eye, ones = torch.eye(12, dtype=F64), torch.ones(12, dtype=F64)
    torch.testing.assert_close(2 * d((None, Xa), eye, ones, 2)[2], want, rtol=1e-10, atol=1e-10)
    assert d.served == "engine"
    torch.testing.assert_close(2 * d.fallback((None, Xa), eye, ones, 2)[2], want, rtol=1e-10, atol=1e-10)


def test_a_norm_keeps_autograds_subgradient_at_zero():
    f = lambda p, x: torch.linalg.vector_norm(x[:2] - x[2]) + x[0] ** 3  # noqa: E731
    Z = torch.tensor([[1.0, 1.0, 1.0], [2.0, -1.0, 0.5]], dtype=F64)  # the first: norm 0
    for index in [(0,), (1,)]:
        torch.testing.assert_close(fg.partial_derivative(f, index)(None, Z), ref(f, None, Z, index))
    assert torch.isfinite(fg.laplacian(f)(None, Z[1:])).all()


def test_the_fallback_inside_a_transform_equals_the_eager_one():
    from functional_grads.operators._directional import Directional

    # eagerly the fallback is torch.autograd itself; inside torch.func.grad it is nested jacrev
    f, params = fg.functionalize(nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).double())
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    g = lambda p, x: f(p, x)[0] * torch.prod(x.sin() + 2)  # noqa: E731 - prod: no Taylor rule
    bundle = fg.derivatives(g)
    hutchinson = fg.laplacian(g, method="hutchinson", num_samples=2)  # per-sample directions
    ops = [fg.laplacian(g), fg.partial_derivative(g, (0, 1, 1)), lambda p, x: bundle(p, x)[0],
           lambda p, x: bundle(p, x)[1].sum(1), lambda p, x: hutchinson(p, x)]
    for op in ops:
        loss = lambda p: (op(p, X) * torch.arange(1.0, 5.0, dtype=F64)).sum()  # noqa: E731 - signs count
        torch.manual_seed(0)
        eager = torch.autograd.grad(loss(params), list(params.values()))
        torch.manual_seed(0)
        inside = torch.func.grad(loss)(params)
        for a, b in zip(eager, inside.values()):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    d = Directional("partials", g, argnums=1, in_dims=None, chunk_size=None, randomness="error")
    V = torch.randn(2, 3, dtype=F64)
    eager = d((params, X), V, None, 3)
    inside = torch.func.vmap(lambda s: d((params, X * s), V, None, 3)[2], randomness="different")(torch.ones(1, dtype=F64))[0]
    torch.testing.assert_close(inside, eager[2], rtol=1e-10, atol=1e-12)


def test_a_non_finite_batched_derivative_is_recomputed_one_sample_at_a_time():
    # logcumsumexp of a 0-d tensor: vmap runs it as a 1-d op, whose third derivative is NaN;
    # on one sample it is 0, as nested autograd says (and the op has no Taylor rule)
    from functional_grads.operators._directional import Directional

    f = lambda p, x: torch.logcumsumexp(x.reshape(()), 0)  # noqa: E731
    Xs = torch.tensor([[-4.8], [0.3]], dtype=F64)
    torch.testing.assert_close(fg.partial_derivative(f, (0, 0, 0))(None, Xs), torch.zeros(2, dtype=F64))
    d = Directional("partial_derivative", f, argnums=1, in_dims=None, chunk_size=None, randomness="error")
    d((None, Xs), torch.ones(1, 1, dtype=F64), None, 3)
    assert d.served == "loop"


def test_a_no_grad_around_the_call_is_not_a_block_inside_f():
    f = lambda p, x: torch.sin(x) * x.sum()  # noqa: E731 - a vector field [3] -> [3]
    g = lambda p, x: smooth(x)  # noqa: E731
    ops = [fg.input_jacobian(f, mode="fwd"), fg.laplacian(g, method="taylor"), fg.laplacian(g),
           fg.partial_derivative(lambda p, x: smooth(x) * torch.prod(x.sin() + 2), (0, 1))]  # the last: the fallback
    for op in ops:
        want = op(None, X)
        with torch.no_grad():
            got = op(None, X)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        assert not got.requires_grad


def test_an_operator_under_a_users_vmap_gives_each_mapped_call():
    # the engine's graph reads the batch size (sym_size), which has no batching rule under vmap
    f, params = fg.functionalize(nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).double())
    scales = torch.tensor([1.0, 0.5, -2.0], dtype=F64)
    for op in (fg.laplacian(f), fg.partial_derivative(f, (0, 1, 2))):
        mapped = torch.func.vmap(lambda s: op(params, X * s))(scales)
        torch.testing.assert_close(mapped, torch.stack([op(params, X * s) for s in scales]), rtol=1e-12, atol=1e-12)
