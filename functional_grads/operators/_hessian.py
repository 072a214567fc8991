"""Per-sample second derivatives of scalar functions: Hessian, HVP and Laplacian."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.func import grad, jacrev

from .. import _checks
from .._per_sample import component_output, map_samples, per_sample_options, scalar_output
from .._typing import InDims, PerSampleFn, Randomness


def input_hessian(
    f: PerSampleFn,
    /,
    *,
    argnums: int = 1,
    in_dims: InDims = None,
    chunk_size: int | None = None,
    randomness: Randomness = "error",
) -> Callable[..., Any]:
    """Per-sample Hessian of ``f`` w.r.t. its batched input, for each output component.

    Args:
      f: ``f(params, x) -> []`` (or ``[1]``), or ``[*out]`` (a Hessian per component).
      argnums, in_dims, chunk_size, randomness: as in :func:`functional_grads.input_grad`.

    Returns:
      A function ``(params, X) -> H [B, *x_shape, *x_shape]`` (``[B, *out, *x_shape, *x_shape]``
      for a vector output).

    Example:
      >>> f = lambda p, x: (p["w"] * x**2).sum()     # [3] -> []
      >>> input_hessian(f)({"w": torch.ones(3)}, torch.zeros(5, 3))[0]
      tensor([[2., 0., 0.],
              [0., 2., 0.],
              [0., 0., 2.]])
    """
    api = "input_hessian"
    per_sample_options(api, f, argnums=argnums, in_dims=in_dims, chunk_size=chunk_size, randomness=randomness)
    # NOTE [hessian composition]: torch.func.hessian is jacfwd(jacrev(f)); under an
    # outer grad it fails to compile on torch 2.13 (fake-tensor error), while
    # jacrev(jacrev(f)) compiles and is exact, so we use reverse-over-reverse.
    h = jacrev(jacrev(component_output(api, f), argnums=argnums), argnums=argnums)

    def input_hessian_fn(*args: Any) -> Any:
        return map_samples(api, h, args, argnums=argnums, chunk_size=chunk_size, randomness=randomness,
                           in_dims=in_dims)

    return _checks.positional(api, input_hessian_fn)


def hvp(
    f: PerSampleFn,
    /,
    *,
    argnums: int = 1,
    in_dims: InDims = None,
    chunk_size: int | None = None,
    randomness: Randomness = "error",
) -> Callable[..., Any]:
    """Per-sample Hessian-vector product of a scalar-per-sample ``f``, without forming H.

    Args:
      argnums, in_dims, chunk_size, randomness: as in :func:`functional_grads.input_grad`
        (``in_dims`` describes f's arguments; ``V`` is always mapped).

    Returns:
      A function ``(params, X, V) -> H_i v_i [B, *x_shape]`` where ``V`` is
      ``[B, *x_shape]`` (one vector per sample) and ``H_i`` the input Hessian at ``X[i]``.

    Example:
      >>> f = lambda p, x: (p["w"] * x**2).sum()
      >>> hvp(f)({"w": torch.ones(3)}, torch.zeros(2, 3), torch.ones(2, 3))
      tensor([[2., 2., 2.],
              [2., 2., 2.]])
    """
    api = "hvp"
    per_sample_options(api, f, argnums=argnums, in_dims=in_dims, chunk_size=chunk_size, randomness=randomness)
    g = grad(scalar_output(api, f), argnums=argnums)

    # NOTE [hvp composition]: reverse-over-reverse (the gradient of <grad f, v>) needs only
    # double-backward formulas, which every loss on input gradients needs anyway, and it
    # compiles under an outer grad; forward-over-reverse would also need forward-mode ones.
    def one(*args_and_v: Any) -> Any:
        *args, v = args_and_v

        def dot(x: Any) -> Any:
            args[argnums] = x
            return (g(*args) * v).sum()

        return grad(dot)(args[argnums])

    def hvp_fn(*args_and_v: Any) -> Any:
        if len(args_and_v) < 2:
            raise TypeError(f"{api}: call as hvp(f)(*args, V) with V shaped like X.")
        x, v = _checks.check_batch(api, args_and_v, argnums), args_and_v[-1]
        if not isinstance(v, torch.Tensor) or v.shape != x.shape:
            got = _checks.fmt(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(
                f"{api}: V (last argument) must be shaped like X {_checks.fmt(x.shape)}, "
                f"one vector per sample; got {got}."
            )
        return map_samples(api, one, args_and_v[:-1], argnums=argnums, chunk_size=chunk_size,
                           randomness=randomness, in_dims=in_dims, extra=(v,))

    return _checks.positional(api, hvp_fn)
