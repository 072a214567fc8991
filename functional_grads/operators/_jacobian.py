"""Per-sample first derivatives of vector functions: the Jacobian and the divergence."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch.func import jacfwd, jacrev

from .. import _checks, _random
from .._constants import autograd_constants
from .._per_sample import INNER_RANDOMNESS, map_samples, output_shape, per_sample_options, same_shape_output
from .._typing import DivergenceMethod, InDims, JacobianMode, PerSampleFn, Probe, Randomness, choices
from . import _strategy
from ._directional import Directional



def input_jacobian(
    f: PerSampleFn,
    /,
    *,
    argnums: int = 1,
    mode: JacobianMode = "auto",
    has_aux: bool = False,
    in_dims: InDims = None,
    chunk_size: int | None = None,
    randomness: Randomness = "error",
) -> Callable[..., Any]:
    """Per-sample Jacobian of ``f`` w.r.t. its batched input.

    Args:
      f: ``f(params, x) -> out`` with any per-sample output shape.
      argnums: position of the batched input ``X`` (default 1).
      mode: ``"rev"`` (one VJP per output), ``"fwd"`` (one JVP per input) or ``"auto"``
        (default): forward mode when the input has fewer elements than the output,
        except under ``torch.compile`` (see NOTE [jacfwd under compile]).
      has_aux, in_dims, chunk_size, randomness: as in :func:`input_grad`.

    Returns:
      A function ``(params, X) -> J [B, *out_shape, *x_shape]`` (``(J, aux)`` with ``has_aux``).

    Example:
      >>> f = lambda p, x: p["A"] @ x                # [3] -> [2]
      >>> input_jacobian(f)({"A": torch.ones(2, 3)}, torch.zeros(5, 3)).shape
      torch.Size([5, 2, 3])
    """
    api = "input_jacobian"
    per_sample_options(api, f, argnums=argnums, in_dims=in_dims, chunk_size=chunk_size, randomness=randomness)
    _checks.check_choice(api, "mode", mode, choices(JacobianMode))

    def checked(*args: Any) -> Any:
        out = f(*args)
        _checks.check_tensor_output(api, _checks.split_aux(api, out, per_sample=True)[0] if has_aux else out)
        return out

    shape_of = output_shape(api, checked, argnums, has_aux, in_dims)

    def input_jacobian_fn(*args: Any) -> Any:
        X = _checks.check_batch(api, args, argnums)
        use_fwd = _strategy.jacobian_mode(mode, X[0].numel(), math.prod(shape_of(*args)) if mode == "auto" else 0) == "fwd"
        jac = (jacfwd(autograd_constants(checked), argnums=argnums, has_aux=has_aux, randomness=INNER_RANDOMNESS) if use_fwd
               else jacrev(checked, argnums=argnums, has_aux=has_aux))
        return map_samples(api, jac, args, argnums=argnums, chunk_size=chunk_size, randomness=randomness,
                           in_dims=in_dims)

    return _checks.positional(api, input_jacobian_fn)


def divergence(
    f: PerSampleFn,
    /,
    *,
    method: DivergenceMethod = "auto",
    dims: Sequence[int] | None = None,
    num_samples: int = 1,
    probe: Probe = "rademacher",
    generator: torch.Generator | None = None,
    argnums: int = 1,
    mode: JacobianMode = "auto",
    in_dims: InDims = None,
    chunk_size: int | None = None,
    randomness: Randomness = "error",
) -> Callable[..., Any]:
    """Per-sample divergence (trace of the input Jacobian) of a vector field ``f``.

    Args:
      f: ``f(params, x) -> out`` whose per-sample output is shaped like ``x`` (or, with
        ``dims``, has ``len(dims)`` elements).
      method: ``"forward"``: first-order Taylor mode along each input direction through the
        ops ``f`` runs (NOTE [Taylor engine]), taking only the diagonal; ``"jacobian"``: the
        trace of :func:`input_jacobian` (``mode`` picks its AD mode); ``"auto"``:
        ``"forward"``, except ``"jacobian"`` under ``torch.compile`` (the dict option, NOTE
        [jacfwd under compile]); ``"hutchinson"``: the
        unbiased mean of ``v^T J v`` over ``num_samples`` probes per sample (variance
        ``sum_{i!=j} (J_ij^2 + J_ij J_ji) / num_samples`` for Rademacher probes), as in
        FFJORD and sliced score matching.
      dims: the input coordinates (of the flattened sample) the divergence is over: output
        ``k`` is differentiated by coordinate ``dims[k]``, e.g. ``dims=[1, 2]`` for the spatial
        divergence ``du/dx + dv/dy`` of ``(u, v)`` of ``(t, x, y)``. Default: all, output
        shaped like ``x``.
      probe, generator: the probes' kind and generator (``"hutchinson"`` only).
      argnums, in_dims, chunk_size, randomness: as in :func:`input_grad`.

    Returns:
      A function ``(params, X) -> [B]``.

    Example:
      >>> f = lambda p, x: p["a"] * x                # [3] -> [3]
      >>> divergence(f)({"a": torch.tensor(2.0)}, torch.zeros(4, 3))
      tensor([6., 6., 6., 6.])
    """
    api = "divergence"
    _checks.check_callable(api, f)
    _checks.check_choice(api, "method", method, choices(DivergenceMethod))
    _checks.check_number(api, "num_samples", num_samples, low=1, integer=True)
    _checks.check_choice(api, "probe", probe, _random.PROBES)
    if dims is not None and (not isinstance(dims, Sequence) or isinstance(dims, str)):
        dims = list(dims)  # a range
    field = same_shape_output(api, f, argnums) if dims is None else _sized_output(api, f, len(dims))
    jac = input_jacobian(field, argnums=argnums, mode=mode, in_dims=in_dims, chunk_size=chunk_size,
                         randomness=randomness)

    directional = Directional(api, field, argnums=argnums, in_dims=in_dims, chunk_size=chunk_size,
                              randomness=randomness)

    def divergence_fn(*args: Any) -> Any:
        X = _checks.check_batch(api, args, argnums)
        B, D = X.shape[0], X[0].numel()
        idx = list(range(D)) if dims is None else _checks.check_dims(api, dims, D)
        chosen = _strategy.method(api, method)
        K = len(idx)
        if chosen == "jacobian":
            J = jac(*args).reshape(B, K, D)
            return J[:, torch.arange(K), idx].sum(1)
        S = torch.eye(D, dtype=X.dtype, device=X.device)[idx]  # [K, D]: the coordinates as directions
        if chosen == "forward":  # K first-order Taylor coefficients through f's graph (NOTE [Taylor engine])
            tangents = directional(args, S, None, 1)[2].reshape(K, B, K)  # d f / d x_idx[k], [K, B, out]
            return tangents.diagonal(dim1=0, dim2=2).sum(-1)
        Z = _random.probes(X, (B, num_samples, K), probe, generator=generator)  # v^T J v, v = Z over the coordinates
        tangents = directional(args, Z @ S, None, 1)[2].reshape(num_samples, B, K)
        return torch.einsum("nbk,bnk->b", tangents, Z) / num_samples

    return _checks.positional(api, divergence_fn)


jacobian_trace = divergence
"""``jacobian_trace(f, ...)``: :func:`divergence` under the name used for score models and
continuous normalising flows (the trace of ``d f / d x`` for ``f: R^D -> R^D``)."""


def _sized_output(api: str, f: Callable[..., Any], size: int) -> Callable[..., Any]:
    """Wrap ``f`` so that its per-sample output must have ``size`` elements (one per coordinate of ``dims``)."""

    def g(*args: Any) -> Any:
        out = _checks.check_tensor_output(api, f(*args))
        if out.numel() != size:
            raise ValueError(
                f"{api}: with dims of {size} coordinates, f's per-sample output must have {size} elements "
                f"(output k is differentiated by coordinate dims[k]), got shape {_checks.fmt(out.shape)}."
            )
        return out

    return g
