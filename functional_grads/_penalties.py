"""Penalties on the size of input derivatives: gradient norms and Jacobian norms."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from . import _checks
from ._input_grad import input_grad
from ._losses import safe_norm
from ._operators import input_jacobian, output_shape
from ._per_sample import map_samples
from ._typing import PerSampleFn

_NORMS = (1, 2, math.inf)


def gradient_penalty(
    f: PerSampleFn, /, *, target: float = 0.0, one_sided: bool = False, norm: float = 2, randomness: str = "error"
) -> Callable[..., Tensor]:
    """Penalise the input-gradient norm: double backprop, WGAN-GP, R1.

    Args:
      f: ``f(params, x)`` with a scalar per-sample output (a critic, a regressor).
      target: the norm to pull towards: 0 for double backpropagation (Drucker & LeCun
        1992) and R1 on real data (Mescheder et al. 2018), 1 for WGAN-GP (Gulrajani et
        al. 2017, on :func:`interpolate` points).
      one_sided: penalise only norms above ``target``.
      norm: 1, 2 (default) or ``math.inf``.

    Returns:
      ``loss(params, X) -> []``, the mean over samples of ``(||grad_x f|| - target)**2``.
      Safe at a zero gradient: no NaN from the norm's derivative at 0.

    Example:
      >>> f = lambda p, x: (p["w"] * x).sum()
      >>> gradient_penalty(f, target=1.0)({"w": torch.tensor([3.0, 4.0])}, torch.zeros(2, 2))
      tensor(16.)
    """
    api = "gradient_penalty"
    if norm not in _NORMS:
        raise ValueError(f"{api}: norm must be 1, 2 or math.inf, got {norm!r}.")
    if not isinstance(target, (int, float)) or target < 0:
        raise ValueError(f"{api}: target must be a non-negative number, got {target!r}.")
    grad_x = input_grad(f, randomness=randomness)

    def gradient_penalty_loss(params: Any, X: Tensor) -> Tensor:
        g = grad_x(params, X).flatten(1)
        if norm == 2 and target == 0:
            return g.pow(2).sum(1).mean()  # ||g||^2 exactly, smooth everywhere
        size = safe_norm(g) if norm == 2 else torch.linalg.vector_norm(g, ord=norm, dim=1)
        excess = size - target
        return (excess.clamp_min(0) if one_sided else excess).pow(2).mean()

    return gradient_penalty_loss


def interpolate(x_real: Tensor, x_fake: Tensor, /, *, generator: torch.Generator | None = None) -> Tensor:
    """WGAN-GP's random interpolates ``t * x_real + (1 - t) * x_fake``, ``t ~ U[0, 1]`` per sample.

    Example:
      >>> interpolate(torch.zeros(4, 3), torch.ones(4, 3)).shape
      torch.Size([4, 3])
    """
    if not (isinstance(x_real, Tensor) and isinstance(x_fake, Tensor)):
        raise TypeError("interpolate: x_real and x_fake must be tensors.")
    if x_real.shape != x_fake.shape or x_real.dtype != x_fake.dtype:
        raise ValueError(
            f"interpolate: x_real {_checks.fmt(x_real.shape)} {x_real.dtype} and x_fake "
            f"{_checks.fmt(x_fake.shape)} {x_fake.dtype} must have the same shape and dtype."
        )
    t = x_real.new_empty((x_real.shape[0],) + (1,) * (x_real.ndim - 1)).uniform_(generator=generator)
    return t * x_real + (1 - t) * x_fake


def jacobian_penalty(
    f: PerSampleFn,
    /,
    *,
    method: str = "exact",
    num_projections: int = 1,
    generator: torch.Generator | None = None,
    randomness: str = "error",
) -> Callable[..., Tensor]:
    """Mean squared Frobenius norm of the per-sample input Jacobian.

    Args:
      f: ``f(params, x) -> out`` with any per-sample output shape.
      method: ``"exact"`` forms each Jacobian; ``"projection"`` is the unbiased estimator
        of Hoffman et al. 2019, ``n_out * E_v ||v^T J||^2`` with ``v`` uniform on the unit
        sphere, at the cost of one VJP per projection.
      num_projections: projections per sample (``"projection"`` only).
      generator: draws the projections (reproducible with a seeded generator). Under
        ``torch.compile`` a generator cannot be traced, so the step then runs eagerly
        (with a ``CompileFallbackWarning``); without one, the global RNG is used and it compiles.

    Returns:
      ``loss(params, X) -> []``, the mean over samples of ``||J_i||_F^2`` (an estimate of it).

    Example:
      >>> f = lambda p, x: p["A"] @ x
      >>> jacobian_penalty(f)({"A": torch.ones(2, 3)}, torch.zeros(4, 3))
      tensor(6.)
    """
    api = "jacobian_penalty"
    if method not in ("exact", "projection"):
        raise ValueError(f"{api}: method must be 'exact' or 'projection', got {method!r}.")
    if not isinstance(num_projections, int) or num_projections < 1:
        raise ValueError(f"{api}: num_projections must be a positive int, got {num_projections!r}.")
    if method == "exact":
        jac = input_jacobian(f, randomness=randomness)
        return lambda params, X: jac(params, X).flatten(1).pow(2).sum(1).mean()

    def one(params: Any, x: Tensor, v: Tensor) -> Tensor:
        _, vjp_fn = torch.func.vjp(lambda y: f(params, y), x)
        u = torch.func.vmap(lambda vi: vjp_fn(vi)[0])(v)  # [P, *x_shape]
        return u.pow(2).flatten(1).sum(1).mean() * v[0].numel()

    def jacobian_penalty_loss(params: Any, X: Tensor) -> Tensor:
        _checks.check_batch(api, (params, X), 1)
        shape = (X.shape[0], num_projections, *output_shape(f, (params, X), 1))
        # NOTE [random draws under compile]: torch.randn(shape) with a symbolic batch size
        # fails under grad in dynamo on torch 2.13; new_empty(...).normal_() traces. A
        # torch.Generator cannot be traced at all: with one, compile falls back to eager.
        v = X.new_empty(shape).normal_(generator=generator)
        v = v / v.flatten(2).norm(dim=2).reshape(*shape[:2], *[1] * (len(shape) - 2))
        return map_samples(api, one, (params, X, v), argnums=1, chunk_size=None,
                           randomness=randomness, also=(2,)).mean()

    return jacobian_penalty_loss
