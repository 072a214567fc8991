"""Elementwise nonlinear ops in Taylor mode: Faa di Bruno's formula from the op's
derivatives, and the derivatives of the ops with closed forms.

A derivative function is ``derivs(args, kwargs, x, y, n) -> [s'(x), ..., s^(n)(x)]`` for
``y = s(x, *args[1:])``; parameterised ones are bound with ``functools.partial``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
from numpy.polynomial import polynomial as P
from torch import Tensor

from ._jet import BadRule, Jet, Mode, add, mul, only_first, padded, sum_of

Derivs = Callable[[Sequence[Any], dict, Tensor, Tensor, int], Sequence[Tensor]]

TANH, SIGMOID, EXP = (1.0, 0.0, -1.0), (0.0, 1.0, -1.0), (0.0, 1.0)
"""``Q`` of ``s' = Q(s)`` (coefficients, lowest first) for tanh, sigmoid and exp."""


def elementwise(derivs: Derivs, mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    """The rule of ``y = s(x, *constants)``, elementwise, from its derivatives ``derivs``."""
    only_first(jets, "an elementwise op")
    return compose(mode, normalized(derivs(args, kwargs, args[0], out, mode.order)), jets[0], out.ndim)


def normalized(raw: Sequence[Tensor]) -> list[Tensor]:
    """``[s', s'', ...] -> [s' / 1!, s'' / 2!, ...]``: the Taylor coefficients ``compose`` takes."""
    return [r / math.factorial(j) for j, r in enumerate(raw, 1)]


def compose(mode: Mode, d: Sequence[Tensor], c: Jet | None, nd: int) -> Jet:
    """Faa di Bruno: the jet of ``s(h)`` from ``d_j = s^(j)(h0) / j!`` and the jet ``c`` of ``h``
    (``sum_j d_j (sum_i c_i t^i)^j``, truncated at the order)."""
    n = mode.order
    if len(d) != n:
        raise BadRule(f"register_rule: derivatives(x, n) must return n = {n} tensors [f'(x), ..., f^(n)(x)], "
                         f"got {len(d)}.")
    c = padded(mode, c, nd) or [None] * n
    per = [c[m - 1] if mode.per_direction(m) else None for m in range(1, n + 1)]
    # power[j][m]: coefficient m of (sum_i c_i t^i)^j over the per-direction coefficients
    power: list[list[Tensor | None]] = [[None] * (n + 1), [None, *per]]
    for j in range(2, n + 1):
        row: list[Tensor | None] = [None] * j
        row += [sum_of(mul(per[i - 1], power[j - 1][m - i]) for i in range(1, m - j + 2)) for m in range(j, n + 1)]
        power.append(row)
    result: Jet = []
    for m in range(1, n + 1):
        if mode.per_direction(m):
            result.append(sum_of(mul(d[j - 1], power[j][m]) for j in range(1, m + 1)))
        else:  # collapsed: the top coefficient's own term, then the others summed over directions
            result.append(add(mul(d[0], c[n - 1]),
                              sum_of(mul(d[j - 1], mode.collapse(power[j][n])) for j in range(2, n + 1))))
    return result


def by_jvp(op: Any, args: Sequence[Any], kwargs: dict, x: Tensor, y: Tensor, n: int) -> list[Tensor]:
    """Any pointwise op's derivatives in its first argument, by nested forward mode."""
    out, g = [], (lambda z: op(z, *args[1:], **kwargs))  # pragma: no mutate (no traced op has seen kwargs here yet)
    for _ in range(n):
        g = (lambda h: lambda z: torch.func.jvp(h, (z,), (torch.ones_like(z),))[1])(g)
        out.append(g(x))
    return out


def user(fn: Callable[[Tensor, int], Sequence[Tensor]], args: Sequence[Any], kwargs: dict, x: Tensor, y: Tensor,
         n: int) -> Sequence[Tensor]:
    """A registered op's ``derivatives(x, n)``."""
    return fn(x, n)


def chain(q: Sequence[float], args: Sequence[Any], kwargs: dict, x: Tensor, y: Tensor, n: int) -> list[Tensor]:
    """tanh, sigmoid, exp: see :func:`chain_derivatives`."""
    return chain_derivatives(q, y, n)


def chain_derivatives(q: Sequence[float], y: Tensor, n: int) -> list[Tensor]:
    """``y = s(x)`` with ``s' = Q(s)`` for a polynomial ``Q`` (coefficients ``q``, lowest
    first): ``s^(m) = P_m(y)``, ``P_1 = Q``, ``P_(m+1) = P_m' Q``."""
    out, p = [], np.asarray(q, dtype=float)
    for _ in range(n):
        out.append(_horner(p, y))
        p = P.polymul(P.polyder(p), q)
    return out


def _horner(p: Any, y: Tensor) -> Tensor:
    acc = torch.full_like(y, float(p[-1]))
    for a in reversed(p[:-1]):
        acc = acc * y + float(a)
    return acc


def power(p: Any, x: Tensor, n: int) -> list[Tensor]:
    """``d^m/dx^m x^p = p (p-1) ... (p-m+1) x^(p-m)`` for ``m = 1..n``."""
    out, coef = [], 1.0
    for m in range(1, n + 1):
        coef = coef * (p - (m - 1))
        # x^2 has no third derivative: 0, not 0 * x^(-1), which is NaN at 0 (autograd's
        # pow_backward gives 0 where the exponent is 0, also for a tensor exponent)
        if not isinstance(coef, Tensor):
            out.append(torch.zeros_like(x) if coef == 0 else coef * x ** (p - m))
        else:  # the base is 1 where the term is 0: no inf * 0 in the gradient w.r.t. p
            zero = coef == 0
            out.append(torch.where(zero, 0.0, coef * torch.where(zero, 1.0, x) ** (p - m)))
    return out


def fixed_power(p: float, args: Sequence[Any], kwargs: dict, x: Tensor, y: Tensor, n: int) -> list[Tensor]:
    """sqrt (1/2), rsqrt (-1/2), reciprocal (-1)."""
    return power(p, x, n)


def scalar_power(args: Sequence[Any], kwargs: dict, x: Tensor, y: Tensor, n: int) -> list[Tensor]:
    """``x ** p`` with ``p = args[1]`` not depending on the input (a number or a tensor)."""
    return power(args[1], x, n)


def logarithm(shift: float, args: Sequence[Any], kwargs: dict, x: Tensor, y: Tensor, n: int) -> list[Tensor]:
    """log (``shift=0``), log1p (``1``): see :func:`log_derivatives`."""
    return log_derivatives(x, shift, n)


def log_derivatives(x: Tensor, shift: float, n: int) -> list[Tensor]:
    """``log(x + shift)``: ``(-1)^(m-1) (m-1)! / (x + shift)^m``."""
    r = 1 / (x + shift)
    return [-math.factorial(m - 1) * (-r) ** m for m in range(1, n + 1)]


def expm1(args: Sequence[Any], kwargs: dict, x: Tensor, y: Tensor, n: int) -> list[Tensor]:
    return [y + 1] * n


def trig(start: int, args: Sequence[Any], kwargs: dict, x: Tensor, y: Tensor, n: int) -> list[Tensor]:
    """sin (``start=0``) and cos (``1``): derivatives cycle through ``cos, -sin, -cos, sin``."""
    s, c = torch.sin(x), torch.cos(x)
    cycle = [c, -s, -c, s]
    return [cycle[(start + m - 1) % 4] for m in range(1, n + 1)]


def erf(args: Sequence[Any], kwargs: dict, x: Tensor, y: Tensor, n: int) -> list[Tensor]:
    """``erf^(m) = (-1)^(m-1) H_(m-1)(x) 2/sqrt(pi) exp(-x^2)``, ``H`` the physicists' Hermite polynomials."""
    g = 2 / math.sqrt(math.pi) * torch.exp(-x * x)
    out, h_prev, h = [], torch.ones_like(x), 2 * x
    for m in range(1, n + 1):
        term = (h_prev if m == 1 else h) * g
        out.append(term if m % 2 else -term)
        if m >= 2:
            h_prev, h = h, 2 * x * h - 2 * (m - 1) * h_prev
    return out


def piecewise_linear(mask: Callable[[Sequence[Any], Tensor], Tensor], args: Sequence[Any], kwargs: dict, x: Tensor,
                     y: Tensor, n: int) -> list[Tensor]:
    """``f' = mask`` (0 or 1), higher derivatives zero (relu, clamp_min, clamp_max)."""
    return [mask(args, x).to(x.dtype), *([torch.zeros_like(x)] * (n - 1))]


def positive(args: Sequence[Any], x: Tensor) -> Tensor:
    return x > 0  # autograd's convention: relu'(0) = 0


def above(args: Sequence[Any], x: Tensor) -> Tensor:
    return x >= args[1]  # autograd's convention: clamp passes the derivative at its bound


def below(args: Sequence[Any], x: Tensor) -> Tensor:
    return x <= args[1]


def absolute(args: Sequence[Any], kwargs: dict, x: Tensor, y: Tensor, n: int) -> list[Tensor]:
    return [torch.sign(x), *([torch.zeros_like(x)] * (n - 1))]
