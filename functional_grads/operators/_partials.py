"""Partial derivatives of any order, mixed ones and the biharmonic, from Taylor coefficients
along directions (NOTE [partials from directions])."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from .. import _checks
from .._per_sample import component_output, per_sample_options
from .._typing import BiharmonicMethod, InDims, PerSampleFn, Randomness, choices
from . import _directions
from ._directional import Directional

Index = Sequence[int]


def partials(
    f: PerSampleFn,
    wanted: Mapping[str, Index],
    /,
    *,
    argnums: int = 1,
    in_dims: InDims = None,
    chunk_size: int | None = None,
    randomness: Randomness = "error",
) -> Callable[..., dict[str, Tensor]]:
    """Several partial derivatives of ``f`` in one pass, by name (PDE residuals).

    Args:
      f: ``f(params, x) -> []`` (or ``[1]``), or ``[*out]`` (per component).
      wanted: name -> multi-index: the coordinates (of the flattened sample) to differentiate
        by, repeated for higher order: ``()`` the value, ``(1,)`` ``df/dx1``, ``(1, 1, 1, 1)``
        ``d4f/dx1^4``, ``(0, 1)`` ``d2f/dx0 dx1``. The order of an index does not matter.
      argnums, in_dims, chunk_size, randomness: as in :func:`input_grad`.

    Returns:
      A function ``(params, X) -> {name: [B] or [B, *out]}``. Every partial comes from one
      propagation of Taylor coefficients along the union of the directions they need
      (NOTE [partials from directions]).

    Example:
      >>> f = lambda p, x: x[0] ** 3 * x[1]                   # u(t, x) = t^3 x
      >>> d = partials(f, {"u": (), "u_t": (0,), "u_ttx": (0, 0, 1)})(None, torch.ones(2, 2))
      >>> d["u"], d["u_t"], d["u_ttx"]
      (tensor([1., 1.]), tensor([3., 3.]), tensor([6., 6.]))
    """
    api = "partials"
    directional = _directional(api, f, argnums, in_dims, chunk_size, randomness)
    if not isinstance(wanted, Mapping) or not wanted:
        raise TypeError(f"{api}: wanted must be a non-empty dict name -> multi-index, e.g. "
                        f"{{'u_xx': (1, 1)}}; got {type(wanted).__name__}.")
    indices = {name: _check_index(api, index) for name, index in wanted.items()}

    def partials_fn(*args: Any) -> dict[str, Tensor]:
        X = _checks.check_batch(api, args, argnums)
        D = X[0].numel()
        for name, index in indices.items():
            _check_range(api, name, index, D)
        order = max(1, *(len(i) for i in indices.values()))  # pragma: no mutate (values come at any order)
        plan = {name: _directions.polarize(index) for name, index in indices.items() if index}
        directions = sorted({v for terms in plan.values() for v in terms}) or [((0, 1),)]  # pragma: no mutate (values only: any one)
        V = _directions.vectors(directions, D, X)
        value, lower, top = directional(args, V, None, order)
        coefficients = [*lower, top]  # [K, B, *out] for orders 1..order
        row = {v: k for k, v in enumerate(directions)}
        out = {}
        for name, index in indices.items():
            if not index:
                out[name] = value
                continue
            terms = plan[name]
            w = X.new_tensor([float(terms[v]) for v in terms]) * math.factorial(len(index))
            c = coefficients[len(index) - 1][[row[v] for v in terms]]
            out[name] = torch.tensordot(w, c, 1)
        return out

    return _checks.positional(api, partials_fn)


def partial_derivative(
    f: PerSampleFn,
    index: Index,
    /,
    *,
    argnums: int = 1,
    in_dims: InDims = None,
    chunk_size: int | None = None,
    randomness: Randomness = "error",
) -> Callable[..., Tensor]:
    """One partial derivative of any order: ``index=(0, 0, 0)`` is ``d3f/dx0^3``, ``(0, 1)``
    is ``d2f/dx0 dx1`` (coordinates of the flattened sample, repeated for higher order).

    Args:
      f: ``f(params, x) -> []`` (or ``[1]``), or ``[*out]`` (per component).
      index: the multi-index; ``()`` is ``f`` itself.
      argnums, in_dims, chunk_size, randomness: as in :func:`input_grad`.

    Returns:
      A function ``(params, X) -> [B]`` (``[B, *out]`` for a vector output), by collapsed
      Taylor mode of order ``len(index)`` (NOTE [partials from directions]).

    Example:
      >>> f = lambda p, x: torch.sin(x[0]) * x[1] ** 2
      >>> partial_derivative(f, (0, 0, 0))(None, torch.zeros(1, 2) + 1.0)   # -cos(1) * 1
      tensor([-0.5403])
    """
    api = "partial_derivative"
    directional = _directional(api, f, argnums, in_dims, chunk_size, randomness)
    index = _check_index(api, index)
    terms = _directions.polarize(index) if index else {((0, 1),): Fraction(0)}  # pragma: no mutate (the value: any one direction)

    def partial_derivative_fn(*args: Any) -> Tensor:
        X = _checks.check_batch(api, args, argnums)
        _check_range(api, "index", index, X[0].numel())
        V = _directions.vectors(list(terms), X[0].numel(), X)
        w = X.new_tensor([float(c) for c in terms.values()]) * math.factorial(len(index))
        value, _, top = directional(args, V, w, max(len(index), 1))
        return top if index else value

    return _checks.positional(api, partial_derivative_fn)


def biharmonic(
    f: PerSampleFn,
    /,
    *,
    method: BiharmonicMethod = "auto",
    dims: Sequence[int] | None = None,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    argnums: int = 1,
    in_dims: InDims = None,
    chunk_size: int | None = None,
    randomness: Randomness = "error",
) -> Callable[..., Tensor]:
    """Per-sample biharmonic ``lap lap f = sum_ij d4f/dxi^2 dxj^2`` (plates, Cahn-Hilliard).

    Args:
      f: ``f(params, x) -> []`` (or ``[1]``), or ``[*out]`` (per component).
      method: ``"forward"`` (exact: collapsed fourth-order Taylor mode along the ``K^2``
        directions ``e_i`` and ``e_i +- e_j``, NOTE [partials from directions]; ``"auto"``
        is this), or ``"stde"`` (unbiased: ``num_samples`` of those directions per sample,
        drawn without replacement and reweighted; cheap in high dimension).
      dims: the coordinates (of the flattened sample) it acts on; default all.
      num_samples, generator: ``"stde"``'s directions per sample and their generator.
      argnums, in_dims, chunk_size, randomness: as in :func:`input_grad`.

    Returns:
      A function ``(params, X) -> [B]`` (``[B, *out]`` for a vector output).

    Example:
      >>> f = lambda p, x: (x ** 2).sum() ** 2                # |x|^4: lap lap = 8 D (D + 2)
      >>> biharmonic(f)(None, torch.zeros(1, 3))
      tensor([120.])
    """
    api = "biharmonic"
    directional = _directional(api, f, argnums, in_dims, chunk_size, randomness)
    _checks.check_choice(api, "method", method, choices(BiharmonicMethod))
    _checks.check_number(api, "num_samples", num_samples, low=1, integer=True)

    def biharmonic_fn(*args: Any) -> Tensor:
        X = _checks.check_batch(api, args, argnums)
        D = X[0].numel()
        idx = list(range(D)) if dims is None else _checks.check_dims(api, dims, D)
        V, w = _directions.biharmonic_directions(idx, D, X)
        if method == "stde":
            V, w = _directions.subset(X, V, w, num_samples, generator)
        return directional(args, V, w, 4)[2]

    return _checks.positional(api, biharmonic_fn)


def _directional(api: str, f: PerSampleFn, argnums: int, in_dims: InDims, chunk_size: int | None,
                 randomness: str) -> Directional:
    """The options every operator here shares, checked, and its Taylor coefficients of ``f``."""
    options = per_sample_options(api, f, argnums=argnums, in_dims=in_dims, chunk_size=chunk_size,
                                 randomness=randomness)
    return Directional(api, component_output(api, f), **options._asdict())


def _check_index(api: str, index: Any) -> tuple[int, ...]:
    if not isinstance(index, (tuple, list)) or any(not isinstance(i, int) or isinstance(i, bool) or i < 0
                                                    for i in index):
        raise TypeError(f"{api}: a multi-index must be a tuple of coordinates (non-negative ints), e.g. (0, 1) "
                        f"for d2f/dx0 dx1; got {index!r}.")
    return tuple(index)


def _check_range(api: str, name: str, index: tuple[int, ...], D: int) -> None:
    if any(i >= D for i in index):
        raise ValueError(f"{api}: {name} = {index!r} names a coordinate outside the flattened sample's {D}.")
