"""Every Taylor rule (``operators/_rules.py``), through the engine, at orders 1-4, kept per
direction and collapsed with weights, against nested ``torch.autograd`` of the same
function: ``c_m = D^m_v f / m!`` along each direction ``v``."""

import math

import pytest
import torch

from functional_grads.operators._jet import Mode
from functional_grads.operators._rules import ops_with_rules
from functional_grads.operators._taylor import Engine, Unsupported

F64 = torch.float64
G = torch.Generator().manual_seed(0)
W = torch.randn(3, 3, dtype=F64, generator=G)
K3 = torch.randn(2, 1, 3, dtype=F64, generator=G)  # a conv1d kernel

# x is one sample [3] (the engine maps f over the batch); each f returns [] or a vector
FUNCTIONS = {
    "view_reshape_flatten": lambda x: (x.reshape(3, 1) * x.view(1, 3)).flatten().sin(),
    "permute_t_transpose": lambda x: torch.tanh(x[:, None] @ x[None, :]).t().permute(1, 0).transpose(0, 1).sum(0),
    "expand_unsqueeze_squeeze": lambda x: torch.exp(x.unsqueeze(0).expand(2, 3)).squeeze().sum(0) * x,
    "select_slice": lambda x: torch.sin(x[1:]) * x[0] + x[..., 2] ** 2,
    "sum_mean_keepdim": lambda x: torch.stack([x.sum(), x.mean(), (x * x).sum(0, keepdim=True)[0]]) ** 2,
    "neg_sub_alpha": lambda x: torch.sub(-x, x**3, alpha=2.0) * torch.add(x, x.sin(), alpha=0.5),
    "cat_where": lambda x: torch.where(x > 0, torch.cat([x[:1], x[1:] ** 2]), torch.cos(x)),
    "cat_with_a_constant": lambda x: torch.cat([torch.ones(3, dtype=F64), x.sin(), W[0]]) * torch.cat([x, x, x]),
    "where_one_sided": lambda x: torch.where(x > 0.2, x**2, 0.0) + torch.where(x < 0.1, 1.0, x.exp()),
    "mul_div": lambda x: x / (1 + x**2) * (x / 3.0),
    "div_scalar_numerator": lambda x: 2.0 / (2 + x.sin()),
    "mm_addmm_bmm": lambda x: torch.addmm(x[None], x[None], W, beta=0.5, alpha=2.0).tanh()
    + torch.bmm(x[None, None], (W * x)[None])[0],
    "conv1d": lambda x: torch.nn.functional.conv1d(x[None, None], K3, padding=1).tanh().sum(1)[0],
    "var_mean_var": lambda x: torch.var_mean(x, 0, correction=0, keepdim=True)[0] * x
    + torch.var_mean(x, 0)[1] * x.var() + torch.var(x[:, None] * x, 1).sum() * torch.var(x, correction=2),
    "tanh_sigmoid_exp": lambda x: torch.tanh(x) + torch.sigmoid(2 * x) * torch.exp(-x),
    "expm1_log_log1p": lambda x: torch.expm1(x) + torch.log(2 + x.sin()) * torch.log1p(x**2),
    "sin_cos_erf": lambda x: torch.sin(x) * torch.cos(2 * x) + torch.erf(x),
    "sqrt_rsqrt_reciprocal": lambda x: torch.sqrt(1 + x**2) + torch.rsqrt(2 + x.cos()) + torch.reciprocal(3 + x),
    "pow_tensor_scalar_and_tensor": lambda x: (1.5 + x.sin()) ** 2.5 + (2 + x.cos()) ** x + 2.0**x
    + (1.2 + x.cos()) ** torch.tensor([1.5, 2.0, 0.5], dtype=F64) + 3.0 ** (x * x)
    + torch.tensor([1.5, 2.0, 2.5], dtype=F64) ** x,
    "relu_clamps_abs": lambda x: torch.relu(x) ** 2 + torch.clamp(x, -0.5, 0.5) * x
    + x.clamp_min(-0.3) ** 3 + x.clamp_max(0.2) ** 2 + torch.abs(x) * x,
    "casts_and_copies": lambda x: (x.float().double() * x.clone()).sin(),  # float32 inside: rtol 1e-6
    "gelu_silu_softplus_mish_elu": lambda x: torch.nn.functional.gelu(x) + torch.nn.functional.silu(x)
    + torch.nn.functional.softplus(x, beta=2.0) + torch.nn.functional.mish(x) + torch.nn.functional.elu(x),
    "pointwise_by_jvp": lambda x: torch.atan(x) + torch.asinh(x) + torch.atan2(x, W[0] + 2),
    "kinks_at_zero": lambda x: torch.relu(x - x.detach()) + torch.clamp_min(x - x.detach(), 0.0)
    + torch.clamp_max(x - x.detach(), 0.0) * 2 + torch.abs(x - x.detach()) * 3 + x**2,  # at the kink, as autograd
    "half_relu": lambda x: torch.relu(x.half()) * 2,
    "constant_parts": lambda x: x * (x > 0).double() + x.detach() * x + torch.zeros_like(x) + torch.sign(x) * x
    + x * ((x < 0.5) & (x >= -1) & (x <= 2) & (x != 0.3) & ~(x == 0.7)).double()
    + x**2 * (torch.floor(x) + torch.ceil(x) + torch.round(x) + torch.trunc(x)) + x * torch.argmax(x).double(),
    "float32_output": lambda x: (x.float() * 2).tanh(),
    # jointly linear ops (the indices, pads' values and fills constant)
    "index_gather_index_select": lambda x: torch.tanh(x[IDX] * torch.gather(x, 0, IDX) + torch.index_select(x, 0, IDX)),
    "pad_flip_roll_cumsum": lambda x: torch.nn.functional.pad(x, (1, 2), value=0.5).sin()[:3] * torch.flip(x, [0])
    + torch.nn.functional.pad(x ** 2, (2, 0))[:3] * torch.constant_pad_nd(x, (0, 1))[1:]
    + torch.roll(x, 1) * torch.cumsum(x, 0) ** 2,
    "split_unbind_diagonal": lambda x: torch.split(x, [1, 2])[1].sum() * x.unbind()[0] * x
    + torch.diagonal(torch.tanh(x[:, None] * x[None, :])),
    "repeat_unfold_pools": lambda x: x.repeat(2)[1:4] ** 2 * x.unfold(0, 2, 1).sum(1).sum() ** 2
    + torch.nn.functional.avg_pool1d(x[None, None], 2, 1).sin().sum()
    + torch.nn.functional.adaptive_avg_pool1d(x[None, None] ** 2, 2).sum(),
    "scatters_and_puts": lambda x: torch.zeros(3, dtype=F64).scatter(0, IDX_PERM, x ** 2) * x
    + x.index_put((IDX_PERM[:2],), x[:2].sin()) + x.scatter_add(0, IDX_PERM, x.exp())
    + torch.index_add(x, 0, IDX_PERM, x ** 3) + x.scatter(0, IDX_PERM[:1], 0.0) * x,
    "norms": lambda x: torch.linalg.vector_norm(x) * x + torch.linalg.vector_norm(x[:, None] * W, 3.0, dim=1)
    + torch.linalg.vector_norm(x * W, float("inf"), dim=0, keepdim=True)[0] * x ** 2
    + torch.linalg.vector_norm(x, 1) + torch.linalg.vector_norm(x, 0) * x,
    "amax_amin_rounding_division": lambda x: torch.amax(x[:, None] * W, 0) * x + torch.amin(x * x.sin(), 0, keepdim=True)
    + torch.div(x, 0.3, rounding_mode="floor") * x ** 2 + torch.div(x, 0.7, rounding_mode="trunc") * x.exp()
    + torch.div(x, 1 + x ** 2, rounding_mode=None),
    # selections: the values at the indices
    "max_sort_topk_kthvalue": lambda x: x.max(0).values * x + x.sort(descending=True).values * x ** 2
    + x.topk(2).values.sum() * x + torch.kthvalue(x, 2).values ** 3 + x.min(0).values.exp(),
    "median_mode_cummax": lambda x: torch.median(x, 0).values * x + torch.cummax(x, 0).values ** 2
    + torch.cummin(x.sin(), 0).values + torch.sort(x, stable=True).values * x
    + torch.sort(x[:, None] * W, stable=True, dim=0).values[0] * torch.sort(x[:, None] * W, dim=0).values[2],
}
IDX, IDX_PERM = torch.tensor([2, 0, 2]), torch.tensor([2, 0, 1])


def _reference(fn, X, V, n):
    """``c_n [K, B, *out]`` by nested reverse mode: ``D^n_v f / n!``."""
    rows = []
    for v in V:
        per = []
        for x in X:
            x = x.clone().requires_grad_()
            y = fn(x)
            outs = []
            for c in y.reshape(-1):
                g = c
                for _ in range(n):
                    (d,) = torch.autograd.grad(g, x, create_graph=True, allow_unused=True) if g.requires_grad \
                        else (None,)
                    g = (torch.zeros_like(x) if d is None else d) @ v
                outs.append(g)
            per.append(torch.stack(outs).reshape(y.shape))
        rows.append(torch.stack(per))
    return torch.stack(rows).detach() / math.factorial(n)


def _engine(fn):
    return Engine("test", lambda p, x: fn(x), 1, None, "error")


@pytest.mark.parametrize("name", FUNCTIONS)
def test_each_rule_at_orders_1_to_4_per_direction_and_collapsed(name):
    fn = FUNCTIONS[name]
    X = torch.randn(2, 3, dtype=F64, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1
    V = torch.tensor([[1.0, 0.0, 0.0], [0.5, -1.0, 2.0], [0.0, 1.0, 1.0]], dtype=F64)
    w = torch.tensor([0.5, -2.0, 1.5], dtype=F64)
    tol = {"casts_and_copies": 1e-6, "float32_output": 1e-4, "half_relu": 1e-2}.get(name, 1e-9)  # float32 inside
    for n in (1, 2, 3, 4):
        value, jet = _engine(fn)((None, X), V[:, None], Mode(n, None))
        torch.testing.assert_close(value, torch.stack([fn(x) for x in X]))
        for m in range(1, n + 1):
            assert jet[m - 1].dtype == value.dtype
            torch.testing.assert_close(jet[m - 1], _reference(fn, X, V, m).to(value.dtype), rtol=tol, atol=tol / 10)
        _, collapsed = _engine(fn)((None, X), V[:, None], Mode(n, w))
        for m in range(1, n):
            torch.testing.assert_close(collapsed[m - 1], jet[m - 1], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(collapsed[-1], torch.tensordot(w.to(value.dtype), jet[-1], 1), rtol=tol, atol=tol / 10)


def test_a_norm_at_zero_has_autograds_subgradient_zero():
    # the decomposition's sqrt would give inf * 0 = NaN; autograd gives 0 at every order
    X = torch.tensor([[0.0, 0.0, 0.0], [0.3, -1.0, 2.0]], dtype=F64)
    V = torch.tensor([[1.0, 0.0, 0.0], [0.5, -1.0, 2.0]], dtype=F64)
    for p in (2.0, 0.5, 3.0):
        fn = lambda x: torch.linalg.vector_norm(x, p) * 2.0  # noqa: E731
        for n in (1, 2, 3):
            _, jet = _engine(fn)((None, X), V[:, None], Mode(n, None))
            for m in range(n):
                torch.testing.assert_close(jet[m][:, 0], torch.zeros(2, dtype=F64), rtol=0, atol=0)
            torch.testing.assert_close(jet[0][:, 1], _reference(fn, X[1:], V, 1)[:, 0], rtol=1e-10, atol=1e-12)
    for refused in (lambda x: torch.linalg.vector_norm(x, -1.0), lambda x: torch.linalg.vector_norm(x, dtype=F64)):
        with pytest.raises(Unsupported, match=r"linalg_vector_norm with ord=-?[12]\.0 or a dtype"):
            _engine(refused)((None, X[1:]), V[:, None], Mode(1, None))


def test_per_sample_directions():
    fn = FUNCTIONS["mm_addmm_bmm"]
    X = torch.randn(2, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    V = torch.randn(2, 2, 3, dtype=F64, generator=torch.Generator().manual_seed(3))  # [B, K, D]
    _, jet = _engine(fn)((None, X), V.transpose(0, 1), Mode(2, None))
    for b in range(2):
        torch.testing.assert_close(jet[1][:, b], _reference(fn, X[b:b + 1], V[b], 2)[:, 0], rtol=1e-10, atol=1e-11)


def test_ops_without_a_rule_are_refused_by_name():
    fn = lambda x: torch.logcumsumexp(x, 0).sin()  # noqa: E731 - no rule
    with pytest.raises(Unsupported, match=r"^no Taylor rule for aten\.logcumsumexp\.default$"):
        _engine(fn)((None, torch.ones(2, 3, dtype=F64)), torch.eye(3, dtype=F64)[:, None], Mode(2, None))
    assert "aten.tanh" in ops_with_rules() and "aten.convolution" in ops_with_rules()


def _outer(x, y, s=1.0):
    return s * torch.einsum("bi,bj->bij", x, y)  # strictly [B, n] x [B, m]: no extra leading dims


def _library():
    lib = torch.library.Library("fg_rules", "FRAGMENT")  # noqa: TOR901
    lib.define("outer(Tensor x, Tensor y, *, float s=1.0) -> Tensor")  # bilinear
    lib.define("triple(Tensor x, Tensor y, Tensor z) -> Tensor")
    lib.define("softcube(Tensor x) -> Tensor")
    for name, fn in (("outer", _outer), ("triple", lambda x, y, z: x * y * z), ("softcube", lambda x: x**3 / 3)):
        lib.impl(name, fn, "CompositeExplicitAutograd")
        lib.impl(name, fn, "Meta")
    return lib


_LIB = _library()


def test_registered_rules_for_a_users_ops(monkeypatch):
    from functional_grads.operators import _rules

    monkeypatch.setattr(_rules, "_RULES", dict(_rules._RULES))  # the registrations end with the test
    ops = torch.ops.fg_rules
    fg_register = __import__("functional_grads").operators.register_rule
    fg_register(ops.outer, linear=(0, 1))
    fg_register(ops.triple.default, linear=(0, 1, 2))
    fg_register(ops.softcube.default, derivatives=lambda x, n: [(x**2, 2 * x, 2 + 0 * x)[k] for k in range(n)])
    # the engine maps f over the batch: inside, x is [B, 3]
    both = lambda x: ops.softcube(ops.outer(x.sin(), x, s=2.0)).sum(-1)  # noqa: E731 - both arguments live
    one = lambda x: ops.outer(x.exp(), W[:1].expand(x.shape[0], 3), s=0.5).sum(-1)  # noqa: E731 - one live
    mine = lambda x: (_outer(x.sin(), x, 2.0) ** 3 / 3).sum(-1) + _outer(x.exp(), W[:1].expand(x.shape[0], 3), 0.5).sum(-1)  # noqa: E731,E501
    X = torch.randn(2, 3, dtype=F64, generator=torch.Generator().manual_seed(5))
    V = torch.randn(3, 3, dtype=F64, generator=torch.Generator().manual_seed(6))
    batched = lambda g: Engine("test", lambda p, x: g(x[None])[0], 1, None, "error")  # noqa: E731
    for n in (1, 2, 3):
        for w in (None, torch.tensor([1.0, 2.0, -1.0], dtype=F64)):
            got = [batched(g)((None, X), V[:, None], Mode(n, w)) for g in (both, one)]
            want = batched(mine)((None, X), V[:, None], Mode(n, w))
            torch.testing.assert_close(got[0][0] + got[1][0], want[0])
            for m in range(n):
                torch.testing.assert_close(got[0][1][m] + got[1][1][m], want[1][m], rtol=1e-10, atol=1e-11)
    three = lambda x: ops.triple(x, x.sin(), x.cos())  # noqa: E731
    with pytest.raises(Unsupported, match=r"^fg_rules\.triple\.default: an input-dependent argument outside "
                                          r"linear=\(0, 1, 2\), or more than two$"):
        _engine(three)((None, X), V[:, None], Mode(2, None))
    fg_register(ops.outer.default, linear=(0,))  # an overload's rule wins over its packet's
    with pytest.raises(Unsupported, match=r"^fg_rules\.outer\.default: an input-dependent argument outside "
                                          r"linear=\(0,\), or more than two$"):
        batched(both)((None, X), V[:, None], Mode(2, None))


def test_refusals_of_the_rules():
    X, V = torch.randn(2, 3, dtype=F64), torch.eye(3, dtype=F64)[:, None]
    cases = {
        r"^a convolution with an input-dependent argument after the first$":
            lambda x: torch.nn.functional.conv1d(x[None, None], x[None, None, :2]).sum(),
        r"^an elementwise op with an input-dependent argument after the first$":
            lambda x: torch.atan2(x, x.exp()),
    }
    for message, fn in cases.items():
        with pytest.raises(Unsupported, match=message):
            _engine(fn)((None, X), V, Mode(2, None))
    wrong = torch.ops.fg_rules.softcube
    with pytest.raises(ValueError, match=r"^register_rule: derivatives\(x, n\) must return n = 2 tensors "
                                         r"\[f'\(x\), \.\.\., f\^\(n\)\(x\)\], got 3\.$"):
        from functional_grads.operators import _rules

        saved = dict(_rules._RULES)
        try:
            _rules.register_rule(wrong.default, derivatives=lambda x, n: [x, x, x])
            _engine(lambda x: wrong(x))((None, X), V, Mode(2, None))
        finally:
            _rules._RULES.clear()
            _rules._RULES.update(saved)
