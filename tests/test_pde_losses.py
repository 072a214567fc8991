"""pde_residual and dirichlet: values against hand formulas, data passed through, errors by message."""

from __future__ import annotations

import pytest
import torch

import functional_grads as fg

F64 = torch.float64


def test_dirichlet_is_the_mean_squared_error_to_the_target():
    f = lambda p, X: (p["w"] * X).sum(1)  # noqa: E731
    params, X = {"w": torch.tensor([1.0, -2.0], dtype=F64)}, torch.tensor([[1.0, 1.0], [2.0, 0.5]], dtype=F64)
    target = torch.tensor([0.5, 3.0], dtype=F64)  # f(X) = [-1, 1]
    assert fg.losses.dirichlet(f)(params, X, target).item() == ((-1 - 0.5) ** 2 + (1 - 3.0) ** 2) / 2
    assert fg.losses.dirichlet(f)(params, X, target[:, None]).item() == pytest.approx(3.125)  # [B, 1] targets


def test_pde_residual_passes_the_data_on():
    residual = lambda p, X, source, scale: scale * (p["a"] * X.sum(1) - source)  # noqa: E731
    params, X = {"a": torch.tensor(2.0, dtype=F64)}, torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=F64)
    value = fg.losses.pde_residual(residual)(params, X, torch.tensor([5.0, 1.0], dtype=F64), 3.0)
    assert value.item() == ((3 * (6 - 5)) ** 2 + (3 * (2 - 1)) ** 2) / 2


@pytest.mark.parametrize("make, exc, match", [
    (lambda: fg.losses.pde_residual(3), TypeError, r"^pde_residual: residual must be callable, got int\.$"),
    (lambda: fg.losses.dirichlet("f"), TypeError, r"^dirichlet: f must be callable, got str\.$"),
    (lambda: fg.losses.pde_residual(lambda p, X: X)({}, torch.tensor(1.0)), ValueError,
     r"^pde_residual: X \(argument 1\) needs a leading batch dimension"),
    (lambda: fg.losses.pde_residual(lambda p, X: X)({}, torch.ones(3, 2)), ValueError,
     r"^pde_residual: residual must return one loss per sample, shape \[3\], got \[3, 2\]"),
    (lambda: fg.losses.dirichlet(lambda p, X: X)({}, torch.ones(3, 2), torch.ones(3)), ValueError,
     r"^dirichlet: f\(params, X\) must hold one value per sample, shape \[3\] or \[3, 1\], got \[3, 2\]"),
    (lambda: fg.losses.dirichlet(lambda p, X: X.sum(1))({}, torch.ones(3, 2), torch.ones(2)), ValueError,
     r"^dirichlet: target must hold one value per sample"),
    (lambda: fg.losses.dirichlet(lambda p, X: X.sum(1))({}, torch.ones(3, 2, dtype=torch.long), torch.ones(3)), TypeError,
     r"^dirichlet: X \(argument 1\) must be floating point"),
])
def test_pde_loss_errors_name_the_api(make, exc, match):
    with pytest.raises(exc, match=match):
        make()
