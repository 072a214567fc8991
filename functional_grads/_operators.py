"""Per-sample derivative operators: Jacobian, Hessian, HVP, Laplacian, divergence."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch.func import grad, jacfwd, jacrev

from . import _checks
from ._per_sample import map_samples, same_shape_output, scalar_output
from ._typing import PerSampleFn

_MODES = ("auto", "rev", "fwd")


def input_jacobian(
    f: PerSampleFn,
    /,
    *,
    argnums: int = 1,
    mode: str = "auto",
    has_aux: bool = False,
    chunk_size: int | None = None,
    randomness: str = "error",
) -> Callable[..., Any]:
    """Per-sample Jacobian of ``f`` w.r.t. its batched input.

    Args:
      f: ``f(params, x) -> out`` with any per-sample output shape.
      argnums: position of the batched input ``X`` (default 1).
      mode: ``"rev"`` (one VJP per output), ``"fwd"`` (one JVP per input) or ``"auto"``
        (default): forward mode when the input has fewer elements than the output,
        except under ``torch.compile`` (see NOTE [jacfwd under compile]).
      has_aux, chunk_size, randomness: as in :func:`input_grad`.

    Returns:
      A function ``(params, X) -> J [B, *out_shape, *x_shape]`` (``(J, aux)`` with ``has_aux``).

    Example:
      >>> f = lambda p, x: p["A"] @ x                # [3] -> [2]
      >>> input_jacobian(f)({"A": torch.ones(2, 3)}, torch.zeros(5, 3)).shape
      torch.Size([5, 2, 3])
    """
    api = "input_jacobian"
    _checks.check_callable(api, f)
    _checks.check_options(api, argnums=argnums, chunk_size=chunk_size, randomness=randomness)
    if mode not in _MODES:
        raise ValueError(f"{api}: mode must be one of {_MODES}, got {mode!r}.")

    def checked(*args: Any) -> Any:
        out = f(*args)
        _checks.check_tensor_output(api, _checks.split_aux(api, out)[0] if has_aux else out)
        return out

    def input_jacobian_fn(*args: Any) -> Any:
        _checks.check_batch(api, args, argnums)
        # NOTE [jacfwd under compile]: on torch 2.13, inductor miscompiles forward-mode AD
        # under an outer grad ("ZeroTensors are immutable", pytorch/pytorch#177261), so
        # "auto" picks reverse mode while compiling; an explicit "fwd" falls back to eager.
        use_fwd = mode == "fwd" or (
            mode == "auto"
            and not torch.compiler.is_compiling()
            and _fewer_inputs(checked, args, argnums, has_aux)
        )
        jac = (jacfwd if use_fwd else jacrev)(checked, argnums=argnums, has_aux=has_aux)
        return map_samples(api, jac, args, argnums=argnums, chunk_size=chunk_size, randomness=randomness)

    return input_jacobian_fn


def input_hessian(
    f: PerSampleFn,
    /,
    *,
    argnums: int = 1,
    chunk_size: int | None = None,
    randomness: str = "error",
) -> Callable[..., Any]:
    """Per-sample Hessian of a scalar-per-sample ``f`` w.r.t. its batched input.

    Returns:
      A function ``(params, X) -> H [B, *x_shape, *x_shape]``.

    Example:
      >>> f = lambda p, x: (p["w"] * x**2).sum()     # [3] -> []
      >>> input_hessian(f)({"w": torch.ones(3)}, torch.zeros(5, 3))[0]
      tensor([[2., 0., 0.],
              [0., 2., 0.],
              [0., 0., 2.]])
    """
    api = "input_hessian"
    _checks.check_callable(api, f)
    _checks.check_options(api, argnums=argnums, chunk_size=chunk_size, randomness=randomness)
    # NOTE [hessian composition]: torch.func.hessian is jacfwd(jacrev(f)); under an
    # outer grad it fails to compile on torch 2.13 (fake-tensor error), while
    # jacrev(grad(f)) compiles and is exact, so we use reverse-over-reverse.
    h = jacrev(grad(scalar_output(api, f, False), argnums=argnums), argnums=argnums)

    def input_hessian_fn(*args: Any) -> Any:
        return map_samples(api, h, args, argnums=argnums, chunk_size=chunk_size, randomness=randomness)

    return input_hessian_fn


def hvp(
    f: PerSampleFn,
    /,
    *,
    argnums: int = 1,
    chunk_size: int | None = None,
    randomness: str = "error",
) -> Callable[..., Any]:
    """Per-sample Hessian-vector product of a scalar-per-sample ``f``, without forming H.

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
    _checks.check_callable(api, f)
    _checks.check_options(api, argnums=argnums, chunk_size=chunk_size, randomness=randomness)
    g = grad(scalar_output(api, f, False), argnums=argnums)

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
        return map_samples(
            api, one, args_and_v, argnums=argnums, chunk_size=chunk_size,
            randomness=randomness, also=(len(args_and_v) - 1,),
        )

    return hvp_fn


def laplacian(
    f: PerSampleFn,
    /,
    *,
    argnums: int = 1,
    chunk_size: int | None = None,
    randomness: str = "error",
) -> Callable[..., Any]:
    """Per-sample Laplacian (trace of the input Hessian) of a scalar-per-sample ``f``.

    Returns:
      A function ``(params, X) -> [B]``.

    Example:
      >>> f = lambda p, x: (p["w"] * x**2).sum()
      >>> laplacian(f)({"w": torch.ones(3)}, torch.zeros(2, 3))
      tensor([6., 6.])
    """
    h = input_hessian(f, argnums=argnums, chunk_size=chunk_size, randomness=randomness)

    def laplacian_fn(*args: Any) -> Any:
        return _trace(h(*args), args[argnums])

    return laplacian_fn


def divergence(
    f: PerSampleFn,
    /,
    *,
    argnums: int = 1,
    mode: str = "auto",
    chunk_size: int | None = None,
    randomness: str = "error",
) -> Callable[..., Any]:
    """Per-sample divergence (trace of the input Jacobian) of a vector field ``f``.

    Args:
      f: ``f(params, x) -> out`` whose per-sample output is shaped like ``x``.
      mode, argnums, chunk_size, randomness: as in :func:`input_jacobian`.

    Returns:
      A function ``(params, X) -> [B]``.

    Example:
      >>> f = lambda p, x: p["a"] * x                # [3] -> [3]
      >>> divergence(f)({"a": torch.tensor(2.0)}, torch.zeros(4, 3))
      tensor([6., 6., 6., 6.])
    """
    api = "divergence"
    _checks.check_callable(api, f)
    jac = input_jacobian(
        same_shape_output(api, f, argnums), argnums=argnums, mode=mode,
        chunk_size=chunk_size, randomness=randomness,
    )

    def divergence_fn(*args: Any) -> Any:
        return _trace(jac(*args), args[argnums])

    return divergence_fn


def _trace(square: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``[B, *x_shape, *x_shape] -> [B]``: the trace of each sample's square block."""
    n = math.prod(x.shape[1:])
    return square.reshape(x.shape[0], n, n).diagonal(dim1=1, dim2=2).sum(-1)


def _fewer_inputs(f: Callable[..., Any], args: tuple[Any, ...], argnums: int, has_aux: bool) -> bool:
    """True when one sample of X has fewer elements than f's per-sample output."""
    return args[argnums][0].numel() < math.prod(output_shape(f, args, argnums, has_aux))


def output_shape(f: Callable[..., Any], args: tuple[Any, ...], argnums: int, has_aux: bool = False) -> torch.Size:
    """The per-sample output shape of ``f``, from one evaluation on the first sample."""
    one = list(args)
    one[argnums] = args[argnums][0]
    with torch.no_grad():
        out = f(*one)
    return (out[0] if has_aux else out).shape
