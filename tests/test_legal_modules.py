"""Legal modules give what ``module(x)`` gives on every path: frozen parameters, shared
submodules, tied weights, a ``forward`` replaced on an instance, and module attributes that
change between compiled calls. Each reference is plain autograd on the module itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import functional_grads as fg
from helpers import assert_close, mlp

F64 = torch.float64


def _X(n=6, d=3, seed=0):
    return torch.randn(n, d, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _autograd_grad(model, X):
    x = X.clone().requires_grad_()
    return torch.autograd.grad(model(x).sum(), x)[0]


def _autograd_laplacian(model, X):
    return torch.stack([torch.autograd.functional.hessian(lambda y: model(y[None]).sum(), x).trace() for x in X])


# --- frozen parameters --------------------------------------------------------------


def _frozen_model():
    model = mlp(3, 8, 2, seed=3)
    model[0].requires_grad_(False)
    return model


@pytest.mark.parametrize("compile", [False, True])
def test_frozen_layers_are_not_trained_by_make_step(compile):
    model = _frozen_model()
    frozen = model[0].weight.detach().clone()
    f, params = fg.functionalize(model)
    assert sorted(params) == ["2.bias", "2.weight", "4.bias", "4.weight"]
    opt = fg.optim.adam(1e-2)
    step, state = fg.make_step(fg.losses.gradient_matching(f), opt, compile=compile), opt.init(params)
    X = _X()
    for _ in range(3):
        params, state, _ = step(params, state, X, 2 * X)
    fg.load_params(model, params)
    assert torch.equal(model[0].weight, frozen)
    # the trainable layers match a torch.optim run on the same module with the same frozen layer
    reference = _frozen_model()
    torch_opt = torch.optim.Adam([p for p in reference.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        x = X.clone().requires_grad_()
        (g,) = torch.autograd.grad(reference(x).sum(), x, create_graph=True)
        torch_opt.zero_grad()
        ((g - 2 * X) ** 2).mean().backward()
        torch_opt.step()
    assert reference[0].weight.grad is None
    for name, p in reference.named_parameters():
        assert_close(dict(model.named_parameters())[name], p, rtol=1e-10, atol=1e-12)


def test_frozen_layers_get_no_grad_through_apply_grads():
    model = _frozen_model()
    f, params = fg.functionalize(model)
    _, grads = fg.value_and_grad(fg.losses.gradient_penalty(f))(params, _X())
    assert set(grads) == set(params)
    fg.apply_grads(model, grads)
    assert model[0].weight.grad is None and model[0].bias.grad is None
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("compile", [False, True])
def test_a_frozen_weight_replaced_later_is_used(compile):
    model = _frozen_model()
    f, params = fg.functionalize(model)
    X = _X()
    vg = fg.value_and_grad(fg.losses.gradient_matching(f), compile=compile)
    vg(params, X, X)
    with torch.no_grad():
        model[0].weight.mul_(2.0)  # in place
    value, _ = vg(params, X, X)
    assert_close(value, ((_autograd_grad(model, X) - X) ** 2).mean(), rtol=1e-12, atol=1e-12)
    model[0].weight = nn.Parameter(torch.randn(8, 3, dtype=F64), requires_grad=False)  # a new tensor
    value, _ = vg(params, X, X)
    assert_close(value, ((_autograd_grad(model, X) - X) ** 2).mean(), rtol=1e-12, atol=1e-12)
    model.load_state_dict({k: v * 0.5 for k, v in model.state_dict().items()})  # a checkpoint
    value, _ = vg(f.params(), X, X)
    assert_close(value, ((_autograd_grad(model, X) - X) ** 2).mean(), rtol=1e-12, atol=1e-12)


def test_frozen_parameters_stay_out_of_every_fast_path():
    model = _frozen_model()
    model[2].bias.requires_grad_(False)  # a frozen bias on a trainable layer
    f, params = fg.functionalize(model)
    X = _X()
    assert_close(f(params, X), model(X), rtol=0, atol=0)
    assert_close(fg.input_grad(f)(params, X), _autograd_grad(model, X), rtol=1e-12, atol=1e-12)
    assert_close(fg.laplacian(f)(params, X), _autograd_laplacian(model, X), rtol=1e-10, atol=1e-12)
    assert_close(fg.derivatives(f)(params, X)[1], _autograd_grad(model, X), rtol=1e-12, atol=1e-12)


# --- shared submodules, tied weights, instance forward -------------------------------


def _shared_activation():
    act = nn.Tanh()
    return nn.Sequential(nn.Linear(3, 8), act, nn.Linear(8, 8), act, nn.Linear(8, 1)).double()


def _shared_linear():
    torch.manual_seed(1)
    hidden = nn.Linear(8, 8)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), hidden, nn.Tanh(), hidden, nn.Tanh(), nn.Linear(8, 1)).double()


def _tied():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 8), nn.Softplus(), nn.Linear(8, 8), nn.Tanh(),
                          nn.Linear(8, 1)).double()
    model[4].weight = model[2].weight
    return model


def _instance_forward():
    model = mlp(3, 8, 1, seed=4)
    original = model[0].forward
    model[0].forward = lambda x: 2.0 * original(x)  # as accelerate's hooks replace forward
    return model


LEGAL = {"shared activation": _shared_activation, "shared linear": _shared_linear, "tied weights": _tied,
         "instance forward": _instance_forward}


@pytest.mark.parametrize("make", LEGAL.values(), ids=LEGAL.keys())
def test_every_path_runs_what_the_module_runs(make):
    model = make()
    f, params = fg.functionalize(model)
    X = _X()
    grad, lap = _autograd_grad(model, X), _autograd_laplacian(model, X)
    assert_close(f(params, X), model(X), rtol=1e-14, atol=1e-14)
    assert_close(fg.input_grad(f)(params, X), grad, rtol=1e-12, atol=1e-12)
    assert_close(fg.value_and_input_grad(f)(params, X)[1], grad, rtol=1e-12, atol=1e-12)
    for method in ("auto", "forward", "hessian"):
        assert_close(fg.laplacian(f, method=method)(params, X), lap, rtol=1e-10, atol=1e-12)
    value, du, dlap = fg.derivatives(f)(params, X)
    assert_close(value, model(X)[:, 0], rtol=1e-12, atol=1e-12)
    assert_close(du, grad, rtol=1e-12, atol=1e-12)
    assert_close(dlap, lap, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make", LEGAL.values(), ids=LEGAL.keys())
def test_outer_gradient_equals_autograd(make):
    model = make()
    f, params = fg.functionalize(model)
    X = _X()
    _, grads = fg.value_and_grad(lambda p, X: fg.laplacian(f)(p, X).pow(2).mean())(params, X)
    lap = torch.stack([torch.autograd.functional.hessian(
        lambda y: model(y[None]).sum(), x, create_graph=True).trace() for x in X])
    named = dict(model.named_parameters())
    ref = torch.autograd.grad(lap.pow(2).mean(), [named[k] for k in grads], allow_unused=True)
    for k, r in zip(grads, ref):
        assert_close(grads[k], torch.zeros_like(grads[k]) if r is None else r, rtol=1e-9, atol=1e-12)


# --- compiled steps and module attributes ---------------------------------------------


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp(3, 8, 1, seed=5)
        self.coef = (1.0, 0.5)
        self.weights = [1.0, 2.0]

    def forward(self, x):
        return self.coef[0] * self.net(x) + self.coef[1] * self.weights[1] * self.net(x).pow(2)


def test_compiled_steps_follow_tuple_and_list_attributes():
    model = Scaled()
    f, params = fg.functionalize(model)
    X = _X()
    loss = fg.losses.gradient_penalty(f)
    eager, compiled = fg.value_and_grad(loss), fg.value_and_grad(loss, compile=True)

    def same():
        assert_close(compiled(params, X)[0], eager(params, X)[0], rtol=1e-12, atol=1e-12)

    same()
    model.coef = (2.0, -1.0)  # replaced
    same()
    model.weights[1] = 7.0  # mutated in place
    same()


def test_compiled_step_follows_requires_grad_flips():
    model = mlp(3, 8, 1, seed=6)
    f, params = fg.functionalize(model)
    vg = fg.value_and_grad(fg.losses.gradient_penalty(f), compile=True)
    vg(params, _X())
    model[0].requires_grad_(False)
    with pytest.raises(ValueError, match=r"frozen \(requires_grad changed\) after functionalize"):
        vg(params, _X())


def _hooked():
    model = mlp(3, 8, 1, seed=5)
    model[1].register_forward_hook(lambda m, args, out: out * 1.5)
    return model


@pytest.mark.parametrize("make", [*LEGAL.values(), _hooked], ids=[*LEGAL.keys(), "forward hook"])
def test_the_traced_step_runs_what_the_module_runs(make):
    # compile=True traces module(x) itself (NOTE [traced steps]): shared children, tied
    # weights, an instance-level forward and hooks are in the graph as the module runs them.
    model = make()
    f, params = fg.functionalize(model)
    X = _X()
    loss = lambda p, X: fg.laplacian(f)(p, X).pow(2).mean()  # noqa: E731
    traced, eager = fg.value_and_grad(loss, compile=True)(params, X), fg.value_and_grad(loss)(params, X)
    assert_close(traced[0], eager[0], rtol=1e-12, atol=1e-12)
    for k in params:
        assert_close(traced[1][k], eager[1][k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make", [*LEGAL.values(), _hooked], ids=[*LEGAL.keys(), "forward hook"])
def test_no_path_changes_the_modules_parameters(make):
    # NOTE [shared submodules]: functional_call(tie_weights=True) used to leave a shared
    # module holding the swapped-in tensor instead of its Parameter.
    model = make()
    before = [(name, p) for name, p in model.named_parameters(remove_duplicate=False)]
    f, params = fg.functionalize(model)
    X = _X()
    f(params, X)
    fg.derivatives(f)(params, X)
    fg.value_and_grad(lambda p, X: fg.laplacian(f)(p, X).pow(2).mean(), compile=True)(params, X)
    after = [(name, p) for name, p in model.named_parameters(remove_duplicate=False)]
    assert [n for n, _ in after] == [n for n, _ in before]
    assert all(a is b and type(a) is nn.Parameter for (_, a), (_, b) in zip(after, before))


def _nested(model, X, index):
    """``d^n model / dx_index`` per sample by nested autograd on the module itself."""
    out = []
    for x in X:
        x = x.clone().requires_grad_()
        g = model(x[None])[0, 0]
        for i in index:
            g = torch.autograd.grad(g, x, create_graph=True)[0][i]
        out.append(g.detach())
    return torch.stack(out)


@pytest.mark.parametrize("make", [*LEGAL.values(), _hooked], ids=[*LEGAL.keys(), "forward hook"])
def test_higher_order_operators_run_what_the_module_runs(make):
    # NOTE [Taylor engine]: the operators trace module(x) as it runs
    model = make()
    f, params = fg.functionalize(model)
    X = _X(n=3)
    biharmonic = sum(_nested(model, X, (i, i, j, j)) for i in range(3) for j in range(3))
    assert_close(fg.biharmonic(f)(params, X), biharmonic, rtol=1e-9, atol=1e-9)
    assert_close(fg.partial_derivative(f, (0, 1, 2))(params, X), _nested(model, X, (0, 1, 2)), rtol=1e-9, atol=1e-10)
    got = fg.partials(f, {"u": (), "u_12": (1, 2)})(params, X)
    assert_close(got["u"], model(X)[:, 0], rtol=1e-12, atol=1e-12)
    assert_close(got["u_12"], _nested(model, X, (1, 2)), rtol=1e-9, atol=1e-10)
