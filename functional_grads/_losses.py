"""Losses that fit or align per-sample input gradients."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from . import _checks
from ._input_grad import input_grad, value_and_input_grad
from ._typing import PerSampleFn


def gradient_matching(
    f: PerSampleFn, /, *, chunk_size: int | None = None, randomness: str = "error"
) -> Callable[..., Tensor]:
    """Fit ``grad_x f`` to sampled gradients (seed 002; Sobolev training without values).

    Args:
      f: ``f(params, x)`` with a scalar per-sample output.
      chunk_size, randomness: as in :func:`functional_grads.input_grad`.

    Returns:
      ``loss(params, X [B, *x_shape], target_grads [B, *x_shape]) -> []``, the mean over
      all elements of ``(grad_x f(params, X) - target_grads) ** 2``.

    Example:
      >>> f = lambda p, x: (p["w"] * x).sum()
      >>> loss = gradient_matching(f)
      >>> loss({"w": torch.ones(2)}, torch.zeros(3, 2), torch.zeros(3, 2))
      tensor(1.)
    """
    api = "gradient_matching"
    grad_x = input_grad(f, chunk_size=chunk_size, randomness=randomness)

    def gradient_matching_loss(params: Any, X: Tensor, target_grads: Tensor) -> Tensor:
        check_like(api, "target_grads", target_grads, X, "X")
        return ((grad_x(params, X) - target_grads) ** 2).mean()

    return gradient_matching_loss


def sobolev(
    f: PerSampleFn,
    /,
    *,
    value_weight: float = 1.0,
    grad_weight: float = 1.0,
    chunk_size: int | None = None,
    randomness: str = "error",
) -> Callable[..., Tensor]:
    """Sobolev training (Czarnecki et al. 2017): fit values and input gradients together.

    Returns:
      ``loss(params, X [B, *x_shape], Y [B], dY [B, *x_shape]) -> []`` =
      ``value_weight * mean((f - Y)**2) + grad_weight * mean((grad_x f - dY)**2)``.
      Force matching is ``dY = -forces`` for an energy ``f``.

    Example:
      >>> f = lambda p, x: (p["w"] * x).sum()
      >>> sobolev(f)({"w": torch.ones(2)}, torch.ones(3, 2), torch.zeros(3), torch.ones(3, 2))
      tensor(4.)
    """
    api = "sobolev"
    vg = value_and_input_grad(f, chunk_size=chunk_size, randomness=randomness)

    def sobolev_loss(params: Any, X: Tensor, Y: Tensor, dY: Tensor) -> Tensor:
        check_like(api, "dY", dY, X, "X")
        Y = per_sample_scalar(api, "Y", Y, X)
        values, grads = vg(params, X)
        return value_weight * ((values - Y) ** 2).mean() + grad_weight * ((grads - dY) ** 2).mean()

    return sobolev_loss


def gradient_alignment(
    f: PerSampleFn, /, *, mask: Tensor | None = None, randomness: str = "error"
) -> Callable[..., Tensor]:
    """Align ``grad_x f`` with target directions, or keep it out of a mask.

    Args:
      f: ``f(params, x)`` with a scalar per-sample output.
      mask: optional tensor broadcastable to ``[B, *x_shape]`` (1 where the input must
        not matter). Adds the "right for the right reasons" penalty (Ross et al. 2017),
        the mean over samples of ``sum((mask * grad_x f) ** 2)``.

    Returns:
      ``loss(params, X, directions=None) -> []``: the mean over samples of
      ``1 - cos(grad_x f, direction)`` (0 when aligned; 1 at a zero gradient), plus the
      mask penalty when a mask is given. ``directions`` may be None only with a mask.

    Example:
      >>> f = lambda p, x: (p["w"] * x).sum()
      >>> orthogonal = torch.tensor([[1.0, -1.0]])  # cos = 0
      >>> gradient_alignment(f)({"w": torch.ones(2)}, torch.zeros(1, 2), orthogonal)
      tensor(1.)
    """
    api = "gradient_alignment"
    if mask is not None and not isinstance(mask, Tensor):
        raise TypeError(f"{api}: mask must be a tensor broadcastable to [B, *x_shape], got {type(mask).__name__}.")
    grad_x = input_grad(f, randomness=randomness)

    def gradient_alignment_loss(params: Any, X: Tensor, directions: Tensor | None = None) -> Tensor:
        if directions is None and mask is None:
            raise TypeError(f"{api}: pass directions [B, *x_shape] (or build the loss with a mask).")
        g = grad_x(params, X)
        loss = g.new_zeros(())
        if directions is not None:
            check_like(api, "directions", directions, X, "X")
            gf, df = g.flatten(1), directions.flatten(1)
            # Each norm clamped at 1e-8, as F.cosine_similarity does: cos = 0 at a zero gradient.
            cos = (gf * df).sum(1) / (safe_norm(gf).clamp_min(1e-8) * safe_norm(df).clamp_min(1e-8))
            loss = loss + (1 - cos).mean()
        if mask is not None:
            loss = loss + (mask * g).pow(2).flatten(1).sum(1).mean()
        return loss

    return gradient_alignment_loss


def safe_norm(v: Tensor) -> Tensor:
    """Row-wise L2 norm ``[B, N] -> [B]`` with a zero (not NaN) derivative at ``v = 0``."""
    sq = (v * v).sum(-1)
    positive = sq > 0
    # NOTE [safe norm]: sqrt'(0) is infinite and times 0 gives NaN; evaluating sqrt at 1
    # where the norm is 0, then masking, keeps the value exact and the gradient finite.
    return torch.where(positive, torch.where(positive, sq, 1.0).sqrt(), 0.0)


def check_like(api: str, name: str, t: Any, ref: Tensor, ref_name: str) -> None:
    """Raise unless ``t`` is a tensor with the shape and dtype of ``ref``."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{api}: {name} must be a tensor, got {type(t).__name__}.")
    if t.shape != ref.shape:
        raise ValueError(
            f"{api}: {name} has shape {_checks.fmt(t.shape)} but must be shaped like "
            f"{ref_name} {_checks.fmt(ref.shape)} (one per sample and input element)."
        )
    if t.dtype != ref.dtype:
        raise TypeError(
            f"{api}: {name} has dtype {t.dtype} but {ref_name} is {ref.dtype}; cast with "
            f"{name}.to({ref.dtype})."
        )


def per_sample_scalar(api: str, name: str, t: Any, X: Tensor) -> Tensor:
    """Accept ``[B]`` or ``[B, 1]`` targets for a scalar-per-sample output; return ``[B]``."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{api}: {name} must be a tensor [B], got {type(t).__name__}.")
    if t.shape not in ((X.shape[0],), (X.shape[0], 1)):
        raise ValueError(
            f"{api}: {name} must hold one value per sample, shape [{X.shape[0]}] or "
            f"[{X.shape[0]}, 1], got {_checks.fmt(t.shape)}."
        )
    return t.reshape(X.shape[0])
