"""Numerics shared by losses, attacks and projections: norms and projections."""

from __future__ import annotations

import math
import torch
from torch import Tensor

from ._typing import Norm

_ORD = {"l1": 1, "l2": 2, "linf": math.inf}


def safe_norm(v: Tensor, dim: int = -1) -> Tensor:
    """L2 norm along ``dim`` with a zero (not NaN) derivative at ``v = 0``."""
    sq = (v * v).sum(dim)
    positive = sq > 0
    # NOTE [safe norm]: sqrt'(0) is infinite and times 0 gives NaN; evaluating sqrt at 1
    # where the norm is 0, then masking, keeps the value exact and the gradient finite.
    return torch.where(positive, torch.where(positive, sq, 1.0).sqrt(), 0.0)


def vector_norm(v: Tensor, norm: Norm) -> Tensor:
    """``[B, N] -> [B]``: each row's norm, NaN-free in its derivative at 0 for ``"l2"``."""
    return safe_norm(v) if norm == "l2" else torch.linalg.vector_norm(v, ord=_ORD[norm], dim=1)


def per_sample_norm(t: Tensor) -> Tensor:
    """``[B, *shape] -> [B, 1, ..., 1]``: each sample's L2 norm, broadcastable against ``t``."""
    return as_per_sample(t.flatten(1).norm(dim=1), t)


def as_per_sample(values: Tensor, like: Tensor) -> Tensor:
    """``[B] -> [B, 1, ..., 1]`` with as many dimensions as ``like``."""
    return values.reshape(-1, *[1] * (like.ndim - 1))


def project_ball(delta: Tensor, radius: float, norm: str) -> Tensor:
    """Project each sample of ``delta [B, ...]`` onto the ``norm`` ball of ``radius`` at 0."""
    if norm == "linf":
        return delta.clamp(-radius, radius)
    return delta * (radius / per_sample_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
