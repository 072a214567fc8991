"""Per-sample input gradients of scalar-per-sample functions."""

from __future__ import annotations

from typing import Any, Callable

import torch

from . import _checks
from ._per_sample import map_samples, scalar_output
from ._typing import PerSampleFn


def input_grad(
    f: PerSampleFn,
    /,
    *,
    argnums: int = 1,
    has_aux: bool = False,
    chunk_size: int | None = None,
    randomness: str = "error",
) -> Callable[..., Any]:
    """Per-sample gradient of a scalar-per-sample function w.r.t. its batched input.

    Args:
      f: ``f(params, x) -> out`` whose per-sample output has shape ``[]`` or ``[1]``.
      argnums: position of the batched input ``X`` (default 1).
      has_aux: if True, ``f`` returns ``(out, aux)`` and ``aux`` is returned per sample.
      chunk_size: map over this many samples at a time (saves memory); None = all.
      randomness: ``"error"`` (default), ``"different"`` or ``"same"``: how random ops
        such as dropout behave per sample, as in ``torch.func.vmap``.

    Returns:
      A function ``(params, X) -> grads [B, *x_shape]`` (``(grads, aux)`` with
      ``has_aux``). Samples never mix, and the result is differentiable w.r.t. params.

    Example:
      >>> f = lambda p, x: (p["w"] * x).sum()      # [D] -> []
      >>> input_grad(f)({"w": torch.ones(3)}, torch.zeros(4, 3)).shape
      torch.Size([4, 3])
    """
    api = "input_grad"
    _checks.check_callable(api, f)
    _checks.check_options(api, argnums=argnums, chunk_size=chunk_size, randomness=randomness)
    g = torch.func.grad(scalar_output(api, f, has_aux), argnums=argnums, has_aux=has_aux)

    def input_grad_fn(*args: Any) -> Any:
        return map_samples(api, g, args, argnums=argnums, chunk_size=chunk_size, randomness=randomness)

    return input_grad_fn


def value_and_input_grad(
    f: PerSampleFn,
    /,
    *,
    argnums: int = 1,
    has_aux: bool = False,
    chunk_size: int | None = None,
    randomness: str = "error",
) -> Callable[..., Any]:
    """Per-sample values and input gradients in one pass; arguments as in :func:`input_grad`.

    Returns:
      A function ``(params, X) -> (values [B], grads [B, *x_shape])``, or
      ``((values, aux), grads)`` with ``has_aux`` (JAX's convention).

    Example:
      >>> f = lambda p, x: (p["w"] * x).sum()
      >>> v, g = value_and_input_grad(f)({"w": torch.ones(3)}, torch.ones(4, 3))
      >>> v.shape, g.shape
      (torch.Size([4]), torch.Size([4, 3]))
    """
    api = "value_and_input_grad"
    _checks.check_callable(api, f)
    _checks.check_options(api, argnums=argnums, chunk_size=chunk_size, randomness=randomness)
    g = torch.func.grad_and_value(scalar_output(api, f, has_aux), argnums=argnums, has_aux=has_aux)

    def value_and_input_grad_fn(*args: Any) -> Any:
        grads, value = map_samples(
            api, g, args, argnums=argnums, chunk_size=chunk_size, randomness=randomness
        )
        return value, grads

    return value_and_input_grad_fn
