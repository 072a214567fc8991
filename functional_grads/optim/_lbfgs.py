"""L-BFGS over a batch of independent problems, as a pure gradient transformation."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor

from .. import _checks
from ._transforms import GradientTransformation


class LBFGSState(NamedTuple):
    """Per-sample curvature history, newest pair last: ``s, y [history, B, N]``."""

    s: Tensor
    y: Tensor
    step: Tensor
    x: Tensor
    grad: Tensor


def lbfgs(lr: float = 1.0, *, history: int = 10, max_backtracks: int = 30) -> GradientTransformation:
    """L-BFGS (Nocedal & Wright, Alg. 7.4) for a batch ``x [B, ...]`` of independent problems.

    Every inner product is taken per sample, and the backtracking line search (Armijo,
    ``c1 = 1e-4``) runs per sample, so one sample's history or step never changes
    another's. ``update`` needs two extra keyword arguments: ``value`` (the objective at
    ``params``, ``[B]``) and ``value_fn`` (``x -> [B]``, for the line search); ``active``
    (``[B]`` bool) marks the samples still optimised.

    Example:
      >>> opt = lbfgs()
      >>> x = torch.zeros(2, 3); fn = lambda x: ((x - 1) ** 2).sum(1)
      >>> state = opt.init(x)
      >>> for _ in range(5):
      ...     g = 2 * (x - 1)
      ...     updates, state = opt.update(g, state, x, value=fn(x), value_fn=fn)
      ...     x = x + updates
      >>> torch.allclose(x, torch.ones(2, 3))
      True
    """
    api = "lbfgs"
    _checks.check_number(api, "lr", lr, strict=True)
    _checks.check_number(api, "history", history, low=1, integer=True)
    _checks.check_number(api, "max_backtracks", max_backtracks, low=1, integer=True)

    def init(x: Tensor) -> LBFGSState:
        if not isinstance(x, Tensor) or x.ndim == 0:
            raise TypeError(f"{api}: optimises one batched tensor [B, ...] of independent problems.")
        flat = x.detach().reshape(x.shape[0], -1)
        zeros = flat.new_zeros((history, *flat.shape))
        return LBFGSState(zeros, zeros, torch.zeros((), dtype=torch.int64), torch.zeros_like(flat), torch.zeros_like(flat))

    def update(grads: Tensor, state: LBFGSState, x: Tensor | None = None, *, value: Tensor | None = None,
               value_fn: Callable[[Tensor], Tensor] | None = None, active: Tensor | None = None,
               **extra: Any) -> tuple[Tensor, LBFGSState]:
        if x is None or value is None or value_fn is None:
            raise TypeError(f"{api}: call update(grads, state, x, value=objective(x), value_fn=objective).")
        B = x.shape[0]
        g, xf, f = grads.reshape(B, -1), x.reshape(B, -1), value.detach()
        first = state.step == 0
        keep = (~first).to(g.dtype)  # the first step has no previous point: a zero pair, skipped
        s = torch.cat([state.s[1:], ((xf - state.x) * keep)[None]])
        y = torch.cat([state.y[1:], ((g - state.grad) * keep)[None]])
        d = _direction(g, s, y)
        slope = (g * d).sum(1)
        descent = slope < 0
        d = torch.where(descent[:, None], d, -g)  # fall back to steepest descent
        slope = torch.where(descent, slope, -(g * g).sum(1))
        alpha = torch.full((B,), lr, dtype=x.dtype, device=x.device)
        # first step: a gradient step of length lr at most
        alpha = torch.where(first, alpha * torch.clamp(1 / g.abs().sum(1).clamp_min(1e-12), max=1.0), alpha)
        active = torch.ones(B, dtype=torch.bool, device=x.device) if active is None else active
        accepted = ~active
        for _ in range(max_backtracks):
            trial = value_fn((xf + alpha[:, None] * d).reshape(x.shape)).detach()
            accepted = accepted | (trial <= f + 1e-4 * alpha * slope)
            if accepted.all():
                break
            alpha = torch.where(accepted, alpha, alpha / 2)
        alpha = torch.where(active & accepted, alpha, torch.zeros_like(alpha))
        updates = (alpha[:, None] * d).reshape(x.shape)
        return updates, LBFGSState(s, y, state.step + 1, xf.detach(), g.detach())

    return GradientTransformation(init, update)


def _direction(g: Tensor, s: Tensor, y: Tensor) -> Tensor:
    """The two-loop recursion per sample; a pair without positive curvature is skipped."""
    sy = (s * y).sum(-1)  # [m, B]
    rho = torch.where(sy > 1e-10, 1 / sy.clamp_min(1e-10), torch.zeros_like(sy))
    q, alphas = g.clone(), []
    for i in reversed(range(s.shape[0])):
        a = rho[i] * (s[i] * q).sum(1)
        q = q - a[:, None] * y[i]
        alphas.append(a)
    yy = (y[-1] * y[-1]).sum(1)
    gamma = torch.where(sy[-1] > 1e-10, sy[-1] / yy.clamp_min(1e-20), torch.ones_like(yy))
    q = gamma[:, None] * q
    for i, a in zip(range(s.shape[0]), reversed(alphas)):
        b = rho[i] * (y[i] * q).sum(1)
        q = q + s[i] * (a - b)[:, None]
    return -q
