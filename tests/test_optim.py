"""Functional optimizers vs torch.optim, make_step, apply_grads, and composed losses compiled."""

import os
import warnings

import pytest
import torch

import functional_grads as fg
from helpers import mlp


def _problem(dtype=torch.float64):
    model = mlp(3, 8, 2, dtype=dtype)
    f, params = fg.functionalize(model)
    X, S = torch.randn(10, 3, dtype=dtype), torch.randn(10, 3, dtype=dtype)
    return model, f, params, X, S


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float64, 1e-14)])
@pytest.mark.parametrize("name, kwargs", [
    ("adam", {}), ("adam", {"weight_decay": 0.01, "betas": (0.8, 0.99)}),
    ("sgd", {}), ("sgd", {"momentum": 0.9}), ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
])
def test_functional_optimizer_equals_torch_optim_for_20_steps(name, kwargs, dtype, tol):
    model, f, params, X, S = _problem(dtype)
    loss = fg.losses.gradient_matching(f)
    decay = kwargs.pop("weight_decay", 0.0)
    opt = getattr(fg.optim, name)(1e-2, **kwargs)
    opt = fg.optim.chain(fg.optim.add_decayed_weights(decay), opt) if decay else opt
    kwargs["weight_decay"] = decay
    functional, state = {k: v.clone() for k, v in params.items()}, None
    state = opt.init(functional)
    step = fg.make_step(loss, opt, compile=False)
    reference = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[name](model.parameters(), lr=1e-2, **kwargs)
    vg = fg.value_and_grad(loss)
    for _ in range(20):
        functional, state, _ = step(functional, state, X, S)
        fg.apply_grads(model, vg(params, X, S)[1])
        reference.step()
    for k in params:
        torch.testing.assert_close(functional[k], params[k], rtol=tol, atol=tol)
    # apply_grads + torch.optim updated the module itself
    torch.testing.assert_close(dict(model.named_parameters())["0.weight"].detach(), params["0.weight"])


def test_make_step_compiled_equals_eager_and_reduces_the_loss():
    _, f, params, X, S = _problem(torch.float32)
    loss = fg.losses.sobolev(f)
    Y = torch.randn(10)
    opt = fg.optim.adam(1e-2)
    eager, compiled = fg.make_step(loss, opt, compile=False), fg.make_step(loss, opt, compile=True)
    pe, se = params, opt.init(params)
    pc, sc = params, opt.init(params)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fg.CompileFallbackWarning)
        for i in range(30):
            pe, se, le = eager(pe, se, X, Y, S)
            pc, sc, lc = compiled(pc, sc, X, Y, S)
            if i == 0:
                first = le
    for k in params:
        torch.testing.assert_close(pc[k], pe[k], rtol=1e-5, atol=1e-5)
    assert lc < first


def test_composed_losses_compile():
    _, f, params, X, S = _problem(torch.float32)
    Y = torch.randn(10)
    sob, gp = fg.losses.sobolev(f), fg.losses.gradient_penalty(f, target=1.0)
    adv = fg.losses.adversarial(f, lambda o, y: ((o - y) ** 2).sum(), fg.Attack(eps=0.1, steps=2))
    total = lambda p, X, Y, dY: sob(p, X, Y, dY) + 0.1 * gp(p, X) + 0.5 * adv(p, X, Y)  # noqa: E731
    eager = fg.value_and_grad(total)(params, X, Y, S)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fg.CompileFallbackWarning)
        compiled = fg.value_and_grad(total, compile=True)(params, X, Y, S)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_bad_arguments():
    model, f, params, X, S = _problem()
    with pytest.raises(TypeError, match="optimizer must be a functional_grads.optim"):
        fg.make_step(fg.losses.gradient_matching(f), torch.optim.SGD(params.values(), lr=0.1))
    with pytest.raises(ValueError, match="lr must be a positive number"):
        fg.optim.adam(-1.0)
    with pytest.raises(ValueError, match=r"apply_grads: grads does not match the module's trainable parameters \(missing: \['0.bias'"):
        fg.apply_grads(model, {"0.weight": params["0.weight"]})


def test_lbfgs_defaults_and_state():
    from functional_grads import optim as fg_optim

    state = fg_optim.lbfgs().init(torch.zeros(2, 3, dtype=torch.float64))
    assert state.s.shape == state.y.shape == (10, 2, 3)  # history=10 by default
    assert state.step.dtype == torch.int64 and state.step.item() == 0
    assert fg_optim.lbfgs(history=4).init(torch.zeros(5, 2, 2)).s.shape == (4, 5, 4)


@pytest.mark.parametrize("call, error, match", [
    (lambda: fg.optim.lbfgs(lr=0.0), ValueError, r"^lbfgs: lr must be a positive number \(finite\), got 0\.0\.$"),
    (lambda: fg.optim.lbfgs(history=0), ValueError, r"^lbfgs: history must be a positive int, got 0\.$"),
    (lambda: fg.optim.lbfgs(max_backtracks=0), ValueError, r"^lbfgs: max_backtracks must be a positive int, got 0\.$"),
    (lambda: fg.optim.lbfgs(max_backtracks=2.0), ValueError,
     r"^lbfgs: max_backtracks must be a positive int, got 2\.0\.$"),
    (lambda: fg.optim.lbfgs().init(torch.tensor(1.0)), TypeError,
     r"^lbfgs: optimises one batched tensor \[B, \.\.\.\] of independent problems\.$"),
    (lambda: fg.optim.lbfgs().init([1.0]), TypeError, r"^lbfgs: optimises one batched tensor"),
    (lambda: fg.optim.lbfgs().update(torch.zeros(2, 1), fg.optim.lbfgs().init(torch.zeros(2, 1)), torch.zeros(2, 1),
                                     value=torch.zeros(2)), TypeError,
     r"^lbfgs: call update\(grads, state, x, value=objective\(x\), value_fn=objective\)\.$"),
    (lambda: fg.optim.lbfgs().update(torch.zeros(2, 1), fg.optim.lbfgs().init(torch.zeros(2, 1)), torch.zeros(2, 1),
                                     value_fn=lambda x: x.sum(1)), TypeError, r"^lbfgs: call update"),
    (lambda: fg.optim.lbfgs().update(torch.zeros(2, 1), fg.optim.lbfgs().init(torch.zeros(2, 1)), None,
                                     value=torch.zeros(2), value_fn=lambda x: x.sum(1)), TypeError, r"^lbfgs: call update"),
])
def test_lbfgs_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_lbfgs_first_step_is_a_short_steepest_descent_step_accepted_by_armijo():
    """Step 0: direction -g, length lr / |g|_1 (at most lr), accepted at once when it satisfies
    the Armijo condition f(x + a d) <= f(x) + 1e-4 a g.d; a sample at a stationary point stays."""
    fn = lambda x: ((x - torch.tensor([1.0, -2.0], dtype=x.dtype)) ** 2).sum(1)  # noqa: E731
    x = torch.tensor([[0.0, 0.0], [1.0, -2.0]], dtype=torch.float64)  # sample 1 is at the minimum
    g = 2 * (x - torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = fg.optim.lbfgs(lr=0.5)
    updates, state = opt.update(g, opt.init(x), x, value=fn(x), value_fn=fn)
    alpha = 0.5 * min(1.0, 1 / g[0].abs().sum().item())
    torch.testing.assert_close(updates[0], -alpha * g[0])
    torch.testing.assert_close(updates[1], torch.zeros(2, dtype=torch.float64))
    assert state.step.item() == 1


def test_the_deprecated_optim_make_step_warns_at_the_callers_line_and_unknown_names_raise():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = fg.optim.make_step
    assert got is fg.make_step
    (w,) = caught
    # Under mutmut a trampoline frame sits between: stacklevel then points at it.
    assert w.category is DeprecationWarning and (w.filename == __file__ or "MUTANT_UNDER_TEST" in os.environ)
    assert str(w.message) == "functional_grads.optim.make_step is deprecated; use functional_grads.make_step."
    with pytest.raises(AttributeError, match=r"^module 'functional_grads\.optim' has no attribute 'nope'$"):
        fg.optim.nope  # noqa: B018
