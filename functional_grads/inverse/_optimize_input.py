"""Optimise the input of a frozen function, every sample of the batch on its own."""

from __future__ import annotations

import sys
from typing import Any, Callable, Literal, NamedTuple, Union

import torch
from torch import Tensor

from .. import _checks
from .._compile import maybe_compile
from .._per_sample import separable_grad
from .._typing import CompileOption
from ..optim._lbfgs import lbfgs
from ..optim._transforms import GradientTransformation, adam, sgd

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
    optimizer: Union[Literal["adam", "sgd", "lbfgs"], GradientTransformation] = "adam",
    lr: float | None = None,
    project: Callable[[Tensor], Tensor] | None = None,
    regularizer: Objective | None = None,
    callback: Callable[[int, Tensor, Tensor], None] | None = None,
    tol: float | None = None,
    progress: bool = False,
    compile: CompileOption = False,
) -> InputOptimization:
    """Minimise per-sample ``objective(x) [B]`` over ``x``, each sample independently.

    Typical objectives close over a frozen model: ``lambda x: ((f(params, x) - y)**2).sum(1)``.
    The model's parameters are never modified and no ``.grad`` is written anywhere; the
    objective runs without recording an autograd graph for tensors outside ``x``.

    Args:
      objective: ``x [B, *x_shape] -> [B]``, where sample ``i``'s loss depends on ``x[i]`` only.
      x0: the starting point ``[B, *x_shape]``, floating point (not modified).
      steps: the most iterations to run.
      optimizer: ``"adam"`` (default), ``"sgd"``, ``"lbfgs"`` (:func:`optim.lbfgs`: per-sample
        two-loop recursion and line search, so samples never mix), or any
        ``optim.GradientTransformation`` acting elementwise.
      lr: the step size; required for adam and sgd, default 1 for lbfgs.
      project: ``x -> x`` applied after every step to keep iterates feasible, e.g.
        :func:`functional_grads.inverse.box` or ``l2_ball``.
      regularizer: ``x -> [B]`` added to the objective, e.g.
        :func:`functional_grads.inverse.total_variation`.
      callback: ``callback(step, x, losses [B])`` after every step.
      tol: a sample stops (is frozen) once its objective changes by at most ``tol``
        between steps; the run stops when every sample has. ``converged`` reports them.
      progress: print a progress line to stderr every tenth of the run.
      compile: compile the objective and its gradient with ``torch.compile``, as in
        :func:`value_and_grad` (default False); the loop stays Python.

    Returns:
      ``InputOptimization(x, history, converged)``.

    Raises:
      FloatingPointError: when the objective becomes NaN/Inf for some sample (naming them).

    Example:
      >>> target = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
      >>> res = optimize_input(lambda x: ((x - target) ** 2).sum(1), torch.zeros(2, 2), steps=50, optimizer="lbfgs")
      >>> torch.allclose(res.x, target, atol=1e-4)
      True
    """
    api = "optimize_input"
    _checks.check_callable(api, objective, "objective")
    _checks.check_batch(api, (x0,), 0)
    _checks.check_number(api, "steps", steps, low=1, integer=True)
    _checks.check_number(api, "lr", lr, strict=True, optional=True)
    _checks.check_number(api, "tol", tol, optional=True)
    for name, fn in (("project", project), ("regularizer", regularizer), ("callback", callback)):
        if fn is not None:
            _checks.check_callable(api, fn, name)
    opt = _optimizer(api, optimizer, lr)

    B = x0.shape[0]

    def total(x: Tensor) -> Tensor:
        out = _checks.check_per_sample(api, "objective", objective(x), B)
        if regularizer is not None:
            out = out + _checks.check_per_sample(api, "regularizer", regularizer(x), B)
        return out

    value_fn = maybe_compile(api, total, compile)
    grad_fn = maybe_compile(api, separable_grad(total), compile)
    x = project(x0.detach()) if project is not None else x0.detach().clone()
    state = opt.init(x)
    active = torch.ones(B, dtype=torch.bool, device=x.device)
    keep = lambda a: a.reshape(B, *[1] * (x.ndim - 1))  # noqa: E731
    history: list[Tensor] = []
    previous = None
    with torch.no_grad():  # NOTE [no graph outside x]: torch.func.grad ignores no_grad for x
        for step in range(steps):
            grads, losses = grad_fn(x)
            losses = losses.detach()
            if not torch.isfinite(losses).all():
                bad = (~torch.isfinite(losses)).nonzero().flatten().tolist()
                raise FloatingPointError(
                    f"{api}: the objective is NaN/Inf at step {step} for sample(s) {bad[:10]}; lower lr, "
                    "add a projection (inverse.box) or a regularizer, or check the objective.")
            updates, state = opt.update(grads, state, x, value=losses, value_fn=value_fn, active=active)
            x = torch.where(keep(active), x + updates, x)
            x = project(x) if project is not None else x
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


def _optimizer(api: str, optimizer: Any, lr: float | None) -> GradientTransformation:
    if isinstance(optimizer, GradientTransformation):
        return optimizer
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"{api}: optimizer must be one of {_OPTIMIZERS} or a GradientTransformation, got {optimizer!r}.")
    if optimizer == "lbfgs":
        return lbfgs(lr or 1.0)
    if lr is None:
        raise TypeError(f"{api}: optimizer={optimizer!r} needs a step size: pass lr=...")
    return adam(lr) if optimizer == "adam" else sgd(lr)
