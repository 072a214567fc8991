"""FGSM and PGD perturbations from per-sample input gradients of a loss."""

from __future__ import annotations

from typing import Any, Callable

import optree
import torch
from torch import Tensor
from torch.func import grad

from . import _checks
from ._per_sample import map_samples, scalar_output
from ._typing import PerSampleFn

_NORMS = ("linf", "l2")
LossOnOutput = Callable[[Tensor, Tensor], Tensor]


def fgsm(
    f: PerSampleFn,
    params: Any,
    X: Tensor,
    Y: Tensor,
    /,
    *,
    loss_fn: LossOnOutput,
    eps: float,
    targeted: bool = False,
    clip_min: float | None = None,
    clip_max: float | None = None,
) -> Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): ``clip(X + eps * sign(grad_x loss))``.

    Args:
      f, params: the model as a pure function and its (frozen) parameters.
      X: inputs ``[B, *x_shape]``; Y: targets ``[B, ...]``, one per sample.
      loss_fn: ``loss_fn(out, y) -> scalar`` for one sample, e.g.
        ``lambda out, y: F.cross_entropy(out, y)``.
      eps: the L-inf radius. targeted: step down the loss towards ``Y`` instead of up.
      clip_min, clip_max: the valid input range (e.g. 0 and 1 for images).

    Returns:
      The adversarial examples ``[B, *x_shape]`` (no gradient flows to ``params``).

    Example:
      >>> f = lambda p, x: p["w"] * x
      >>> mse = lambda out, y: ((out - y) ** 2).sum()
      >>> fgsm(f, {"w": torch.ones(2)}, torch.zeros(1, 2), torch.ones(1, 2), loss_fn=mse, eps=0.1)
      tensor([[-0.1000, -0.1000]])
    """
    return pgd(f, params, X, Y, loss_fn=loss_fn, eps=eps, step_size=eps, steps=1, norm="linf",
               targeted=targeted, clip_min=clip_min, clip_max=clip_max)


def pgd(
    f: PerSampleFn,
    params: Any,
    X: Tensor,
    Y: Tensor,
    /,
    *,
    loss_fn: LossOnOutput,
    eps: float,
    step_size: float | None = None,
    steps: int = 10,
    norm: str = "linf",
    random_start: bool = False,
    targeted: bool = False,
    generator: torch.Generator | None = None,
    clip_min: float | None = None,
    clip_max: float | None = None,
) -> Tensor:
    """Projected gradient descent attack (Madry et al. 2018), L-inf or L2.

    Each step moves by ``step_size`` along ``sign(g)`` (linf) or ``g / ||g||`` (l2) of the
    per-sample loss gradient ``g``, projects onto the ``eps`` ball around ``X`` and clips to
    ``[clip_min, clip_max]``, as in the widely used attack libraries. ``random_start``
    draws the start uniformly in the ball. ``steps=1, step_size=eps`` without a random
    start is :func:`fgsm`. Other arguments as in :func:`fgsm`; ``step_size`` defaults to
    ``2.5 * eps / steps``.

    Returns:
      The adversarial examples ``[B, *x_shape]`` (no gradient flows to ``params``).
    """
    params = optree.tree_map(lambda t: t.detach() if isinstance(t, Tensor) else t, params)
    return perturb(loss_input_grad("pgd", f, loss_fn), params, X.detach(), Y, eps=eps, step_size=step_size,
                   steps=steps, norm=norm, random_start=random_start, targeted=targeted,
                   generator=generator, clip_min=clip_min, clip_max=clip_max)


def loss_input_grad(api: str, f: PerSampleFn, loss_fn: LossOnOutput) -> Callable[[Any, Tensor, Tensor], Tensor]:
    """``(params, X, Y) -> [B, *x_shape]``: per-sample gradient of ``loss_fn(f(params, x), y)``."""
    g = grad(per_sample_loss(api, f, loss_fn), argnums=1)
    return lambda params, X, Y: map_with_targets(api, g, params, X, Y)


def per_sample_loss(api: str, f: PerSampleFn, loss_fn: LossOnOutput) -> Callable[[Any, Tensor, Tensor], Tensor]:
    """``(params, x, y) -> []``: one sample's ``loss_fn(f(params, x), y)``, checked to be a scalar."""
    _checks.check_callable(api, f)
    _checks.check_callable(api, loss_fn, "loss_fn")
    return scalar_output(api, lambda p, x, y: loss_fn(f(p, x), y), False)


def map_with_targets(api: str, fn: Callable[..., Any], params: Any, X: Tensor, Y: Tensor) -> Any:
    """Map ``fn(params, x, y)`` over the samples of ``X`` and their targets ``Y``."""
    if not isinstance(Y, Tensor) or Y.ndim == 0 or Y.shape[0] != X.shape[0]:
        got = _checks.fmt(Y.shape) if isinstance(Y, Tensor) else type(Y).__name__
        raise ValueError(f"{api}: Y must hold one target per sample, leading dimension {X.shape[0]}; got {got}.")
    return map_samples(api, fn, (params, X, Y), argnums=1, chunk_size=None, randomness="error", also=(2,))


def perturb(
    grad_fn: Callable[[Any, Tensor, Tensor], Tensor],
    params: Any,
    X: Tensor,
    Y: Tensor,
    *,
    eps: float,
    step_size: float | None,
    steps: int,
    norm: str,
    random_start: bool,
    targeted: bool = False,
    generator: torch.Generator | None = None,
    clip_min: float | None = None,
    clip_max: float | None = None,
    api: str = "pgd",
) -> Tensor:
    """The PGD loop shared by the attacks and the ``adversarial`` loss."""
    check_attack(api, X, eps=eps, steps=steps, step_size=step_size, norm=norm)
    step_size = step_size if step_size is not None else (eps if steps == 1 else 2.5 * eps / steps)
    delta = torch.zeros_like(X)
    if random_start:  # the start is clipped only when random, as in Madry et al.'s code
        delta = _clip(X, _random_in_ball(X, eps, norm, generator), clip_min, clip_max)
    for _ in range(steps):
        g = grad_fn(params, X + delta, Y)
        g = -g if targeted else g
        delta = _project(delta + step_size * _steepest(g, norm), eps, norm)
        delta = _clip(X, delta, clip_min, clip_max)
    return X + delta


def check_attack(api: str, X: Any, *, eps: Any, steps: Any, step_size: Any, norm: Any) -> None:
    _checks.check_batch(api, (X,), 0)
    if not isinstance(eps, (int, float)) or eps < 0:
        raise ValueError(f"{api}: eps must be a non-negative number (the attack radius), got {eps!r}.")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{api}: steps must be a positive int, got {steps!r}.")
    if step_size is not None and (not isinstance(step_size, (int, float)) or step_size < 0):
        raise ValueError(f"{api}: step_size must be a non-negative number or None, got {step_size!r}.")
    if norm not in _NORMS:
        raise ValueError(f"{api}: norm must be one of {_NORMS}, got {norm!r}.")


def _per_sample_norm(t: Tensor) -> Tensor:
    """``[B, *shape] -> [B, 1, ..., 1]``: each sample's L2 norm, broadcastable against t."""
    return t.flatten(1).norm(dim=1).reshape(-1, *[1] * (t.ndim - 1))


def _steepest(g: Tensor, norm: str) -> Tensor:
    return g.sign() if norm == "linf" else g / (_per_sample_norm(g) + 1e-10)


def _project(delta: Tensor, eps: float, norm: str) -> Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / (_per_sample_norm(delta) + 1e-12)).clamp(max=1.0)


def _clip(X: Tensor, delta: Tensor, clip_min: float | None, clip_max: float | None) -> Tensor:
    if clip_min is None and clip_max is None:
        return delta
    return (X + delta).clamp(clip_min, clip_max) - X


def _random_in_ball(X: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    # In-place draws on new_empty: see NOTE [random draws under compile].
    if norm == "linf":
        return X.new_empty(X.shape).uniform_(-eps, eps, generator=generator)
    direction = X.new_empty(X.shape).normal_(generator=generator)
    radius = X.new_empty((X.shape[0],) + (1,) * (X.ndim - 1)).uniform_(0, eps, generator=generator)
    return direction / (_per_sample_norm(direction) + 1e-12) * radius
