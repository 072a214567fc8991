"""Penalties on the size of input derivatives: gradient norms and Jacobian norms."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from .. import _checks, _random
from .._input_grad import input_grad
from .._checks import norm_name
from .._numerics import vector_norm
from .._per_sample import check_in_dims, map_samples, output_shape, split_conditions
from .._typing import InDims, JacobianPenaltyMethod, Norm, PerSampleFn, Randomness, choices
from ..operators import input_jacobian


def gradient_penalty(
    f: PerSampleFn,
    /,
    *,
    target: float = 0.0,
    one_sided: bool = False,
    norm: Norm = "l2",
    in_dims: InDims = None,
    chunk_size: int | None = None,
    randomness: Randomness = "error",
) -> Callable[..., Tensor]:
    """Penalise the input-gradient norm: double backprop, WGAN-GP, R1.

    Args:
      f: ``f(params, x)`` with a scalar per-sample output (a critic, a regressor).
      target: the norm to pull towards: 0 for double backpropagation (Drucker & LeCun
        1992) and R1 on real data (Mescheder et al. 2018), 1 for WGAN-GP (Gulrajani et
        al. 2017, on :func:`interpolate` points).
      one_sided: penalise only norms above ``target``.
      norm: ``"l2"`` (default), ``"l1"`` or ``"linf"``.
      in_dims: f's arguments as in :func:`functional_grads.input_grad`; with
        ``(None, 0, 0, ...)`` the loss takes per-sample conditioning arguments after ``X``
        and passes them on to ``f`` (NOTE [conditional losses]).
      chunk_size, randomness: as in :func:`functional_grads.input_grad`.

    Returns:
      ``loss(params, X, *conditions) -> []``, the mean over samples of
      ``(||grad_x f(x, *conditions)|| - target)**2`` (WGAN-GP/R1 on a conditional critic
      ``D(x, y)``: ``in_dims=(None, 0, 0)``, ``loss(params, X, Y)``).
      Safe at a zero gradient: no NaN from the norm's derivative at 0.

    Example:
      >>> f = lambda p, x: (p["w"] * x).sum()
      >>> gradient_penalty(f, target=1.0)({"w": torch.tensor([3.0, 4.0])}, torch.zeros(2, 2))
      tensor(16.)
    """
    api = "gradient_penalty"
    norm = norm_name(api, norm)
    _checks.check_number(api, "target", target)
    grad_x = input_grad(f, in_dims=in_dims, chunk_size=chunk_size, randomness=randomness)

    def gradient_penalty_loss(params: Any, X: Tensor, *rest: Any) -> Tensor:
        conditions, _ = split_conditions(api, in_dims, rest, ())
        g = grad_x(params, X, *conditions).flatten(1)
        if norm == "l2" and target == 0:
            return g.pow(2).sum(1).mean()  # ||g||^2 exactly, smooth everywhere
        excess = vector_norm(g, norm) - target
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
    if not x_real.is_floating_point():
        raise TypeError(f"interpolate: x_real and x_fake must be floating point, got {x_real.dtype}; convert with .float().")
    if x_real.shape != x_fake.shape or x_real.dtype != x_fake.dtype:
        raise ValueError(
            f"interpolate: x_real {_checks.fmt(x_real.shape)} {x_real.dtype} and x_fake "
            f"{_checks.fmt(x_fake.shape)} {x_fake.dtype} must have the same shape and dtype."
        )
    t = _random.uniform(x_real, (x_real.shape[0],) + (1,) * (x_real.ndim - 1), 0.0, 1.0, generator)
    return t * x_real + (1 - t) * x_fake


def jacobian_penalty(
    f: PerSampleFn,
    /,
    *,
    method: JacobianPenaltyMethod = "jacobian",
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    in_dims: InDims = None,
    chunk_size: int | None = None,
    randomness: Randomness = "error",
    num_projections: int | None = None,
) -> Callable[..., Tensor]:
    """Mean squared Frobenius norm of the per-sample input Jacobian.

    Args:
      f: ``f(params, x) -> out`` with any per-sample output shape.
      method: ``"jacobian"`` forms each Jacobian; ``"hutchinson"`` is the unbiased
        estimator of Hoffman et al. 2019, ``n_out * E_v ||v^T J||^2`` with ``v`` uniform on
        the unit sphere, at the cost of one VJP per projection. (``"exact"`` and
        ``"projection"``, the former names, are deprecated.)
      num_samples: projections per sample (``"hutchinson"`` only; ``num_projections`` is
        its deprecated former name).
      generator: draws the projections (reproducible with a seeded generator). Under
        ``torch.compile`` a generator cannot be traced, so the step then runs eagerly
        (with a ``CompileFallbackWarning``); without one, the global RNG is used and it compiles.
      in_dims, chunk_size, randomness: as in :func:`gradient_penalty`.

    Returns:
      ``loss(params, X, *conditions) -> []``, the mean over samples of ``||J_i||_F^2`` (an
      estimate of it).

    Example:
      >>> f = lambda p, x: p["A"] @ x
      >>> jacobian_penalty(f)({"A": torch.ones(2, 3)}, torch.zeros(4, 3))
      tensor(6.)
    """
    api = "jacobian_penalty"
    method = _checks.renamed_choice(api, "method", method, {"exact": "jacobian", "projection": "hutchinson"})
    _checks.check_choice(api, "method", method, choices(JacobianPenaltyMethod))
    num_samples = _checks.renamed(api, "num_samples", num_samples, "num_projections", num_projections)
    _checks.check_number(api, "num_samples", num_samples, low=1, integer=True)
    check_in_dims(api, in_dims, 1)
    jac = input_jacobian(f, in_dims=in_dims, chunk_size=chunk_size, randomness=randomness)
    shape_of = output_shape(api, f, in_dims=in_dims)

    def one(params: Any, x: Tensor, *c_and_v: Any) -> Tensor:
        *conditions, v = c_and_v
        _, vjp_fn = torch.func.vjp(lambda y: f(params, y, *conditions), x)  # type: ignore[misc]
        u = torch.func.vmap(lambda vi: vjp_fn(vi)[0])(v)  # [P, *x_shape]; no forward runs here
        return u.pow(2).flatten(1).sum(1).mean()

    def jacobian_penalty_loss(params: Any, X: Tensor, *rest: Any) -> Tensor:
        conditions, _ = split_conditions(api, in_dims, rest, ())
        if method == "jacobian":
            return jac(params, X, *conditions).flatten(1).pow(2).sum(1).mean()
        _checks.check_batch(api, (params, X), 1)
        out_shape = shape_of(params, X, *conditions)
        # Uniform on the sphere of radius sqrt(n_out): E[v v^T] = I, so E||v^T J||^2 = ||J||_F^2.
        v = _random.probes(X, (X.shape[0], num_samples, *out_shape), "sphere",
                           event_dims=len(out_shape), generator=generator)
        return map_samples(api, one, (params, X, *conditions), argnums=1, chunk_size=chunk_size,
                           randomness=randomness, in_dims=in_dims, extra=(v,)).mean()

    return jacobian_penalty_loss
