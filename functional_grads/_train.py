"""Training orchestration: a whole train step, and interop with ``torch.optim``."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ._checks import match_names, match_tensor
from ._engine import Saved, build_step, optimizer_update
from ._functionalize import split_params
from ._typing import CompileOption, LossFn, Params, PyTree
from .optim._transforms import GradientTransformation


def make_step(
    loss: LossFn,
    optimizer: GradientTransformation,
    /,
    *,
    compile: CompileOption = False,  # pragma: no mutate (mutation runs switch compiling off; the default is tested)
    check: bool = True,
) -> Callable[..., tuple[Params, PyTree, torch.Tensor]]:
    """A full train step ``(params, opt_state, *batch) -> (params, opt_state, loss)``.

    The loss's gradient (any composition of input derivatives) and the optimizer update
    are one pure function, compiled as a whole when ``compile`` is set (with the eager
    fallback of :func:`value_and_grad`). To transform gradients before the update (clip,
    weight decay, a cross-process mean), ``optim.chain`` them into ``optimizer``.

    Args:
      check: raise ``FloatingPointError`` if the loss, a gradient or an updated parameter
        holds NaN/Inf (naming the leaves), warn on an all-zero gradient.

    Returns:
      The step. The module is not modified: write trained params back with
      :func:`load_params`.

    Example:
      >>> loss = lambda p, x: ((p["w"] * x) ** 2).sum()
      >>> step = make_step(loss, optim.sgd(0.1))
      >>> params, state, value = step({"w": torch.ones(2)}, optim.sgd(0.1).init({}), torch.ones(2))
      >>> params["w"], value
      (tensor([0.8000, 0.8000]), tensor(2.))
    """
    api = "make_step"
    if not isinstance(optimizer, GradientTransformation):
        raise TypeError(
            f"{api}: optimizer must be a functional_grads.optim GradientTransformation "
            f"(e.g. optim.adam(1e-3)), got {type(optimizer).__name__}. For a torch.optim "
            "optimizer, use value_and_grad and apply_grads."
        )
    run = build_step(api, loss, update=optimizer_update(optimizer), compile=compile, check=check,
                     hint="Check the data and the optimizer's settings (learning rate, betas, eps).")

    return around_step(run)


def around_step(run: Callable[..., Any]) -> Callable[..., tuple[Params, PyTree, torch.Tensor]]:
    """The public ``make_step`` function around a step core (built or loaded)."""

    def step(params: Params, state: PyTree, *batch: Any) -> tuple[Params, PyTree, torch.Tensor]:
        result = run(params, state, *batch)
        return result.params, result.state, result.value

    step.saved = Saved("make_step", False, run)  # type: ignore[attr-defined]
    return step


def apply_grads(module: nn.Module, grads: Params, /) -> None:
    """Store ``grads`` as the module's ``.grad`` so that a ``torch.optim`` optimizer can step.

    Args:
      module: the module whose params :func:`functionalize` returned. Each trainable
        parameter gets ``grads[name]`` as ``.grad``; frozen ones (``requires_grad=False``)
        get none, exactly as after ``loss.backward()``. Build the optimizer on
        ``model.parameters()``. The params from :func:`functionalize` alias the module's,
        so they see the update.
      grads: from :func:`value_and_grad`, shaped like the params.

    Example:
      >>> model = torch.nn.Linear(2, 1)
      >>> f, params = functionalize(model)
      >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
      >>> grads = {k: torch.ones_like(v) for k, v in params.items()}
      >>> apply_grads(model, grads); opt.step()
    """
    api = "apply_grads"
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"{api}: expected the nn.Module to write .grad into, got {type(module).__name__}. "
            "Pass the module: apply_grads(model, grads), and build the optimizer on model.parameters()."
        )
    trainable, frozen = split_params(module)
    match_names(api, trainable, grads, "grads", frozen=frozen)
    for name, p in trainable.items():
        match_tensor(api, f"grads[{name!r}]", grads[name], p)
        p.grad = grads[name].detach()
    for p in frozen.values():
        p.grad = None
