"""Interop with ``torch.optim``: put functional gradients where optimizers look for them."""

from __future__ import annotations

import optree
import torch

from ._typing import Params


def apply_grads(params: Params, grads: Params, /) -> None:
    """Store ``grads`` in ``params[k].grad`` so that a ``torch.optim`` optimizer can step.

    ``params`` from :func:`functionalize` share storage with the module's parameters, so
    ``optimizer.step()`` on them updates the module too.

    Example:
      >>> f, params = functionalize(torch.nn.Linear(2, 1))
      >>> opt = torch.optim.SGD(params.values(), lr=0.1)
      >>> grads = {k: torch.ones_like(v) for k, v in params.items()}
      >>> apply_grads(params, grads); opt.step()
    """
    p_paths, p_leaves, p_spec = optree.tree_flatten_with_path(params)
    g_leaves, g_spec = optree.tree_flatten(grads)
    if p_spec != g_spec:
        raise ValueError(
            f"apply_grads: grads must have the structure of params; got params {p_spec} "
            f"and grads {g_spec}."
        )
    for path, p, g in zip(p_paths, p_leaves, g_leaves):
        if not isinstance(g, torch.Tensor) or g.shape != p.shape:
            raise ValueError(f"apply_grads: grads{list(path)} does not match the shape of params{list(path)} {list(p.shape)}.")
        p.grad = g.detach()
