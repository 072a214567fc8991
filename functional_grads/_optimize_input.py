"""Optimise the input of a frozen function, every sample of the batch on its own."""

from __future__ import annotations

import sys
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor

from . import _checks
from ._lbfgs import BatchedLBFGS
from ._optim import adam, sgd
from ._per_sample import separable_grad
from ._value_and_grad import maybe_compile

Objective = Callable[[Tensor], Tensor]
_OPTIMIZERS = ("adam", "sgd", "lbfgs")


class InputOptimization(NamedTuple):
    """The result of :func:`optimize_input`."""

    x: Tensor
    """The optimised inputs ``[B, *x_shape]``."""
    history: Tensor
    """Per-step objective of every sample ``[steps_run, B]`` (regulariser included)."""
    converged: Tensor
    """``[B]`` bool: which samples met ``tol`` (all False without ``tol``)."""


def optimize_input(
    objective: Objective,
    x0: Tensor,
    /,
    *,
    steps: int,
    optimizer: str = "adam",
    lr: float | None = None,
    project: Callable[[Tensor], Tensor] | None = None,
    regularizer: Objective | None = None,
    callback: Callable[[int, Tensor, Tensor], None] | None = None,
    tol: float | None = None,
    progress: bool = False,
    compile: bool | dict = False,
) -> InputOptimization:
    """Minimise per-sample ``objective(x) [B]`` over ``x``, each sample independently.

    Typical objectives close over a frozen model: ``lambda x: ((f(params, x) - y)**2).sum(1)``.
    The model's parameters are never modified and no ``.grad`` is written anywhere.

    Args:
      objective: ``x [B, *x_shape] -> [B]``, where sample ``i``'s loss depends on ``x[i]`` only.
      x0: the starting point ``[B, *x_shape]``, floating point (not modified).
      steps: the most iterations to run.
      optimizer: ``"adam"`` (default), ``"sgd"`` or ``"lbfgs"`` (a batched L-BFGS with a
        per-sample two-loop recursion and backtracking line search, so samples never mix).
      lr: the step size; required for adam and sgd, default 1 for lbfgs.
      project: ``x -> x`` applied after every step to keep iterates feasible, e.g.
        :func:`functional_grads.inverse.box` or ``l2_ball``.
      regularizer: ``x -> [B]`` added to the objective, e.g.
        :func:`functional_grads.inverse.total_variation`.
      callback: ``callback(step, x, losses [B])`` after every step.
      tol: a sample stops (is frozen) once its objective changes by at most ``tol``
        between steps; the run stops when every sample has.
      progress: print a progress line to stderr every tenth of the run.
      compile: compile the inner step (gradient and update; for lbfgs the gradient and
        the objective) with ``torch.compile``, as in :func:`value_and_grad`; the loop
        stays Python.

    Returns:
      ``InputOptimization(x, history, converged)``.

    Example:
      >>> target = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
      >>> res = optimize_input(lambda x: ((x - target) ** 2).sum(1), torch.zeros(2, 2), steps=50, optimizer="lbfgs")
      >>> torch.allclose(res.x, target, atol=1e-4)
      True
    """
    api = "optimize_input"
    _checks.check_callable(api, objective, "objective")
    _checks.check_batch(api, (x0,), 0)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{api}: steps must be a positive int, got {steps!r}.")
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"{api}: optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}.")
    if lr is None and optimizer != "lbfgs":
        raise TypeError(f"{api}: optimizer={optimizer!r} needs a step size: pass lr=...")
    if lr is not None and (not isinstance(lr, (int, float)) or lr <= 0):
        raise ValueError(f"{api}: lr must be a positive number, got {lr!r}.")
    if tol is not None and (not isinstance(tol, (int, float)) or tol < 0):
        raise ValueError(f"{api}: tol must be a non-negative number, got {tol!r}.")

    B = x0.shape[0]

    def total(x: Tensor) -> Tensor:
        out = objective(x)
        if not isinstance(out, Tensor) or out.shape != (B,):
            got = _checks.fmt(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"{api}: objective must return one loss per sample, shape [{B}], got {got}. "
                "Reduce over the non-batch dimensions only, e.g. .flatten(1).sum(1)."
            )
        return out + regularizer(x) if regularizer is not None else out

    maybe = lambda fn: maybe_compile(api, fn, compile, ())  # noqa: E731
    grad_fn = separable_grad(total)
    x = project(x0.detach()) if project is not None else x0.detach().clone()
    active = torch.ones(B, dtype=torch.bool, device=x.device)
    history: list[Tensor] = []
    if optimizer == "lbfgs":
        engine = BatchedLBFGS(maybe(total), maybe(grad_fn), lr=lr or 1.0)
    else:
        opt = adam(lr) if optimizer == "adam" else sgd(lr)
        state = opt.init(x)

        def update(x: Tensor, state: Any, active: Tensor) -> Any:
            grads, losses = grad_fn(x)
            updates, state = opt.update(grads, state, x)
            keep = active.reshape(B, *[1] * (x.ndim - 1))
            return torch.where(keep, x + updates, x), state, losses

        update = maybe(update)
    previous = None
    for step in range(steps):
        if optimizer == "lbfgs":
            x_new, losses = engine.step(x, active)
        else:
            x_new, state, losses = update(x, state, active)
        x = project(x_new) if project is not None else x_new
        losses = losses.detach()
        history.append(losses)
        if callback is not None:
            callback(step, x, losses)
        if progress and (step % max(steps // 10, 1) == 0 or step == steps - 1):
            print(f"{api}: step {step + 1}/{steps}, mean loss {losses.mean().item():.6g}, "
                  f"active {int(active.sum())}/{B}", file=sys.stderr)
        if tol is not None and previous is not None:
            active = active & ((losses - previous).abs() > tol)
            if not active.any():
                break
        previous = losses
    converged = ~active if tol is not None else torch.zeros_like(active)
    return InputOptimization(x.detach(), torch.stack(history), converged)
