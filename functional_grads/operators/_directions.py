"""The directions every operator reduces to, and their random draws: ``sum_k w_k D^n_(v_k) f``
for second-order operators (the basis, weighted ones, Hutchinson probes, STDE subsets), for
any partial derivative (polarization) and for the biharmonic."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from typing import Any, Sequence

import torch
from torch import Tensor

from .. import _checks, _random


def operator_directions(api: str, X: Tensor, dims: Any, weights: Tensor | None, *, span: bool) -> tuple[Tensor, Tensor]:
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


def draw(method: str, X: Tensor, V: Tensor, w: Tensor, n: int, probe: str,
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


# NOTE [partials from directions]: a partial derivative of order n is a combination of n-th
# directional derivatives D^n_v f = n! c_n(v), the top Taylor coefficient along v. For a
# multi-index (i_1, ..., i_n), polarization gives d^n f / dx_i1 ... dx_in =
# 1 / (2^(n-1) n!) sum over signs s (s_1 = +1) of (prod s) D^n_(sum_j s_j e_ij) f: at most
# 2^(n-1) directions, fewer once multiples of one direction are merged (D^n_(a v) =
# a^n D^n_v): a pure partial d^n/dx_i^n is the single direction e_i. The biharmonic is
# sum_i a D^4_(e_i) + 1/6 sum_(i<j) (D^4_(e_i + e_j) + D^4_(e_i - e_j)) with
# a = 1 - (K - 1) / 3 (expand (e_i +- e_j)^4: the odd mixed terms cancel), K^2 directions.
# The weighted sum is collapsed at every op (NOTE [collapsed Taylor mode]): only the lower
# three orders are kept per direction. `partials` keeps every order per direction, so that
# one propagation along the union of directions serves partials of different orders.


def polarize(index: Sequence[int]) -> dict[tuple[tuple[int, int], ...], Fraction]:
    """``{direction: weight}`` with ``d^n f / dx_index = sum weight * D^n_direction f``; a
    direction is a sorted tuple of ``(coordinate, integer coefficient)``, its first one positive."""
    n = len(index)
    out: dict[tuple[tuple[int, int], ...], Fraction] = {}
    for signs in itertools.product((1, -1), repeat=n - 1):
        s = (1, *signs)
        coef: dict[int, int] = {}
        for i, sign in zip(index, s):
            coef[i] = coef.get(i, 0) + sign
        v = sorted((i, c) for i, c in coef.items() if c)
        if not v:
            continue
        g = math.gcd(*(c for _, c in v)) * (1 if v[0][1] > 0 else -1)  # v = g * base
        base = tuple((i, c // g) for i, c in v)
        out[base] = out.get(base, Fraction(0)) + Fraction(math.prod(s) * g ** n, 2 ** (n - 1) * math.factorial(n))
    return {v: w for v, w in out.items() if w}


def vectors(directions: Sequence[tuple[tuple[int, int], ...]], D: int, X: Tensor) -> Tensor:
    V = X.new_zeros(len(directions), D)
    for k, v in enumerate(directions):
        for i, c in v:
            V[k, i] = c
    return V


def biharmonic_directions(idx: list[int], D: int, X: Tensor) -> tuple[Tensor, Tensor]:
    K = len(idx)
    eye = torch.eye(D, dtype=X.dtype, device=X.device)[idx]  # pragma: no mutate (one device here: CPU)
    pairs = [(i, j) for i in range(K) for j in range(i + 1, K)]
    V = torch.cat([eye, *([torch.stack([eye[i] + eye[j] for i, j in pairs]),
                           torch.stack([eye[i] - eye[j] for i, j in pairs])] if pairs else [])])
    a = 1 - (K - 1) / 3
    w = torch.cat([X.new_full((K,), 24 * a), X.new_full((2 * len(pairs),), 4.0)])
    return V, w
