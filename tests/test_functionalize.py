"""functionalize: a pure function equal to the module, with strict params."""

import pytest
import torch
from torch import nn

import functional_grads as fg
from helpers import assert_close, mlp


def test_equals_module_batched_and_single_sample():
    model = mlp(3, 5, 2)
    f, params = fg.functionalize(model)
    X = torch.randn(4, 3, dtype=torch.float64)
    assert_close(f(params, X), model(X))
    assert_close(f(params, X[0]), model(X[0]))
    assert set(params) == {name for name, _ in model.named_parameters()}
    assert not any(p.requires_grad for p in params.values())


def test_swapped_params_are_used():
    f, params = fg.functionalize(nn.Linear(2, 1))
    zeros = {k: torch.zeros_like(v) for k, v in params.items()}
    assert f(zeros, torch.ones(3, 2)).abs().sum() == 0


def test_params_share_storage_with_the_module():
    model = nn.Linear(2, 1)
    f, params = fg.functionalize(model)
    params["weight"].add_(1.0)
    assert torch.equal(model.weight.detach(), params["weight"])


def test_buffers_are_used_as_they_are():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)).eval()
    model[1].running_mean.fill_(5.0)
    f, params = fg.functionalize(model)
    X = torch.randn(4, 2)
    assert_close(f(params, X), model(X), rtol=1e-6, atol=1e-6)


def test_tied_weights_stay_tied():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(3, 3, bias=False)
            self.dec = nn.Linear(3, 3, bias=False)
            self.dec.weight = self.enc.weight

        def forward(self, x):
            return self.dec(torch.tanh(self.enc(x)))

    model = Tied()
    f, params = fg.functionalize(model)
    assert list(params) == ["enc.weight"]
    w = torch.randn(3, 3)
    X = torch.randn(2, 3)
    assert_close(f({"enc.weight": w}, X), torch.tanh(X @ w.T) @ w.T)


def test_wrong_params_name_the_key():
    f, params = fg.functionalize(nn.Linear(2, 1))
    X = torch.ones(3, 2)
    with pytest.raises(ValueError, match=r"missing: \['bias'\]"):
        f({"weight": params["weight"]}, X)
    with pytest.raises(ValueError, match=r"unexpected: \['extra'\]"):
        f({**params, "extra": torch.ones(1)}, X)
    with pytest.raises(ValueError, match=r"params\['weight'\] has shape \[1, 3\] but the module expects \[1, 2\]"):
        f({**params, "weight": torch.ones(1, 3)}, X)
    with pytest.raises(TypeError, match="params must be the dict"):
        f(list(params.values()), X)
    with pytest.raises(TypeError, match="expected an nn.Module"):
        fg.functionalize(lambda x: x)


def test_direct_forward_equals_functional_call():
    # NOTE [direct forward]: an nn.Sequential of Linear and parameter-free layers is
    # computed without functional_call; values and parameter gradients must not change.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Dropout(0.3), nn.Linear(5, 4, bias=False), nn.Softplus(),
                          nn.Linear(4, 1)).double().eval()
    f, params = fg.functionalize(model)
    assert f._direct_layers() is not None
    new = {k: torch.randn_like(v) for k, v in params.items()}
    X = torch.randn(7, 3, dtype=torch.float64)
    reference = lambda p, x: torch.func.functional_call(model, p, (x,))  # noqa: E731
    torch.testing.assert_close(f(new, X), reference(new, X), rtol=0, atol=0)
    loss = lambda g: lambda p, x: (fg.input_grad(g)(p, x) ** 2).sum() + g(p, x).sum()  # noqa: E731
    ours, ref = fg.value_and_grad(loss(f))(new, X), fg.value_and_grad(loss(reference))(new, X)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    per_sample = torch.func.vmap(f, in_dims=(None, 0))(new, X)  # a batch of one per sample
    torch.testing.assert_close(per_sample, reference(new, X), rtol=1e-12, atol=1e-12)


def test_direct_forward_runs_any_parameter_free_layer_as_the_module_does():
    class Square(nn.Module):  # a user's layer without parameters, with a buffer
        def __init__(self):
            super().__init__()
            self.register_buffer("scale", torch.tensor(0.5, dtype=torch.float64))

        def forward(self, x):
            return self.scale * x**2

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), Square(), nn.Sequential(nn.Tanh()), nn.Linear(4, 1)).double()
    f, params = fg.functionalize(model)
    assert f._direct_layers() is not None
    X = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(f(params, X), model(X), rtol=0, atol=0)
    model[1].scale.fill_(2.0)  # the buffer is read at call time
    torch.testing.assert_close(f(params, X), model(X), rtol=0, atol=0)
    nested = nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.Linear(4, 4)), nn.Linear(4, 1))
    assert fg.functionalize(nested)[0]._direct_layers() is None  # parameters below a layer: functional_call


def test_direct_forward_is_not_taken_where_the_module_might_differ():
    class MyLinear(nn.Linear):
        def forward(self, x):
            return super().forward(x) * 2

    assert fg.functionalize(nn.Sequential(MyLinear(2, 1)))[0]._direct_layers() is None
    assert fg.functionalize(nn.Sequential(nn.Conv1d(1, 1, 1)))[0]._direct_layers() is None
    hooked = nn.Sequential(nn.Linear(2, 1))
    hooked[0].register_forward_hook(lambda m, i, o: o * 3)
    f, params = fg.functionalize(hooked)
    assert f._direct_layers() is None
    X = torch.randn(4, 2)
    torch.testing.assert_close(f(params, X), hooked(X))
    seen = []
    watched = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    watched[1].register_full_backward_hook(lambda m, gi, go: seen.append(go[0].shape))
    f, params = fg.functionalize(watched)
    assert f._direct_layers() is None
    fg.value_and_grad(lambda p, x: f(p, x).sum())(params, X)
    assert seen == [torch.Size([4, 3])]  # the user's backward hook still fires
    whole = nn.Sequential(nn.Linear(2, 1))
    whole.register_full_backward_hook(lambda m, gi, go: seen.append("whole"))
    f, params = fg.functionalize(whole)
    assert f._direct_layers() is None
    with pytest.warns(UserWarning, match="Full backward hook is firing"):  # X does not require grad
        fg.value_and_grad(lambda p, x: f(p, x).sum())(params, X)
    assert seen[-1] == "whole"  # a hook on the Sequential itself too
