"""Every way of computing the same derivative agrees with the reference (NOTE [batch-sum strategy])."""

import pytest
import torch
from hypothesis import given
from torch import nn

import functional_grads as fg
from helpers import assert_close, mlp, smooth_problems


def _input_ndims(model):
    """Record the ndim of every input the model's first layer sees."""
    seen = []
    model[0].register_forward_hook(lambda m, args, out: seen.append(args[0].ndim))
    return seen


@given(smooth_problems())
def test_batch_sum_equals_vmap(problem):
    f, params, X = problem
    reference = fg.input_grad(lambda p, x: f(p, x))(params, X)  # a lambda: always vmap
    assert_close(fg.input_grad(f)(params, X), reference)
    values, grads = fg.value_and_input_grad(f)(params, X)
    assert_close(grads, reference)
    assert_close(values, f(params, X).squeeze(-1))


def test_batch_sum_is_used_only_where_samples_are_independent_by_construction():
    model = mlp(3, 4, 1)
    f, params = fg.functionalize(model)
    X = torch.randn(5, 3, dtype=torch.float64)
    seen = _input_ndims(model)
    fg.input_grad(f)(params, X)
    assert seen == [2]  # one batched call: [B, D]
    seen.clear()
    fg.input_grad(f, chunk_size=2)(params, X)  # chunking asks for vmap
    assert seen and all(n == 1 for n in seen)  # per-sample calls: [D]

    class Custom(nn.Module):  # a custom forward might mix samples
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 1).double()

        def forward(self, x):
            return self.lin(x)

    custom = Custom()
    g, p = fg.functionalize(custom)
    calls = []
    custom.lin.register_forward_hook(lambda m, args, out: calls.append(args[0].ndim))
    fg.input_grad(g)(p, X)
    assert calls == [1]


def test_dropout_in_training_mode_disables_batch_sum():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Dropout(0.5), nn.Linear(4, 1))
    f, params = fg.functionalize(model)
    with pytest.raises(ValueError, match="randomness"):
        fg.input_grad(f)(params, torch.randn(5, 3))
    model.eval()
    seen = _input_ndims(model)
    fg.input_grad(f)(params, torch.randn(5, 3))
    assert seen == [2]


def test_non_scalar_output_error_in_batch_sum_path():
    f, params = fg.functionalize(mlp(2, 4, 1, d_out=3))
    with pytest.raises(ValueError, match=r"per-sample output has shape \[3\].*input_jacobian"):
        fg.value_and_input_grad(f)(params, torch.randn(5, 2, dtype=torch.float64))
