"""PINN loss terms as plain functions: an interior residual and boundary/initial values."""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor

from .. import _checks
from .._typing import PerSampleFn


def pde_residual(residual: Callable[..., Tensor], /) -> Callable[..., Tensor]:
    """``mean(residual(params, X, *data) ** 2)``, checking one residual per sample.

    ``residual`` is any function of the params and collocation points, typically built
    from :func:`functional_grads.derivatives` or :func:`functional_grads.laplacian`.

    Example:
      >>> lap = lambda p, X: 2 * p["w"] * torch.ones(X.shape[0])      # a stand-in residual
      >>> pde_residual(lap)({"w": torch.tensor(0.5)}, torch.zeros(3, 2))
      tensor(1.)
    """
    api = "pde_residual"
    _checks.check_callable(api, residual, "residual")

    def pde_residual_loss(params: Any, X: Tensor, *data: Any) -> Tensor:
        X = _checks.check_batch(api, (params, X), 1)
        r = _checks.check_per_sample(api, "residual", residual(params, X, *data), X.shape[0])
        return r.pow(2).mean()

    return pde_residual_loss


def dirichlet(f: PerSampleFn, /) -> Callable[..., Tensor]:
    """Boundary or initial values: ``mean((f(params, X) - target) ** 2)`` with ``target [B]``.

    Example:
      >>> f = lambda p, X: (p["w"] * X).sum(1)
      >>> dirichlet(f)({"w": torch.ones(2)}, torch.ones(3, 2), torch.zeros(3))
      tensor(4.)
    """
    api = "dirichlet"
    _checks.check_callable(api, f)

    def dirichlet_loss(params: Any, X: Tensor, target: Tensor) -> Tensor:
        X = _checks.check_batch(api, (params, X), 1)
        u = _checks.per_sample_scalar(api, "f(params, X)", f(params, X), X)
        return (u - _checks.per_sample_scalar(api, "target", target, X)).pow(2).mean()

    return dirichlet_loss
