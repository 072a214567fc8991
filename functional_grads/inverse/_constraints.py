"""Projections (feasible sets) and regularisers for optimising inputs."""

from __future__ import annotations

from typing import Callable

import math

import torch
from torch import Tensor

from .. import _checks
from .._numerics import project_ball, safe_norm

Projection = Callable[[Tensor], Tensor]
Regularizer = Callable[[Tensor], Tensor]


def box(clip_min: float | Tensor | None = None, clip_max: float | Tensor | None = None) -> Projection:
    """Clip every element into ``[clip_min, clip_max]`` (e.g. 0 and 1 for images).

    Example:
      >>> box(0.0, 1.0)(torch.tensor([[-1.0, 0.5, 2.0]]))
      tensor([[0.0000, 0.5000, 1.0000]])
    """
    if clip_min is None and clip_max is None:
        raise ValueError("box: give clip_min, clip_max or both.")
    if isinstance(clip_min, (int, float)) and isinstance(clip_max, (int, float)) and clip_min > clip_max:
        raise ValueError(f"box: clip_min ({clip_min}) must not exceed clip_max ({clip_max}): the box would be empty.")
    for name, v in (("clip_min", clip_min), ("clip_max", clip_max)):
        if not isinstance(v, Tensor):
            _checks.check_number("box", name, v, low=-math.inf, optional=True)
    return lambda x: torch.clamp(x, clip_min, clip_max)  # type: ignore[arg-type]  # floats are fine


def linf_ball(center: Tensor, radius: float) -> Projection:
    """Project onto ``{x : max |x - center| <= radius}`` (per sample; ``center [B, ...]``).

    Example:
      >>> linf_ball(torch.zeros(1, 2), 0.5)(torch.tensor([[1.0, -0.2]]))
      tensor([[ 0.5000, -0.2000]])
    """
    _checks.check_number("linf_ball", "radius", radius)
    return lambda x: center + project_ball(x - center, radius, "linf")


def l2_ball(center: Tensor, radius: float) -> Projection:
    """Project onto ``{x : ||x_i - center_i||_2 <= radius}`` for each sample ``i``.

    Example:
      >>> l2_ball(torch.zeros(1, 2), 1.0)(torch.tensor([[3.0, 4.0]]))
      tensor([[0.6000, 0.8000]])
    """
    _checks.check_number("l2_ball", "radius", radius)
    return lambda x: center + project_ball(x - center, radius, "l2")  # pragma: no mutate (any other norm name is l2 there)


def l2(weight: float, center: Tensor | None = None) -> Regularizer:
    """``weight * ||x_i - center_i||^2`` per sample (Tikhonov).

    Example:
      >>> l2(0.5)(torch.ones(2, 3))
      tensor([1.5000, 1.5000])
    """
    _checks.check_number("l2", "weight", weight)
    return lambda x: weight * (x if center is None else x - center).flatten(1).pow(2).sum(1)


def total_variation(weight: float, *, eps: float = 1e-3) -> Regularizer:
    """Smoothed isotropic total variation of images ``[B, ..., H, W]`` per sample.

    ``weight * sum sqrt(dx^2 + dy^2 + eps^2)`` over pixels (forward differences; ``eps``
    smooths the corners, Charbonnier's smoothing). With ``eps=0`` it is the exact TV, and
    its derivative on flat regions is 0, not NaN (NOTE [safe norm]).

    Example:
      >>> total_variation(1.0, eps=0.0)(torch.tensor([[[0.0, 1.0], [0.0, 1.0]]]))
      tensor([1.])
    """
    _checks.check_number("total_variation", "weight", weight)
    _checks.check_number("total_variation", "eps", eps)

    def tv(x: Tensor) -> Tensor:
        if x.ndim < 3:
            raise ValueError(f"total_variation: expects images [B, ..., H, W], got shape {list(x.shape)}.")
        dx = x[..., :-1, 1:] - x[..., :-1, :-1]
        dy = x[..., 1:, :-1] - x[..., :-1, :-1]
        return weight * safe_norm(torch.stack([dx, dy, torch.full_like(dx, eps)], -1)).flatten(1).sum(1)

    return tv
