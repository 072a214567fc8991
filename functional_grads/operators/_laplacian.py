"""Second-order operators ``sum_ij A_ij d2f/dxi dxj`` (the Laplacian and its weighted,
sub-space and stochastic forms) without forming the ``[B, D, D]`` Hessian.

Every method reduces the operator to directions: ``tr(A H) = sum_k w_k v_k^T H v_k`` with
``(v_k, w_k)`` the basis vectors of ``dims`` and unit weights (the Laplacian), or the
eigenvectors and eigenvalues of ``A``. Exact methods sum over all directions; stochastic
ones over random probes (Hutchinson) or a random subset of directions (STDE).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import torch
from torch import Tensor
from torch.func import jvp, vmap
from torch.overrides import TorchFunctionMode

from .. import _checks, _random
from .._constants import autograd_constants
from .._per_sample import INNER_RANDOMNESS, check_in_dims, component_output, map_samples
from .._typing import InDims, LaplacianMethod, PerSampleFn, Probe, Randomness, choices
from ._hessian import input_hessian
from ._taylor import Directional

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
        (the trace of the full ``[B, D, D]`` Hessian), or ``"auto"`` (NOTE [laplacian
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
    _checks.check_callable(api, f)
    _checks.check_options(api, argnums=argnums, chunk_size=chunk_size, randomness=randomness)
    check_in_dims(api, in_dims, argnums)
    _checks.check_choice(api, "method", method, choices(LaplacianMethod))
    _checks.check_number(api, "num_samples", num_samples, low=1, integer=True)
    _checks.check_choice(api, "probe", probe, _random.PROBES)
    if weights is not None and not isinstance(weights, Tensor):
        raise TypeError(f"{api}: weights must be a tensor [K, K] (K = len(dims)), got {type(weights).__name__}.")
    field = component_output(api, f)
    options: dict[str, Any] = dict(argnums=argnums, in_dims=in_dims, chunk_size=chunk_size, randomness=randomness)
    methods: dict[str, _Method] = {
        "forward": _Forward(Directional(api, field, **options)),
        "taylor": _Taylor(api, field, **options),
        "hessian": _HessianTrace(input_hessian(f, **options), argnums),
    }

    def run(args: tuple[Any, ...], generator: torch.Generator | None) -> tuple[Any, Any, Tensor]:
        X = _checks.check_batch(api, args, argnums)
        V, w = _directions(api, X, dims, weights, span=bundle)
        chosen = _auto() if method == "auto" else method
        if chosen in _STOCHASTIC:
            V, w = _draw(chosen, X, V, w, num_samples, probe, generator)
        value, tangents, op = methods["forward" if chosen in _STOCHASTIC else chosen](args, V, w)
        if not bundle:
            return None, None, op
        D = X[0].numel()  # the last D directions are the basis: their tangents are the gradient
        grads = tangents[-D:].movedim(0, -1)
        return value, grads.reshape(*grads.shape[:-1], *X.shape[1:]), op

    return run


class _Method(Protocol):
    """An exact method: ``(args, V, w) -> (value, tangents or None, sum_k w_k v_k^T H v_k)``
    for directions ``V [K, D]`` and weights ``w [K]`` (``_Forward`` also takes them per
    sample, ``[B, K, D]`` and ``[B, K]``: the stochastic methods' draws);
    ``value [B, *out]``, ``tangents [K, B, *out]`` (``v_k . grad f``), the operator ``[B, *out]``."""

    def __call__(self, args: tuple[Any, ...], V: Tensor, w: Tensor) -> tuple[Any, Any, Tensor]: ...


class _Forward:
    """Second-order Taylor mode through f's graph (the forward Laplacian, NOTE [Taylor engine])."""

    def __init__(self, directional: Directional):
        self.directional = directional

    def __call__(self, args: tuple[Any, ...], V: Tensor, w: Tensor) -> tuple[Any, Any, Tensor]:
        value, (tangents,), top = self.directional(args, V, w, 2)
        return value, tangents, 2 * top


class _Taylor:
    """Second-order forward mode by nested ``jvp`` along each direction, per sample."""

    def __init__(self, api: str, f: Callable[..., Tensor], *, argnums: int, in_dims: InDims, chunk_size: int | None,
                 randomness: str):
        self.api, self.f, self.argnums, self.in_dims = api, f, argnums, in_dims
        self.chunk_size, self.randomness = chunk_size, randomness

    def __call__(self, args: tuple[Any, ...], V: Tensor, w: Tensor) -> tuple[Any, Any, Tensor]:
        f, argnums = self.f, self.argnums

        def one(*a: Any) -> Tensor:
            x, fx = a[argnums], _at(autograd_constants(f), list(a), argnums)  # NOTE [autograd's constants]

            def second(v: Tensor) -> Tensor:
                v = v.reshape(x.shape)
                return jvp(lambda y: jvp(fx, (y,), (v,))[1], (x,), (v,))[1]

            with _RefuseWrongSecondOrderJvp():
                return torch.tensordot(w, vmap(second, randomness=INNER_RANDOMNESS)(V), 1)

        op = map_samples(self.api, one, args, argnums=argnums, chunk_size=self.chunk_size,
                         randomness=self.randomness, in_dims=self.in_dims)
        return None, None, op


class _HessianTrace:
    """The trace of the full Hessian ``[B, *out, D, D]`` against the directions."""

    def __init__(self, hessian: Callable[..., Tensor], argnums: int):
        self.hessian, self.argnums = hessian, argnums

    def __call__(self, args: tuple[Any, ...], V: Tensor, w: Tensor) -> tuple[Any, Any, Tensor]:
        H, D, n = self.hessian(*args), V.shape[1], args[self.argnums].ndim - 1  # V is [K, D]
        H = H.reshape(*H.shape[:H.ndim - 2 * n], D, D)  # [B, *out, *x_shape, *x_shape] -> [B, *out, D, D]
        return None, None, torch.einsum("b...ij,ki,kj,k->b...", H, V, V, w)  # pragma: no mutate (upper-case labels agree)


class _RefuseWrongSecondOrderJvp(TorchFunctionMode):
    # NOTE [nested jvp of norms]: torch's forward-mode rules for the normalisation ops drop
    # a second-order term when differentiated again, so jvp(jvp(layer_norm)) is silently
    # wrong (pytorch/pytorch#196700, #196699, umbrella #198017; reproduced on torch 2.13).
    # Forward-over-reverse is right, so method="taylor" refuses these ops and points there.
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in _NORMS:
            raise ValueError(
                f"laplacian(method='taylor'): f calls {getattr(func, '__name__', func)}, whose nested "
                "forward-mode derivative is wrong in torch (pytorch/pytorch#196700); use "
                "method='forward' (forward-over-reverse), which is exact here.")
        return func(*args, **(kwargs or {}))


_NORMS = {torch.nn.functional.layer_norm, torch.nn.functional.batch_norm, torch.nn.functional.group_norm,
          torch.nn.functional.instance_norm, torch.layer_norm, torch.batch_norm, torch.group_norm,
          torch.instance_norm}


def _at(f: Callable[..., Tensor], args: list[Any], argnums: int) -> Callable[[Tensor], Tensor]:
    def fx(y: Tensor) -> Tensor:
        a = list(args)
        a[argnums] = y
        return f(*a)

    return fx


def _directions(api: str, X: Tensor, dims: Any, weights: Tensor | None, *, span: bool) -> tuple[Tensor, Tensor]:
    """``(V [K', D], w [K'])`` with ``tr(A H) = sum_k w_k v_k^T H v_k``; ``span``: the last
    ``D`` rows of ``V`` are the identity (extra directions get weight 0), so that the
    tangents along them are the gradient."""
    D = X[0].numel()
    idx = list(range(D)) if dims is None else _checks.check_dims(api, dims, D)
    eye = torch.eye(D, dtype=X.dtype, device=X.device)  # pragma: no mutate (the tests run on one device)
    mask = X.new_zeros(D)
    mask[idx] = 1.0
    if weights is None:
        return (eye, mask) if span else (eye[idx], X.new_ones(len(idx)))
    K = len(idx)
    if weights.shape != (K, K):
        raise ValueError(f"{api}: weights must be [K, K] with K = len(dims) = {K}, got {_checks.fmt(weights.shape)}.")
    A = weights.to(X.dtype).to(X.device)  # pragma: no mutate (the tests run on one device)
    if not bool(torch.isfinite(A).all()):
        raise ValueError(f"{api}: weights holds NaN or Inf; every entry must be finite.")
    if not torch.allclose(A, A.T):
        raise ValueError(f"{api}: weights must be symmetric (d2f/dxi dxj is): use (A + A.T) / 2.")
    # NOTE [weighted directions]: tr(A H) = sum_k l_k^T H l_k - c tr(H) with L L^T = A + c I
    # (Cholesky; c = 0 when A is positive definite, else a shift that makes it so). The
    # directions l_k depend smoothly on A, so the gradient w.r.t. a learned A is exact;
    # an eigendecomposition's backward is NaN at repeated eigenvalues (e.g. A = I).
    # Indefinite or singular A costs K more directions (the basis, weighted -c).
    detached = A.detach()
    lowest = float(torch.linalg.eigvalsh(detached).min())
    scale = float(detached.abs().max())
    c = 0.0 if lowest > 1e-6 * scale else max(scale, 1.0) - lowest  # pragma: no mutate (any c making A + cI positive definite is exact)
    L = torch.linalg.cholesky(A + c * torch.eye(K, dtype=A.dtype, device=A.device))  # pragma: no mutate (as above)
    V, w = L.T @ eye[idx], X.new_ones(K)
    if span:
        return torch.cat([V, eye]), torch.cat([w, -c * mask])
    if c:
        V, w = torch.cat([V, eye[idx]]), torch.cat([w, X.new_full((K,), -c)])
    return V, w


def _draw(method: str, X: Tensor, V: Tensor, w: Tensor, n: int, probe: str,
          generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Per-sample random directions ``[B, n, D]`` and weights ``[B, n]`` with the same expected operator."""
    if method == "hutchinson":  # probes over the positive and the negative part of sum_k w_k v_k v_k^T
        B = X.shape[0]
        # pragma lines: sign is +-1, so * and / agree, and no weight here is 0
        parts = [(sign, w * sign > 0) for sign in (1.0, -1.0) if bool((w * sign > 0).any())]  # pragma: no mutate
        Vs = [_random.probes(X, (B, n, int(m.sum())), probe, generator=generator)  # type: ignore[arg-type]
              @ ((w[m] * sign).sqrt()[:, None] * V[m]) for sign, m in parts]  # pragma: no mutate
        ws = [X.new_full((B, n), sign / n) for sign, _ in parts]
        return torch.cat(Vs, 1), torch.cat(ws, 1)
    return subset(X, V, w, n, generator)


def subset(X: Tensor, V: Tensor, w: Tensor, n: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """STDE's draw: ``n`` of the ``K`` directions per sample, uniformly without replacement,
    weighted ``K / n``: ``[B, n, D]``, ``[B, n]``."""
    B, K = X.shape[0], V.shape[0]
    keys = _random.uniform(X, (B, K), 0.0, 1.0, generator)  # pragma: no mutate (any range: only the keys' order counts)
    pick = keys.argsort(1)[:, : min(n, K)]  # a uniformly random subset per sample
    return V[pick], w[pick] * (K / pick.shape[1])


def _auto() -> str:
    # NOTE [laplacian auto]: the Taylor engine (the forward Laplacian of any traced f) is the
    # fastest exact method at every D measured (benchmarks/operators.py), eagerly and in
    # compile=True's trace. Under torch.compile (dynamo) it cannot trace, and the fallback's
    # jvp through functional_call hits "ZeroTensors are immutable" (pytorch/pytorch#177261,
    # as NOTE [jacfwd under compile]), so "auto" takes the Hessian trace there, which compiles.
    return "hessian" if torch.compiler.is_compiling() else "forward"  # pragma: no mutate (mutation runs do not compile)
