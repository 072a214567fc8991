"""f(params, x) is module(x) on every path: what makes the direct forward step aside (hooks
anywhere, a replaced call, extra arguments), what the batch of one passes on, which layers the
batched backward trusts, and tied weights with frozen ones; plus the per-thread context."""

import threading

import pytest
import torch
from torch import nn
from torch.nn.modules import module as nn_module

import functional_grads as fg
from functional_grads import _context
from helpers import mlp

F64 = torch.float64
X = torch.linspace(-1, 1, 15, dtype=F64).reshape(5, 3)


def _per_sample_grads(module, X):
    """Each sample's input gradient, one plain forward and backward per sample."""
    rows = []
    for x in X:
        x = x[None].clone().requires_grad_()
        rows.append(torch.autograd.grad(module(x).sum(), x)[0][0])
    return torch.stack(rows)


class Mix(nn.Module):
    """Multiplies by the batch sum: mixes samples, so it is not a per-sample layer."""

    def forward(self, x):
        return x * x.sum(0, keepdim=True)


def test_a_sequential_holding_a_layer_that_mixes_samples_is_mapped_per_sample():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), Mix(), nn.Linear(4, 1)).double()
    f, params = fg.functionalize(model)
    torch.testing.assert_close(fg.input_grad(f)(params, X), _per_sample_grads(model, X))


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
@pytest.mark.parametrize("where", ["global_pre", "pre_hook", "call_impl", "forward"])
def test_what_a_plain_call_would_run_is_run(where, nested):
    # flat: the direct forward must step aside; nested: the batched backward must too
    model = (nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.Tanh(), nn.Linear(4, 1))) if nested
             else nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))).double()
    inner, before = model[-1][-1] if nested else model[-1], model(X)
    scale = lambda module, args: (2 * args[0],)  # noqa: E731
    handle = None
    if where == "global_pre":
        handle = nn_module.register_module_forward_pre_hook(scale)
    elif where == "pre_hook":
        handle = inner.register_forward_pre_hook(scale)
    elif where == "call_impl":  # accelerate-style: the instance's call replaced
        inner._call_impl = lambda x: nn.Linear.forward(inner, 2 * x)
    else:
        inner.forward = lambda x: nn.Linear.forward(inner, 2 * x)
    try:
        f, params = fg.functionalize(model)
        torch.testing.assert_close(f(params, X), model(X))
        torch.testing.assert_close(fg.input_grad(f)(params, X), _per_sample_grads(model, X))
        assert not torch.allclose(model(X), before)  # the change is visible
    finally:
        if handle is not None:
            handle.remove()


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_a_global_backward_pre_hook_sees_the_layers_as_with_the_module():
    calls = []
    handle = nn_module.register_module_full_backward_pre_hook(lambda module, grad: calls.append(type(module).__name__))
    try:
        model = mlp(3, 4, 1)
        f, params = fg.functionalize(model)
        p = {k: v.clone().requires_grad_() for k, v in params.items()}
        f(p, X).sum().backward()
        via_f, calls[:] = list(calls), []
        model(X).sum().backward()
        assert via_f == calls and via_f
    finally:
        handle.remove()


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x, c=None, m=None, *, scale=1.0):
        out = self.lin(x) * scale
        if c is not None:
            out = out * c.sum(0)  # a shared [3] condition sums to a number; given [1, 3] it would not
        if m is not None:
            out = out * m  # a mapped [B, 1] condition reaches forward as [1, 1] per sample
        return out, out.sum()


def test_keyword_arguments_and_a_scalar_output_leaf_are_passed_on():
    model = Scaled().double()
    f, params = fg.functionalize(model)
    out, total = f(params, X, scale=3.0)
    torch.testing.assert_close(out, model(X, scale=3.0)[0])
    grads = fg.input_grad(lambda p, x: f(p, x, scale=3.0)[1])(params, X)  # [] per sample, kept as it is
    torch.testing.assert_close(grads, _per_sample_grads(lambda x: model(x, scale=3.0)[1], X))


def test_a_shared_condition_is_not_given_a_batch_dimension():
    model = Scaled().double()
    f, params = fg.functionalize(model)
    c = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    grads = fg.input_grad(lambda p, x, c: f(p, x, c)[1], in_dims=(None, 0, None))(params, X, c)
    torch.testing.assert_close(grads, _per_sample_grads(lambda x: model(x, c)[1], X))


def test_beside_a_mapped_condition_a_shared_one_keeps_its_shape():
    model = Scaled().double()
    f, params = fg.functionalize(model)
    c, m = torch.tensor([0.5, -1.0, 2.0], dtype=F64), torch.linspace(1, 2, 5, dtype=F64)[:, None]
    grads = fg.input_grad(lambda p, x, c, m: f(p, x, c, m)[1], in_dims=(None, 0, None, 0))(params, X, c, m)
    want = torch.stack([_per_sample_grads(lambda x: model(x, c, mi[None])[1], xi[None])[0] for xi, mi in zip(X, m)])
    torch.testing.assert_close(grads, want)


def test_the_output_shape_is_learnt_per_input_shape_and_condition():
    # For f = w * x * c with c = 1 the Jacobian is w I, so a Hutchinson Jacobian penalty with
    # probes on the sphere of radius sqrt(n) is exactly w^2 n, whatever the draws: the probes
    # must be shaped like f's per-sample output, learnt again for each input shape.
    w = torch.tensor(1.5, dtype=F64)
    loss = fg.losses.jacobian_penalty(lambda p, x, c: p * x * c, method="hutchinson", num_samples=3,
                                      in_dims=(None, 0, 0))
    for n in (3, 4):
        X = torch.linspace(-1, 1, 5 * n, dtype=F64).reshape(5, n)
        torch.testing.assert_close(loss(w, X, torch.ones_like(X)), w**2 * n)


def test_eager_input_grads_carry_a_graph_only_when_one_is_needed():
    f, params = fg.functionalize(mlp(3, 4, 1))
    assert not fg.input_grad(f)(params, X).requires_grad
    leaf = {k: v.clone().requires_grad_() for k, v in params.items()}
    assert fg.input_grad(f)(leaf, X).requires_grad


def test_a_sequential_refuses_arguments_as_its_module_does():
    f, params = fg.functionalize(mlp(3, 4, 1))
    with pytest.raises(TypeError):
        mlp(3, 4, 1)(X, scale=2.0)
    with pytest.raises(TypeError):
        f(params, X, scale=2.0)


class Deep(nn.Module):
    """Weights tied two levels down, and a frozen layer beside them."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
        self.dec = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Tanh())
        self.dec[0].weight = self.enc[0].weight
        self.frozen = nn.Linear(3, 1).requires_grad_(False)

    def forward(self, x):
        return self.frozen(self.dec(self.enc(x)))


def test_deeply_tied_weights_beside_a_frozen_layer():
    model = Deep().double()
    f, params = fg.functionalize(model)
    assert sorted(params) == ["enc.0.bias", "enc.0.weight"]
    torch.testing.assert_close(f(params, X), model(X))
    torch.testing.assert_close(fg.input_grad(f)(params, X), _per_sample_grads(model, X))
    moved = {k: v + 0.1 for k, v in params.items()}
    fg.load_params(model, moved)
    torch.testing.assert_close(f(moved, X), model(X))
    assert model.dec[0].weight is model.enc[0].weight


def test_another_thread_starts_outside_every_transform_and_trace():
    f, params = fg.functionalize(mlp(3, 4, 1))
    seen, errors = [], []

    def worker():
        try:
            seen.append(_context.compiling())
            seen.append(fg.input_jacobian(f)(params, X))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    with _context.tracing():  # this thread traces; the other does not
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    assert errors == [] and seen[0] is False
    torch.testing.assert_close(seen[1], fg.input_jacobian(f)(params, X))
