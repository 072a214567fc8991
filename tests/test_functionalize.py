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
