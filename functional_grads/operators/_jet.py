"""Jets: truncated Taylor polynomials along K directions at once, and their arithmetic.

Along direction ``v_k`` the input is ``x + t v_k``; every value ``y`` of the traced graph
becomes ``y0 + sum_m c_m t^m`` with ``c_m = (d^m y / dt^m) / m!`` (its Taylor coefficients).
A *jet* is the list ``[c_1, ..., c_n]`` for the ``K`` directions: ``c_m`` is
``[K, *y.shape]`` (or broadcastable to it, with that many dimensions; ``None`` is zero).
With collapse weights ``w [K]`` (NOTE [collapsed Taylor mode]) the top coefficient is kept
only as ``sum_k w_k c_{n,k}``, shaped like ``y``.

NOTE [collapsed Taylor mode]: the top coefficient of every op's output is linear in the top
coefficients of its inputs (plus terms of lower order), so the weighted sum over directions
can be taken at every op instead of at the end (Dangel et al. 2025; the forward Laplacian of
Li et al. 2023 for n = 2): one tensor instead of ``K`` for the top order. That is what makes
the Laplacian ``2 sum_k c_{2,k}`` and the biharmonic cheap.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import torch
from torch import Tensor

Jet = list  # [c_1, ..., c_n], entries Tensor or None


class Mode(NamedTuple):
    """The propagation: Taylor ``order`` n and the collapse weights of the top order (or None)."""

    order: int
    weights: Tensor | None

    def per_direction(self, m: int) -> bool:
        """True when coefficient ``m`` (1-based) has the leading direction dimension."""
        return m < self.order or self.weights is None

    def collapse(self, c: Tensor | None) -> Tensor | None:
        """``sum_k w_k c_k``: ``[K, *S] -> [*S]`` (identity without weights)."""
        if c is None or self.weights is None:
            return c
        return torch.tensordot(self.weights.to(c.dtype), c, 1)


class NoRule(Exception):
    """The graph runs an op on a value that depends on the input, and no rule covers it."""


class BadRule(ValueError):
    """A rule registered with ``register_rule`` breaks its contract: the user's to fix."""


def pad(c: Tensor, ndim: int) -> Tensor:
    """A per-direction coefficient ``[K, *s]`` with singleton dims after ``K``, to ``1 + ndim`` dims."""
    extra = ndim + 1 - c.ndim
    return c.reshape(c.shape[0], *(1,) * extra, *c.shape[1:]) if extra > 0 else c


def full(c: Tensor, shape: Sequence[Any], k: bool) -> Tensor:
    """``c`` expanded (a view) to ``[K, *shape]``, or to ``shape`` for a collapsed one."""
    return pad(c, len(shape)).expand(c.shape[0], *shape) if k else c.expand(*shape)


def add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


def mul(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    return None if a is None or b is None else a * b


def sum_of(terms: Any) -> Tensor | None:
    acc = None
    for t in terms:
        acc = add(acc, t)
    return acc


def padded(mode: Mode, jet: Jet | None, ndim: int) -> Jet | None:
    """A jet whose per-direction coefficients broadcast against values of ``ndim`` dims."""
    return None if jet is None else [c if c is None or not mode.per_direction(m) else pad(c, ndim)
                                     for m, c in enumerate(jet, 1)]


def each(mode: Mode, jet: Jet | None, fn: Callable[[Tensor, bool], Tensor]) -> Jet | None:
    """A linear op applied to each coefficient: ``fn(c, per_direction)``."""
    if jet is None:
        return None
    return [None if c is None else fn(c, mode.per_direction(m)) for m, c in enumerate(jet, 1)]


def only_first(jets: Sequence[Any], what: str) -> None:
    """Refuse an op whose arguments after the first depend on the input."""
    if any(j is not None for j in jets[1:]):
        raise NoRule(f"{what} with an input-dependent argument after the first")
