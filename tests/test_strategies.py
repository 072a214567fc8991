"""Every way of computing the same derivative agrees with the reference (NOTE [batch-sum strategy])."""

import pytest
import torch
from hypothesis import given
from torch import nn

import functional_grads as fg
from helpers import assert_close, mlp, smooth_problems


@pytest.fixture
def strategy(monkeypatch):
    """Record which strategy input_grad takes: "vmap" or "batch-sum", one entry per call."""
    import functional_grads._input_grad as impl

    seen = []

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            seen.append(name)
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(impl, "map_samples", spy("vmap", impl.map_samples))
    monkeypatch.setattr(impl, "sum_grad", spy("batch-sum", impl.sum_grad))
    return seen


@given(smooth_problems())
def test_batch_sum_equals_vmap(problem):
    f, params, X = problem
    reference = fg.input_grad(lambda p, x: f(p, x))(params, X)  # a lambda: always vmap
    assert_close(fg.input_grad(f)(params, X), reference)
    values, grads = fg.value_and_input_grad(f)(params, X)
    assert_close(grads, reference)
    assert_close(values, f(params, X).squeeze(-1))


def test_batch_sum_is_used_only_where_samples_are_independent_by_construction(strategy):
    model = mlp(3, 4, 1)
    f, params = fg.functionalize(model)
    X = torch.randn(5, 3, dtype=torch.float64)
    fg.input_grad(f)(params, X)
    assert strategy == ["batch-sum"]  # one batched call
    strategy.clear()
    fg.input_grad(f, chunk_size=2)(params, X)  # chunking asks for vmap
    assert strategy == ["vmap"]

    class Custom(nn.Module):  # a custom forward might mix samples
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 1).double()

        def forward(self, x):
            return self.lin(x)

    custom = Custom()
    g, p = fg.functionalize(custom)
    strategy.clear()
    fg.input_grad(g)(p, X)
    assert strategy == ["vmap"]


def test_dropout_in_training_mode_disables_batch_sum(strategy):
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Dropout(0.5), nn.Linear(4, 1))
    f, params = fg.functionalize(model)
    with pytest.raises(ValueError, match="randomness"):
        fg.input_grad(f)(params, torch.randn(5, 3))
    model.eval()
    strategy.clear()
    fg.input_grad(f)(params, torch.randn(5, 3))
    assert strategy == ["batch-sum"]


def test_non_scalar_output_error_in_batch_sum_path():
    f, params = fg.functionalize(mlp(2, 4, 1, d_out=3))
    with pytest.raises(ValueError, match=r"per-sample output has shape \[3\].*input_jacobian"):
        fg.value_and_input_grad(f)(params, torch.randn(5, 2, dtype=torch.float64))


class MixingLinear(nn.Linear):
    """A Linear subclass whose forward mixes the samples of a batch."""

    def forward(self, x):
        return super().forward(x - x.mean(0) if x.ndim == 2 and x.shape[0] > 1 else x)


def _mixing_hook(module, args, out):
    return out - out.mean(0) if out.ndim == 2 and out.shape[0] > 1 else out


@pytest.mark.parametrize("how", ["subclass", "hook", "global hook"])
def test_models_that_may_mix_samples_take_the_per_sample_path(how, strategy):
    torch.manual_seed(0)
    first = MixingLinear(3, 4) if how == "subclass" else nn.Linear(3, 4)
    model = nn.Sequential(first, nn.Tanh(), nn.Linear(4, 1)).double()
    handle = None
    if how == "hook":
        first.register_forward_hook(_mixing_hook)
    elif how == "global hook":
        handle = nn.modules.module.register_module_forward_hook(_mixing_hook)
    try:
        f, params = fg.functionalize(model)
        X = torch.randn(5, 3, dtype=torch.float64)
        got = fg.input_grad(f)(params, X)
        # per sample, the batch is one sample: the mixing is a no-op, so the gradient is
        # the plain network's; a batched pass would have subtracted the batch mean.
        plain = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
        plain.load_state_dict(model.state_dict())
        pf, pp = fg.functionalize(plain)
        assert_close(got, fg.input_grad(lambda p, x: pf(p, x))(pp, X))
        assert strategy[-2:] == ["vmap", "vmap"]
    finally:
        if handle is not None:
            handle.remove()
