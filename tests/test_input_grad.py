"""input_grad and value_and_input_grad: finite differences, per-sample semantics, errors."""

import pytest
import torch
from hypothesis import given
from torch import nn

import functional_grads as fg
from functional_grads.testing import check_grads
from helpers import assert_close, fd_along, mlp, smooth_problems


@given(smooth_problems())
def test_input_grad_matches_finite_differences(problem):
    f, params, X = problem
    V = torch.randn_like(X)
    g = fg.input_grad(f)(params, X)
    assert g.shape == X.shape
    assert_close((g * V).sum(-1), fd_along(f, params, X, V).squeeze(-1))


@given(smooth_problems())
def test_input_grad_second_order_mixed(problem):
    # d/dparams (and d/dX) of the input gradient, and the derivatives of its VJP.
    f, params, X = problem
    check_grads(fg.input_grad(f), (params, X), order=2)


@given(smooth_problems())
def test_value_and_input_grad(problem):
    f, params, X = problem
    values, grads = fg.value_and_input_grad(f)(params, X)
    assert_close(values, f(params, X).squeeze(-1))
    assert_close(grads, fg.input_grad(f)(params, X))
    check_grads(lambda p, x: fg.value_and_input_grad(f)(p, x), (params, X), order=2)


def test_per_sample_equals_loop_over_samples():
    f, params = fg.functionalize(mlp(3, 6, 2))
    X = torch.randn(7, 3, dtype=torch.float64)
    batched = fg.input_grad(f)(params, X)
    for i in range(len(X)):
        x = X[i].clone().requires_grad_()
        (g,) = torch.autograd.grad(f(params, x).sum(), x)
        assert_close(batched[i], g)


def test_scalar_output_of_shape_empty_and_has_aux_and_chunks():
    f, params = fg.functionalize(mlp(2, 4, 1))
    X = torch.randn(6, 2, dtype=torch.float64)
    scalar_f = lambda p, x: f(p, x).squeeze(-1)  # noqa: E731  [2] -> []
    aux_f = lambda p, x: (f(p, x), x.sum())  # noqa: E731
    g = fg.input_grad(f)(params, X)
    assert_close(fg.input_grad(scalar_f)(params, X), g)
    assert_close(fg.input_grad(f, chunk_size=4)(params, X), g)
    g_aux, aux = fg.input_grad(aux_f, has_aux=True)(params, X)
    assert_close(g_aux, g)
    assert_close(aux, X.sum(-1))
    (values, aux), grads = fg.value_and_input_grad(aux_f, has_aux=True)(params, X)
    assert values.shape == (6,) and aux.shape == (6,)


def test_argnums_selects_the_batched_input():
    f = lambda x, p: (p["w"] * x.sin()).sum()  # noqa: E731
    params = {"w": torch.randn(3, dtype=torch.float64)}
    X = torch.randn(4, 3, dtype=torch.float64)
    assert_close(fg.input_grad(f, argnums=0)(X, params), params["w"] * X.cos())


def test_non_scalar_output_is_refused_with_a_pointer_to_input_jacobian():
    f, params = fg.functionalize(mlp(2, 4, 1, d_out=3))
    with pytest.raises(ValueError, match=r"input_grad: .*shape \[3\].*input_jacobian"):
        fg.input_grad(f)(params, torch.randn(5, 2, dtype=torch.float64))


def test_bad_inputs_are_refused():
    f, params = fg.functionalize(mlp(2, 4, 1))
    with pytest.raises(TypeError, match=r"input_grad: X .*torch.int64.*X.float\(\)"):
        fg.input_grad(f)(params, torch.ones(5, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"input_grad: X .*bool"):
        fg.input_grad(f)(params, torch.ones(5, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"X .*torch.float32 but .*torch.float64.*X.to\(torch.float64\)"):
        fg.input_grad(f)(params, torch.ones(5, 2))
    with pytest.raises(ValueError, match="leading batch dimension"):
        fg.input_grad(f)(params, torch.tensor(1.0, dtype=torch.float64))
    with pytest.raises(TypeError, match="must be a tensor"):
        fg.input_grad(f)(params, [[1.0, 2.0]])
    with pytest.raises(TypeError, match="argnums"):
        fg.input_grad(f, argnums=-1)
    with pytest.raises(ValueError, match="randomness"):
        fg.input_grad(f, randomness="sometimes")
    with pytest.raises(TypeError, match="callable"):
        fg.input_grad(3)
    with pytest.raises(TypeError, match=r"has_aux=True.*pair"):
        fg.input_grad(f, has_aux=True)(params, torch.ones(5, 2, dtype=torch.float64))


def test_batchnorm_in_training_mode_is_refused():
    model = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1))
    f, params = fg.functionalize(model)
    X = torch.randn(5, 2)
    with pytest.raises(ValueError, match=r"'1' \(BatchNorm1d\) is in training mode.*eval\(\).*LayerNorm"):
        fg.input_grad(f)(params, X)
    model.eval()
    # BatchNorm1d needs a batch dimension even in eval mode: give each sample one.
    per_sample_f = lambda p, x: f(p, x[None])[0]  # noqa: E731
    assert fg.input_grad(per_sample_f)(params, X).shape == X.shape


def test_dropout_needs_a_randomness_choice():
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 1))
    f, params = fg.functionalize(model)
    X = torch.randn(5, 2)
    with pytest.raises(ValueError, match=r"Dropout.*randomness='different'"):
        fg.input_grad(f)(params, X)
    assert fg.input_grad(f, randomness="different")(params, X).shape == X.shape
    same = fg.input_grad(f, randomness="same")(params, X.new_zeros(5, 2))
    assert_close(same, same[:1].expand_as(same))  # one mask shared by the batch
    # A plain function calling dropout gets the same advice.
    g = lambda p, x: torch.nn.functional.dropout(x, 0.5).sum() * p  # noqa: E731
    with pytest.raises(ValueError, match="randomness='different'"):
        fg.input_grad(g)(torch.tensor(1.0), X)
