"""Second-order operators ``sum_ij A_ij d2f/dxi dxj`` (the Laplacian and its weighted,
sub-space and stochastic forms) without forming the ``[B, D, D]`` Hessian.

Every method reduces the operator to directions: ``tr(A H) = sum_k w_k v_k^T H v_k`` with
``(v_k, w_k)`` the basis vectors of ``dims`` and unit weights (the Laplacian), or the
eigenvectors and eigenvalues of ``A``. Exact methods sum over all directions; stochastic
ones over random probes (Hutchinson) or a random subset of directions (STDE).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torch.func import grad, grad_and_value, jvp, vmap
from torch.overrides import TorchFunctionMode

from .. import _checks, _random
from .._context import compiling
from .._per_sample import check_in_dims, inner_randomness, map_samples, scalar_output
from .._typing import InDims, LaplacianMethod, PerSampleFn, Probe, Randomness, choices
from . import _forward_laplacian
from ._hessian import input_hessian

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
    """Per-sample Laplacian of a scalar-per-sample ``f``, or ``sum_ij A_ij d2f/dxi dxj``.

    Args:
      f: ``f(params, x) -> []`` (or ``[1]``).
      method: exact: ``"forward"`` (the forward Laplacian: for an ``nn.Sequential`` MLP from
        ``functionalize``, value, tangents and Laplacian in one batched forward pass; for
        any other ``f``, forward-over-reverse along each direction), ``"taylor"``
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
      A function ``(params, X) -> [B]``.

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
    return lambda *args: op(args, generator)[2]


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

    ``u_t - nu * lap u + u * u_x`` needs all three; this runs the network once (the
    forward Laplacian for MLPs, forward-over-reverse otherwise) instead of three times.

    Args:
      dims, weights: the second-order operator, as in :func:`laplacian`.
      argnums, in_dims, chunk_size, randomness: as in :func:`input_grad`.

    Returns:
      A function ``(params, X) -> (values [B], grads [B, *x_shape], laplacian [B])``.

    Example:
      >>> f = lambda p, x: (p["w"] * x**2).sum()
      >>> u, du, lap = derivatives(f)({"w": torch.ones(2)}, torch.ones(1, 2))
      >>> u, du, lap
      (tensor([2.]), tensor([[2., 2.]]), tensor([4.]))
    """
    api = "derivatives"
    op = _operator(api, f, "forward", dims, weights, 1, "rademacher", argnums, in_dims, chunk_size, randomness,
                   bundle=True)
    return lambda *args: op(args, None)


def _operator(
    api: str, f: PerSampleFn, method: Any, dims: Any, weights: Any, num_samples: Any, probe: Any,
    argnums: int, in_dims: InDims, chunk_size: int | None, randomness: Randomness, bundle: bool = False,
) -> Callable[[tuple[Any, ...], torch.Generator | None], tuple[Any, Any, Tensor]]:
    """``(args, generator) -> (values or None, grads or None, operator [B])``."""
    _checks.check_callable(api, f)
    _checks.check_options(api, argnums=argnums, chunk_size=chunk_size, randomness=randomness)
    check_in_dims(api, in_dims, argnums)
    _checks.check_choice(api, "method", method, choices(LaplacianMethod))
    _checks.check_number(api, "num_samples", num_samples, low=1, integer=True)
    _checks.check_choice(api, "probe", probe, _random.PROBES)
    if weights is not None and not isinstance(weights, Tensor):
        raise TypeError(f"{api}: weights must be a tensor [K, K] (K = len(dims)), got {type(weights).__name__}.")
    scalar = scalar_output(api, f)

    def run(args: tuple[Any, ...], generator: torch.Generator | None) -> tuple[Any, Any, Tensor]:
        X = _checks.check_batch(api, args, argnums)
        V, w = _directions(api, X, dims, weights, span=bundle)
        fast = _forward_laplacian.supports(f, X, argnums) and len(args) == 2
        chosen = _auto(fast, X) if method == "auto" else method
        if chosen in _STOCHASTIC:
            V, w = _draw(chosen, X, V, w, num_samples, probe, generator)
        if fast and chosen != "hessian" and chosen != "taylor":
            value, J, op = _forward_laplacian.forward_laplacian(api, f, args[0], X, V, w)  # type: ignore[arg-type]
            grads = J[:, -V.shape[-1]:].reshape(X.shape) if bundle else None
            return value, grads, op
        if chosen == "hessian":
            H = input_hessian(f, argnums=argnums, in_dims=in_dims, chunk_size=chunk_size, randomness=randomness)(*args)
            H = H.reshape(X.shape[0], V.shape[-1], V.shape[-1])
            return None, None, torch.einsum("bij,ki,kj,k->b", H, V, V, w)
        per_sample = V.ndim == 3  # stochastic draws differ per sample
        inner = inner_randomness(randomness)
        one = _bundle_one if bundle else (_taylor_one if chosen == "taylor" else _hvp_one)

        def fn(*a: Any) -> Any:
            *rest, Vs, ws = a if per_sample else (*a, V, w)
            return one(scalar, list(rest), argnums, Vs, ws, inner)

        out = map_samples(api, fn, args, argnums=argnums, chunk_size=chunk_size, randomness=randomness,
                          in_dims=in_dims, extra=(V, w) if per_sample else ())
        return out if bundle else (None, None, out)

    return run


def _hvp_one(f: Callable[..., Tensor], args: list[Any], argnums: int, V: Tensor, w: Tensor, randomness: str) -> Tensor:
    """Forward-over-reverse: ``sum_k w_k v_k . (H v_k)`` for one sample."""
    x = args[argnums]
    g = grad(_at(f, args, argnums))
    hv = vmap(lambda v: jvp(g, (x,), (v.reshape(x.shape),))[1], randomness=randomness)(V)  # [K, *x_shape]
    return (hv.reshape(V.shape) * V).sum(-1) @ w


def _taylor_one(f: Callable[..., Tensor], args: list[Any], argnums: int, V: Tensor, w: Tensor, randomness: str) -> Tensor:
    """Second-order forward mode (jvp of jvp): ``sum_k w_k v_k^T H v_k`` for one sample."""
    x, fx = args[argnums], _at(f, args, argnums)

    def second(v: Tensor) -> Tensor:
        v = v.reshape(x.shape)
        return jvp(lambda y: jvp(fx, (y,), (v,))[1], (x,), (v,))[1]

    with _RefuseWrongSecondOrderJvp():
        return vmap(second, randomness=randomness)(V) @ w


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


def _bundle_one(f: Callable[..., Tensor], args: list[Any], argnums: int, V: Tensor, w: Tensor,
                randomness: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(value, grad, sum_k w_k v_k^T H v_k)`` for one sample, one forward-over-reverse pass."""
    x = args[argnums]
    gv = grad_and_value(_at(f, args, argnums))
    (g, value), (hv, _) = vmap(lambda v: jvp(gv, (x,), (v.reshape(x.shape),)), randomness=randomness)(V)  # type: ignore[misc]
    return value[0], g[0], (hv.reshape(V.shape) * V).sum(-1) @ w


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
    if dims is None:
        idx = list(range(D))
    else:
        idx = list(dims)
        if not idx or any(not isinstance(i, int) or not 0 <= i < D for i in idx) or len(set(idx)) != len(idx):
            raise ValueError(f"{api}: dims must be distinct ints in [0, {D}) (coordinates of the flattened "
                             f"sample), got {dims!r}.")
    eye = torch.eye(D, dtype=X.dtype, device=X.device)
    mask = X.new_zeros(D)
    mask[idx] = 1.0
    if weights is None:
        return (eye, mask) if span else (eye[idx], X.new_ones(len(idx)))
    K = len(idx)
    if weights.shape != (K, K):
        raise ValueError(f"{api}: weights must be [K, K] with K = len(dims) = {K}, got {_checks.fmt(weights.shape)}.")
    A = weights.to(X.dtype, copy=False).to(X.device)
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
    c = 0.0 if lowest > 1e-6 * scale else max(scale, 1.0) - lowest
    L = torch.linalg.cholesky(A + c * torch.eye(K, dtype=A.dtype, device=A.device))
    V, w = L.T @ eye[idx], X.new_ones(K)
    if span:
        return torch.cat([V, eye]), torch.cat([w, -c * mask])
    if c:
        V, w = torch.cat([V, eye[idx]]), torch.cat([w, X.new_full((K,), -c)])
    return V, w


def _draw(method: str, X: Tensor, V: Tensor, w: Tensor, n: int, probe: str,
          generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Per-sample random directions ``[B, n, D]`` and weights ``[B, n]`` with the same expected operator."""
    B, K = X.shape[0], V.shape[0]
    if method == "hutchinson":  # probes over the positive and the negative part of sum_k w_k v_k v_k^T
        parts = [(sign, w * sign > 0) for sign in (1.0, -1.0) if bool((w * sign > 0).any())]
        Vs = [_random.probes(X, (B, n, int(m.sum())), probe, generator=generator)  # type: ignore[arg-type]
              @ ((w[m] * sign).sqrt()[:, None] * V[m]) for sign, m in parts]
        ws = [X.new_full((B, n), sign / n) for sign, _ in parts]
        return torch.cat(Vs, 1), torch.cat(ws, 1)
    keys = _random.uniform(X, (B, K), 0.0, 1.0, generator)
    pick = keys.argsort(-1)[:, : min(n, K)]  # a uniformly random subset per sample
    return V[pick], w[pick] * (K / pick.shape[1])


def _auto(fast: bool, X: Tensor) -> str:
    # NOTE [laplacian auto]: the forward Laplacian (MLPs from functionalize) is the fastest
    # exact method at every D measured (benchmarks/operators.py) and compiles. For other
    # functions, forward-over-reverse beats the Hessian trace eagerly, but under
    # torch.compile jvp through functional_call hits "ZeroTensors are immutable"
    # (pytorch/pytorch#177261, as NOTE [jacfwd under compile]), so "auto" takes the
    # Hessian trace there, which compiles.
    if fast or not compiling():
        return "forward"
    return "hessian"
