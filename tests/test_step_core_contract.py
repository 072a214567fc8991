"""The step core's contract (value_and_grad, grad, make_step, data_parallel): what it checks,
every message whole, where its warnings point, the eager autograd path against torch.func,
and one real process group of one rank."""

import math
import re
import warnings

import optree
import pytest
import torch
import torch.distributed as dist

import functional_grads as fg
from functional_grads import _context, _engine

F64 = torch.float64
ZERO_GRADIENT = (r"the gradient is exactly zero for every parameter, so training would not change them\. Either the "
                 r"loss has no gradient path to the params \(a detached tensor, or params not used\), or the model "
                 r"is piecewise linear \(e\.g\. ReLU\) and the loss uses its second derivatives, which vanish: use a "
                 r"smooth activation \(tanh, softplus, gelu, silu\)\.$")
DEFAULT_HINT = (r"Check the data for NaN/Inf, lower the learning rate, or look for a norm/sqrt/log evaluated at 0 "
                r"inside the loss\.$")


def _params():
    return {"a": torch.tensor([1.0, -2.0], dtype=F64), "b": torch.tensor([0.5, 3.0], dtype=F64)}


def _loss(p, X):
    return (torch.tanh(X @ p["a"]) * p["b"].sum()).mean()


X = torch.linspace(-1, 1, 8, dtype=F64).reshape(4, 2)


# --- messages ---------------------------------------------------------------------------------

@pytest.mark.parametrize("api", ["value_and_grad", "grad"])
def test_every_refusal_names_the_function_called(api):
    build = getattr(fg, api)
    with pytest.raises(TypeError, match=rf"^{api}: loss must be callable, got str\.$"):
        build("loss")
    with pytest.raises(TypeError, match=rf"^{api}: loss must return a tensor, got float\. With an auxiliary output, "
                                        r"pass has_aux=True and return \(output, aux\)\.$"):
        build(lambda p, X: 1.0)(_params(), X)
    with pytest.raises(TypeError, match=rf"^{api}: with has_aux=True, f must return a pair \(output, aux\), "
                                        r"got Tensor\.$"):
        build(_loss, has_aux=True)(_params(), X)
    with pytest.raises(RuntimeError, match=rf"^{api}: check=True inspects the results on the host, which is "
                                           r"impossible inside torch\.func transforms \(vmap, grad, jacrev\)\. Build "
                                           r"the function with check=False to use it there\.$"):
        torch.vmap(build(lambda p, x: (p["a"] * x).sum()), in_dims=(None, 0))(_params(), X)


def test_the_aux_is_not_the_value():
    with pytest.raises(ValueError, match=r"^value_and_grad: loss must return a scalar \(shape \[\]\), got shape "
                                         r"\[4\]\. Reduce it, e\.g\. with \.mean\(\) or \.sum\(\)\.$"):
        fg.value_and_grad(lambda p, X: ((X @ p["a"]), 0.0), has_aux=True)(_params(), X)
    (value, aux), _ = fg.value_and_grad(lambda p, X: (_loss(p, X), X @ p["a"]), has_aux=True)(_params(), X)
    torch.testing.assert_close(value, _loss(_params(), X))
    torch.testing.assert_close(aux, X @ _params()["a"])


def test_a_non_finite_gradient_names_its_leaves_and_gives_the_default_hint():
    sqrt_at_zero = lambda p, X: torch.sqrt(p["a"] - p["a"].detach()).sum() + p["b"].sum()  # noqa: E731
    with pytest.raises(FloatingPointError, match=r"^value_and_grad: non-finite result: loss = 3\.5, gradient leaves "
                                                 r"with NaN/Inf: \[\"grads\['a'\]\"\]\. " + DEFAULT_HINT):
        fg.value_and_grad(sqrt_at_zero)(_params(), X)


def test_params_made_non_finite_by_the_update_are_named():
    # Finite gradients (1e300 on a, 1 on b); the update overflows a, the first leaf, alone.
    huge = lambda p, X: 1e300 * p["a"].sum() + p["b"].sum()  # noqa: E731
    opt = fg.optim.sgd(1e10)
    with pytest.raises(FloatingPointError, match=r"^make_step: non-finite result: loss = .*, gradient leaves with "
                                                 r"NaN/Inf: \[\], results with NaN/Inf: \[\"params\['a'\]\"\]\. Check the data "
                                                 r"and the optimizer's settings \(learning rate, betas, eps\)\.$"):
        fg.make_step(huge, opt)(_params(), opt.init(_params()), X)


def test_large_finite_gradients_are_not_called_overflow():
    big = lambda p, X: 1e200 * (p["a"].sum() + p["b"].sum())  # noqa: E731  a 2-norm would overflow
    _, g = fg.value_and_grad(big)(_params(), X)
    assert g["a"].tolist() == [1e200, 1e200]


def test_an_empty_batch_is_named_by_position():
    opt = fg.optim.sgd(0.1)
    loss = lambda p, X, Y: ((X @ p["a"] - Y) ** 2).mean()  # noqa: E731
    with pytest.raises(FloatingPointError, match=r"Argument\(s\) \[2, 3\] are empty batches: a mean over no samples "
                                                 r"is NaN\. Skip empty batches\.$"):
        fg.make_step(loss, opt)(_params(), opt.init(_params()), X[:0], X[:0, 0])
    with pytest.raises(FloatingPointError, match=r"Argument\(s\) \[1, 2\] are empty batches"):
        fg.value_and_grad(loss)(_params(), X[:0], X[:0, 0])


# --- the zero-gradient warning ----------------------------------------------------------------

def _at_this_line(w):
    # Under mutation testing the first frame outside the package is mutmut's trampoline.
    return w.filename == __file__ or w.filename.endswith("mutmut/mutation/trampoline.py")


def _warned(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    assert len(caught) == 1
    return caught[0]


def test_a_zero_gradient_warns_at_the_callers_line():
    constant = lambda p, X: X.sum()  # noqa: E731
    opt = fg.optim.sgd(0.1)
    for api, call in [("value_and_grad", lambda: fg.value_and_grad(constant)(_params(), X)),
                      ("grad", lambda: fg.grad(constant)(_params(), X)),
                      ("make_step", lambda: fg.make_step(constant, opt)(_params(), opt.init(_params()), X))]:
        w = _warned(call)
        assert w.category is RuntimeWarning and _at_this_line(w)
        assert w.message.args[0].startswith(f"{api}: ") and re.search(ZERO_GRADIENT, str(w.message))


def test_deprecations_warn_at_the_callers_line():
    w = _warned(lambda: fg.optim.make_step)
    assert w.category is DeprecationWarning and _at_this_line(w)


def test_a_zero_gradient_with_nonzero_params_still_warns():
    opt = fg.optim.sgd(0.1)
    w = _warned(lambda: fg.make_step(lambda p, X: X.sum(), opt)(_params(), opt.init(_params()), X))
    assert "exactly zero" in str(w.message)


# --- the eager autograd path against torch.func -----------------------------------------------

def test_eager_and_transformed_paths_agree_with_aux_and_tuple_argnums():
    loss = lambda p, x: ((torch.tanh(x @ p["a"]) * p["b"]).sum(), {"y": x @ p["a"]})  # noqa: E731
    vg = fg.value_and_grad(loss, argnums=(0, 1), has_aux=True, check=False)
    per_sample = torch.vmap(vg, in_dims=(None, 0))(_params(), X)  # torch.func inside vmap
    for i in range(4):
        (value, aux), (gp, gx) = vg(_params(), X[i])  # eager autograd
        assert not value.requires_grad and not aux["y"].requires_grad
        (v_i, aux_i), (gp_i, gx_i) = optree.tree_map(lambda t: t[i], per_sample)
        torch.testing.assert_close((value, aux["y"], gp, gx), (v_i, aux_i["y"], gp_i, gx_i))
        x = X[i].clone().requires_grad_()
        p = {k: v.clone().requires_grad_() for k, v in _params().items()}
        want = torch.autograd.grad(loss(p, x)[0], [p["a"], p["b"], x])
        torch.testing.assert_close((gp["a"], gp["b"], gx), want)


def test_an_eager_aux_may_hold_numbers():
    (_, aux), _ = fg.value_and_grad(lambda p, X: (_loss(p, X), {"n": 2.0, "y": p["a"] * 2}), has_aux=True)(_params(), X)
    assert aux["n"] == 2.0 and not aux["y"].requires_grad


def test_eager_gradients_skip_integer_leaves_and_a_loss_without_params():
    params = {"a": torch.tensor([1.0, -2.0], dtype=F64), "i": torch.arange(3), "b": torch.tensor([0.5, 3.0], dtype=F64)}
    loss = lambda p, X: (X @ p["a"]).sum() + (p["b"] ** 2).sum() + 0 * p["i"].sum()  # noqa: E731
    value, g = fg.value_and_grad(loss)(params, X)
    assert torch.equal(g["i"], torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close((g["a"], g["b"]), (X.sum(0), 2 * params["b"]))
    with pytest.warns(RuntimeWarning, match="exactly zero"):
        value, g = fg.value_and_grad(lambda p, X: X.sum())(params, X)
    assert all(torch.equal(g[k], torch.zeros_like(params[k])) for k in params)


# --- the optimizer state ----------------------------------------------------------------------

def test_a_state_for_other_params_is_explained_even_without_a_batch():
    opt = fg.optim.adam(0.1)
    wrong = opt.init({"a": torch.zeros(3, dtype=F64)})
    only_params = lambda p: (p["a"] ** 2).sum() + p["b"].sum()  # noqa: E731
    with pytest.raises(ValueError, match=r"^make_step: opt_state does not fit params: optimizer\.init\(params\) gives "
                                         r"the structure .* build a new one with state = optimizer\.init\(params\)\.$"
                       ) as error:
        fg.make_step(only_params, opt)(_params(), wrong)
    assert error.value.__cause__ is not None  # the optimizer's own error is kept


def test_explaining_a_state_allocates_nothing():
    seen = []
    base = fg.optim.sgd(0.1, momentum=0.9)

    def init(params):
        seen.append({t.device.type for t in torch.utils._pytree.tree_leaves(params)})
        return base.init(params)

    opt = fg.optim.GradientTransformation(init, base.update)
    wrong = base.init({"a": torch.zeros(3, dtype=F64)})
    with pytest.raises(ValueError, match="opt_state does not fit params"):
        fg.make_step(_loss, opt)(_params(), wrong, X)
    assert seen == [{"meta"}]


def test_a_state_with_number_leaves_is_compared_too():
    base = fg.optim.sgd(0.1, momentum=0.9)
    counted = fg.optim.GradientTransformation(lambda p: {"n": 0, "inner": base.init(p)},
                                              lambda g, s, p=None: base.update(g, s["inner"], p))
    wrong = counted.init({"a": torch.zeros(3, dtype=F64), "b": torch.zeros(2, dtype=F64)})  # same keys, a's shape
    with pytest.raises(ValueError, match=r"^make_step: opt_state does not fit params"):
        fg.make_step(_loss, counted)(_params(), wrong, X)


# --- flags under a trace equal the eager ones -------------------------------------------------

@pytest.mark.parametrize("case", ["finite", "zero", "nan_first_grad", "inf_first_param", "mixed_dtypes"])
def test_the_traced_flags_decide_as_the_eager_ones(case):
    grads = {"a": torch.tensor([1.0, -3.0], dtype=F64), "b": torch.zeros(2, dtype=F64),
             "e": torch.zeros(0, dtype=F64), "i": torch.arange(2)}
    params = {"a": torch.tensor([2.0, 0.5], dtype=F64), "b": torch.tensor([-4.0], dtype=F64)}
    value = torch.tensor(0.25, dtype=F64)
    if case == "zero":
        grads["a"] = torch.zeros(2, dtype=F64)
    elif case == "nan_first_grad":
        grads["a"] = torch.tensor([math.nan, 0.0], dtype=F64)
    elif case == "inf_first_param":
        params["a"] = torch.tensor([math.inf, 0.0], dtype=F64)
    elif case == "mixed_dtypes":
        grads["a"], value = grads["a"].float(), value.float()
    eager = _engine.flags(value, grads, params)
    with _context.tracing():
        traced = _engine.flags(value, grads, params)
    assert traced.shape == (3,) and traced.dtype == F64
    expected = {"finite": [0.25, 3.0, 4.0], "zero": [0.25, 0.0, 4.0], "nan_first_grad": [0.25, math.nan, 4.0],
                "inf_first_param": [0.25, 3.0, math.inf], "mixed_dtypes": [0.25, 3.0, 4.0]}[case]
    assert torch.allclose(traced, torch.tensor(expected, dtype=F64), equal_nan=True)
    assert [math.isfinite(v) for v in eager] == [math.isfinite(v) for v in expected]
    assert (eager[1] == 0) == (expected[1] == 0) and eager[0] == 0.25
    for flags in (eager, traced):
        if case in ("nan_first_grad", "inf_first_param"):
            with pytest.raises(FloatingPointError, match="non-finite result"):
                _engine.check_result("api", value, grads, flags, lambda: "", params)
        elif case == "zero":
            with pytest.warns(RuntimeWarning, match="exactly zero"):
                _engine.check_result("api", value, grads, flags, lambda: "", params)
        else:
            _engine.check_result("api", value, grads, flags, lambda: "", params)


def test_traced_flags_without_floating_leaves():
    with _context.tracing():
        traced = _engine.flags(torch.tensor(2.0), {"i": torch.arange(2)}, None)
    assert traced.tolist() == [2.0, 1.0, 1.0]  # no leaves: neither zero nor bad


# --- data-parallel on one real rank -----------------------------------------------------------

@pytest.fixture
def one_rank(tmp_path):
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("shard", [None, "optimizer", "params"])
def test_one_rank_trains_as_make_step(one_rank, shard):
    opt = fg.optim.adam(1e-2)
    Y = X[:, :1] ** 2
    loss = lambda p, X, Y: ((torch.tanh(X @ p["a"]) * p["b"].sum() - Y[:, 0]) ** 2).mean()  # noqa: E731
    params, state = _params(), opt.init(_params())
    step = fg.make_step(loss, opt)
    held = fg.distributed.shard_params(_params()) if shard == "params" else _params()
    held_state = fg.distributed.init_state(opt, held, shard=shard) if shard else opt.init(held)
    ours = fg.distributed.data_parallel(loss, opt, **({"shard": shard} if shard else {}))
    for _ in range(3):
        params, state, value = step(params, state, X, Y)
        held, held_state, our_value = ours(held, held_state, X, Y)
        torch.testing.assert_close(our_value, value, rtol=1e-14, atol=1e-14)
    got = fg.distributed.gather_params(held) if shard == "params" else held
    torch.testing.assert_close(got, params, rtol=1e-14, atol=1e-14)


def test_one_rank_reports_an_empty_batch_and_non_finite_params(one_rank):
    opt = fg.optim.sgd(1e10)
    loss = lambda p, X: 1e300 * (X @ p["a"]).mean() + p["b"].sum()  # noqa: E731
    step = fg.distributed.data_parallel(loss, opt)
    with pytest.raises(ValueError, match=r"^data_parallel: the global batch is empty \(0 samples on every rank\), so "
                                         r"there is no loss to average\. Skip steps whose shards are all empty\.$"):
        step(_params(), opt.init(_params()), X[:0])
    with pytest.raises(FloatingPointError, match=r"^data_parallel: non-finite result: loss = .*, gradient leaves with "
                                                 r"NaN/Inf: \[\], results with NaN/Inf: \[\"params\['a'\]\"\]\. "
                                                 + DEFAULT_HINT):
        step(_params(), opt.init(_params()), X + 2)
