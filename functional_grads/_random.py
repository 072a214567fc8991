"""Random probes and starts, drawn in the one way that traces under ``torch.compile``.

NOTE [random draws under compile]: ``torch.randn(shape)`` with a symbolic batch size
fails under ``grad`` in dynamo on torch 2.13, while ``like.new_empty(shape).normal_()``
traces. A ``torch.Generator`` cannot be traced by dynamo at all; ``make_fx`` holds it in the
graph, but such a graph drew other numbers than eager (torch 2.13), so a step with one is
not traced (NOTE [traced steps]) and runs eagerly (with ``CompileFallbackWarning``); without
one, compiled steps draw from the global RNG exactly as eager ones.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ._numerics import as_per_sample, per_sample_norm

from ._typing import Probe, choices

PROBES = choices(Probe)


def probes(
    like: Tensor, shape: Sequence[int], kind: Probe, *, event_dims: int = 1, generator: torch.Generator | None = None
) -> Tensor:
    """Probe vectors ``v`` of ``shape``, each over the last ``event_dims`` dimensions (size
    ``n``), with ``E[v v^T] = I``: so ``E[v^T A v] = tr(A)`` for any ``A``.

    ``rademacher``: entries +-1 (the least variance for a trace estimate); ``gaussian``:
    standard normal; ``sphere``: uniform on the sphere of radius ``sqrt(n)``.
    """
    if kind == "rademacher":
        return like.new_empty(shape).bernoulli_(generator=generator).mul_(2).sub_(1)  # p = 0.5, the default
    v = like.new_empty(shape).normal_(generator=generator)
    if kind == "sphere" and event_dims == 0:  # the 1-sphere of radius 1: a random sign
        return v.sign()
    if kind == "sphere":
        dims = tuple(range(len(shape) - event_dims, len(shape)))
        n = math.prod(shape[len(shape) - event_dims:])
        v = v * (n**0.5 / torch.linalg.vector_norm(v, dim=dims, keepdim=True))
    return v


def uniform(like: Tensor, shape: Sequence[int], low: float, high: float,
            generator: torch.Generator | None = None) -> Tensor:
    return like.new_empty(shape).uniform_(low, high, generator=generator)


def in_l2_ball(like: Tensor, eps: float, volume: bool, generator: torch.Generator | None = None) -> Tensor:
    """A random point per sample in the L2 ball of radius ``eps``, shaped like ``like``.

    The direction is uniform. ``volume=False``: the radius is uniform in ``[0, eps]`` (the
    common convention of attack libraries, denser near the centre); ``volume=True``: the
    radius is ``eps * u^(1/n)``, which is uniform over the ball's volume.
    """
    direction = like.new_empty(like.shape).normal_(generator=generator)
    u = like.new_empty((like.shape[0],)).uniform_(generator=generator)  # [0, 1), the default
    if volume:
        u = u ** (1.0 / like[0].numel())
    return direction / per_sample_norm(direction).clamp_min(1e-12) * as_per_sample(eps * u, like)
