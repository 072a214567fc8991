"""Training orchestration: a whole train step, and interop with ``torch.optim``."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import optree
import torch
from torch import nn

from ._compile import maybe_compile
from ._engine import check_result, flags, grad_step, refuse_transforms
from ._functionalize import match_names, match_tensor
from ._typing import CompileOption, LossFn, Params, PyTree
from .optim._transforms import GradientTransformation, apply_updates


def make_step(
    loss: LossFn, optimizer: GradientTransformation, /, *, compile: CompileOption = False, check: bool = True
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
    gstep = grad_step(api, loss, argnums=0, has_aux=False)

    def train_step(params: Params, state: PyTree, *batch: Any) -> Any:
        value, _, grads = gstep(params, *batch)
        updates, state = optimizer.update(grads, state, params)
        new_params = apply_updates(params, updates)
        fl = flags(value, grads, new_params) if check else None
        return new_params, state, value, grads, fl

    run = maybe_compile(api, train_step, compile, (0, 1))

    def step(params: Params, state: PyTree, *batch: Any) -> tuple[Params, PyTree, torch.Tensor]:
        if check:
            refuse_transforms(api)
        new_params, state, value, grads, fl = run(params, state, *batch)
        if check:
            check_result(api, value, grads, fl, hint="Check the data and the optimizer's settings "
                         "(learning rate, betas, eps).", params=new_params)
        return new_params, state, value

    return step


def apply_grads(target: nn.Module | Params, grads: Params, /) -> None:
    """Store ``grads`` as ``.grad`` so that a ``torch.optim`` optimizer can step.

    Args:
      target: the module (recommended): each of its parameters gets ``grads[name]`` as
        ``.grad``, except frozen ones (``requires_grad=False``), which get none, exactly as
        after ``loss.backward()``. Build the optimizer on ``model.parameters()``. The params
        from :func:`functionalize` alias the module's, so they see the update. A params
        dict is accepted for one release (deprecated: it cannot see frozen layers).
      grads: from :func:`value_and_grad`, shaped like the params.

    Example:
      >>> model = torch.nn.Linear(2, 1)
      >>> f, params = functionalize(model)
      >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
      >>> grads = {k: torch.ones_like(v) for k, v in params.items()}
      >>> apply_grads(model, grads); opt.step()
    """
    api = "apply_grads"
    if isinstance(target, nn.Module):
        named = dict(target.named_parameters())
        match_names(api, named, grads, "grads")
        for name, p in named.items():
            match_tensor(api, f"grads[{name!r}]", grads[name], p)
            p.grad = grads[name].detach() if p.requires_grad else None
        return
    warnings.warn(
        "apply_grads(params, grads) is deprecated: pass the module, apply_grads(model, grads), "
        "and build the optimizer on model.parameters().", DeprecationWarning, stacklevel=2,
    )
    p_paths, p_leaves, p_spec = optree.tree_flatten_with_path(target)
    g_leaves, g_spec = optree.tree_flatten(grads)
    if p_spec != g_spec:
        raise ValueError(
            f"{api}: grads must have the structure of params; got params {p_spec} "
            f"and grads {g_spec}."
        )
    for path, p, g in zip(p_paths, p_leaves, g_leaves):
        if not isinstance(g, torch.Tensor) or g.shape != p.shape:
            raise ValueError(f"{api}: grads{list(path)} does not match the shape of params{list(path)} {list(p.shape)}.")
        p.grad = g.detach()
