"""Functional optimizers vs torch.optim, make_step, apply_grads, and composed losses compiled."""

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
