"""Second-order operators ``sum_ij A_ij d2f/dxi dxj`` (the Laplacian and its weighted,
sub-space and stochastic forms) without forming the ``[B, D, D]`` Hessian.

Every method reduces the operator to directions: ``tr(A H) = sum_k w_k v_k^T H v_k`` with
``(v_k, w_k)`` the basis vectors of ``dims`` and unit weights (the Laplacian), or the
directions of NOTE [weighted directions] (``_directions``). Exact methods (``_methods``) sum
over all directions; stochastic ones over random probes (Hutchinson) or a random subset of
directions (STDE), run by the forward method.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .. import _checks, _random
from .._per_sample import component_output, per_sample_options
from .._typing import InDims, LaplacianMethod, PerSampleFn, Probe, Randomness, choices
from . import _directions, _strategy
from ._hessian import input_hessian
from ._methods import Forward, HessianTrace, Method, Taylor
from ._directional import Directional

_STOCHASTIC = ("hutchinson", "stde")


def laplacian(
    f: PerSampleFn,
    /,
    *,
    method: LaplacianMethod = "auto",
    dims: Sequence[int] | None = None,
    weights: Tensor | None = None,
    num_samples: int = 1,
    probe: Probe = "rademacher",
    generator: torch.Generator | None = None,
    argnums: int = 1,
    in_dims: InDims = None,
    chunk_size: int | None = None,
    randomness: Randomness = "error",
) -> Callable[..., Tensor]:
    """Per-sample Laplacian of ``f`` (of each output component), or ``sum_ij A_ij d2f/dxi dxj``.

    Args:
      f: ``f(params, x) -> []`` (or ``[1]``), or ``[*out]`` (a vector field: the operator per
        component, e.g. the vector Laplacian of a velocity).
      method: exact: ``"forward"`` (collapsed Taylor mode, the forward Laplacian, for any
        ``f``: value, tangents and Laplacian pushed through the ops ``f`` runs in one batched
        pass, NOTE [Taylor engine]; forward-over-reverse per direction where ``f`` cannot be
        traced), ``"taylor"``
        (second-order forward mode, jvp of jvp, along each direction), ``"hessian"``
        (the trace of the full ``[B, D, D]`` Hessian), or ``"auto"`` (NOTE [operator
        auto]). Stochastic, unbiased: ``"hutchinson"`` (mean of ``v^T A'' v`` over
        ``num_samples`` probes, variance ``2 sum_{i!=j} H_ij^2 / num_samples`` for
        Rademacher probes), ``"stde"`` (the stochastic Taylor derivative estimator's
        coordinate sampling: ``num_samples`` directions drawn without replacement and
        scaled by ``K / num_samples``, each exact; variance 0 when the diagonal is
        constant; the cheap one in high dimension). ``"taylor"`` refuses functions
        that call normalisation ops (NOTE [nested jvp of norms]).
      dims: the input coordinates (of the flattened sample) the operator acts on, e.g.
        ``dims=range(1, D)`` for the spatial Laplacian of ``u(t, x)``. Default: all.
      weights: ``A [K, K]`` symmetric (``K = len(dims)``): the weighted operator
        ``sum_ij A_ij d2f/dxi dxj`` (diffusion tensors, Fokker-Planck, Black-Scholes).
        Any symmetric ``A`` (NOTE [weighted directions]); a learned ``A`` gets its exact
        gradient.
      num_samples, probe, generator: the stochastic methods' probes per sample, their
        kind (``"rademacher"``, ``"gaussian"``, ``"sphere"``) and generator. A squared
        residual built from one estimate is biased: multiply two independent estimates.
      argnums, in_dims, chunk_size, randomness: as in :func:`input_grad`.

    Returns:
      A function ``(params, X) -> [B]`` (``[B, *out]`` for a vector output).

    Example:
      >>> f = lambda p, x: (p["w"] * x**2).sum()
      >>> laplacian(f)({"w": torch.ones(3)}, torch.zeros(2, 3))
      tensor([6., 6.])
      >>> A = torch.tensor([[4.0, 0.0], [0.0, 1.0]])   # sum_ij A_ij d2f/dxi dxj over x0, x1
      >>> laplacian(f, dims=[0, 1], weights=A)({"w": torch.ones(3)}, torch.zeros(1, 3))
      tensor([10.])
    """
    api = "laplacian"
    op = _operator(api, f, method, dims, weights, num_samples, probe, argnums, in_dims, chunk_size, randomness)
    return _checks.positional(api, lambda *args: op(args, generator)[2])


def derivatives(
    f: PerSampleFn,
    /,
    *,
    dims: Sequence[int] | None = None,
    weights: Tensor | None = None,
    argnums: int = 1,
    in_dims: InDims = None,
    chunk_size: int | None = None,
    randomness: Randomness = "error",
) -> Callable[..., tuple[Tensor, Tensor, Tensor]]:
    """Value, input gradient and Laplacian in one pass, for PDE residuals.

    ``u_t - nu * lap u + u * u_x`` needs all three; this runs the network once (collapsed
    Taylor mode, NOTE [Taylor engine]) instead of three times. For other partials (third and
    fourth order, mixed) in one pass, see :func:`partials`.

    Args:
      f: ``f(params, x) -> []`` (or ``[1]``), or ``[*out]`` (per component).
      dims, weights: the second-order operator, as in :func:`laplacian`.
      argnums, in_dims, chunk_size, randomness: as in :func:`input_grad`.

    Returns:
      A function ``(params, X) -> (values [B], grads [B, *x_shape], laplacian [B])``; for a
      vector output ``(values [B, *out], Jacobian [B, *out, *x_shape], laplacian [B, *out])``.

    Example:
      >>> f = lambda p, x: (p["w"] * x**2).sum()
      >>> u, du, lap = derivatives(f)({"w": torch.ones(2)}, torch.ones(1, 2))
      >>> u, du, lap
      (tensor([2.]), tensor([[2., 2.]]), tensor([4.]))
    """
    api = "derivatives"
    unused = 1, "rademacher"  # pragma: no mutate (num_samples and probe: "forward" draws nothing)
    op = _operator(api, f, "forward", dims, weights, *unused, argnums, in_dims, chunk_size, randomness, bundle=True)
    return _checks.positional(api, lambda *args: op(args, None))


def _operator(
    api: str, f: PerSampleFn, method: Any, dims: Any, weights: Any, num_samples: Any, probe: Any,
    argnums: int, in_dims: InDims, chunk_size: int | None, randomness: Randomness, bundle: bool = False,
) -> Callable[[tuple[Any, ...], torch.Generator | None], tuple[Any, Any, Tensor]]:
    """``(args, generator) -> (values or None, grads or None, operator [B, *out])``."""
    options = per_sample_options(api, f, argnums=argnums, in_dims=in_dims, chunk_size=chunk_size,
                                 randomness=randomness)._asdict()
    _checks.check_choice(api, "method", method, choices(LaplacianMethod))
    _checks.check_number(api, "num_samples", num_samples, low=1, integer=True)
    _checks.check_choice(api, "probe", probe, _random.PROBES)
    if weights is not None and not isinstance(weights, Tensor):
        raise TypeError(f"{api}: weights must be a tensor [K, K] (K = len(dims)), got {type(weights).__name__}.")
    field = component_output(api, f)
    methods: dict[str, Method] = {
        "forward": Forward(Directional(api, field, **options)),
        "taylor": Taylor(api, field, **options),
        "hessian": HessianTrace(input_hessian(f, **options), argnums),
    }

    def run(args: tuple[Any, ...], generator: torch.Generator | None) -> tuple[Any, Any, Tensor]:
        X = _checks.check_batch(api, args, argnums)
        V, w = _directions.operator_directions(api, X, dims, weights, span=bundle)
        chosen = _strategy.method(api, method)
        if chosen in _STOCHASTIC:
            V, w = _directions.draw(chosen, X, V, w, num_samples, probe, generator)
        value, tangents, op = methods["forward" if chosen in _STOCHASTIC else chosen](args, V, w)
        if not bundle:
            return None, None, op
        D = X[0].numel()  # the last D directions are the basis: their tangents are the gradient
        grads = tangents[-D:].movedim(0, -1)
        return value, grads.reshape(*grads.shape[:-1], *X.shape[1:]), op

    return run
