"""The composition that is the point: the outer gradient of a loss on input derivatives."""

import pytest
import torch
from hypothesis import given

import functional_grads as fg
from functional_grads.testing import check_grads
from helpers import assert_close, mlp, smooth_problems


@given(smooth_problems())
def test_gradient_matching_outer_gradient_matches_finite_differences(problem):
    f, params, X = problem
    S = torch.randn_like(X)
    loss = fg.losses.gradient_matching(f)
    # value_and_grad's gradient against central differences in every parameter ...
    _, grads = fg.value_and_grad(loss)(params, X, S)
    check_grads(lambda p: loss(p, X, S), (params,))
    u = {k: torch.randn_like(v) for k, v in params.items()}
    eps = 1e-6
    fd = (loss({k: v + eps * u[k] for k, v in params.items()}, X, S)
          - loss({k: v - eps * u[k] for k, v in params.items()}, X, S)) / (2 * eps)
    assert_close(sum((grads[k] * u[k]).sum() for k in params), fd, rtol=1e-5, atol=1e-7)
    # ... and the derivatives of that gradient (third order in the model) too.
    check_grads(loss, (params, X, S), order=2)


def test_gradient_matching_value_and_target_check():
    f, params = fg.functionalize(mlp(2, 4, 1))
    X = torch.randn(5, 2, dtype=torch.float64)
    S = torch.randn(5, 2, dtype=torch.float64)
    loss = fg.losses.gradient_matching(f)
    assert_close(loss(params, X, S), ((fg.input_grad(f)(params, X) - S) ** 2).mean())
    with pytest.raises(ValueError, match=r"gradient_matching: target_grads has shape \[5, 3\] .*X \[5, 2\]"):
        loss(params, X, torch.randn(5, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"target_grads has dtype torch.float32"):
        loss(params, X, S.float())


def test_relu_outer_gradient_reaches_weights_but_not_biases():
    # grad_x of a ReLU MLP is W1^T D1 W2^T D2 w3 with 0/1 masks D that are piecewise
    # constant in the biases, so every bias gets an exactly-zero gradient.
    f, params = fg.functionalize(mlp(2, 8, 2, act="relu"))
    X = torch.randn(20, 2, dtype=torch.float64)
    _, grads = fg.value_and_grad(fg.losses.gradient_matching(f))(params, X, torch.randn_like(X))
    for name, g in grads.items():
        if name.endswith("bias"):
            assert torch.count_nonzero(g) == 0, name
        else:
            assert torch.count_nonzero(g) > 0, name
