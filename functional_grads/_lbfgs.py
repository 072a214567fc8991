"""L-BFGS over a batch of independent problems, one curvature history per sample."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


class BatchedLBFGS:
    """L-BFGS (Nocedal & Wright, Alg. 7.4) with every inner product taken per sample.

    ``objective(x) -> [B]`` must be separable over samples. Each step takes the two-loop
    direction per sample and a backtracking line search (Armijo, c1 = 1e-4) per sample,
    so one sample's history or step size never changes another's.
    """

    def __init__(
        self,
        objective: Callable[[Tensor], Tensor],
        grad_fn: Callable[[Tensor], tuple[Tensor, Tensor]],
        *,
        lr: float = 1.0,
        history: int = 10,
    ):
        """``grad_fn = separable_grad(objective)``, passed in so that both may be compiled."""
        self.objective, self.grad_fn, self.lr, self.m = objective, grad_fn, lr, history
        self.s: list[Tensor] = []
        self.y: list[Tensor] = []
        self.last: tuple[Tensor, Tensor] | None = None  # (x, grad) of the previous step

    def step(self, x: Tensor, active: Tensor) -> tuple[Tensor, Tensor]:
        """One iteration from ``x [B, ...]``; returns ``(x_new, objective(x) [B])``."""
        B = x.shape[0]
        g, f = self.grad_fn(x)
        g, f = g.reshape(B, -1), f.detach()
        if self.last is not None:
            self._remember(x.reshape(B, -1) - self.last[0], g - self.last[1])
        self.last = (x.reshape(B, -1), g)
        d = self._direction(g)
        slope = (g * d).sum(1)
        descent = slope < 0
        d = torch.where(descent[:, None], d, -g)  # fall back to steepest descent
        slope = torch.where(descent, slope, -(g * g).sum(1))
        alpha = torch.full((B,), self.lr, dtype=x.dtype, device=x.device)
        if not self.s:  # first step: a gradient step of length lr at most
            alpha = alpha * torch.clamp(1 / g.abs().sum(1).clamp_min(1e-12), max=1.0)
        accepted = ~active
        x_flat = x.reshape(B, -1)
        for _ in range(30):
            trial = self.objective((x_flat + alpha[:, None] * d).reshape(x.shape)).detach()
            accepted = accepted | (trial <= f + 1e-4 * alpha * slope)
            if accepted.all():
                break
            alpha = torch.where(accepted, alpha, alpha / 2)
        alpha = torch.where(active & accepted, alpha, torch.zeros_like(alpha))
        return (x_flat + alpha[:, None] * d).reshape(x.shape), f

    def _remember(self, s: Tensor, y: Tensor) -> None:
        self.s.append(s)
        self.y.append(y)
        if len(self.s) > self.m:
            self.s.pop(0)
            self.y.pop(0)

    def _direction(self, g: Tensor) -> Tensor:
        q, alphas, rhos = g.clone(), [], []
        for s, y in zip(reversed(self.s), reversed(self.y)):
            sy = (s * y).sum(1)
            # A pair without positive curvature is skipped for that sample only.
            rho = torch.where(sy > 1e-10, 1 / sy.clamp_min(1e-10), torch.zeros_like(sy))
            a = rho * (s * q).sum(1)
            q = q - a[:, None] * y
            alphas.append(a)
            rhos.append(rho)
        if self.s:
            s, y = self.s[-1], self.y[-1]
            sy, yy = (s * y).sum(1), (y * y).sum(1)
            gamma = torch.where(sy > 1e-10, sy / yy.clamp_min(1e-20), torch.ones_like(sy))
            q = gamma[:, None] * q
        for (s, y), a, rho in zip(zip(self.s, self.y), reversed(alphas), reversed(rhos)):
            b = rho * (y * q).sum(1)
            q = q + s * (a - b)[:, None]
        return -q
