"""Taylor-mode rules per aten op: how a truncated Taylor polynomial passes through each op.

Along direction ``v_k`` the input is ``x + t v_k``; every value ``y`` of the traced graph
becomes ``y0 + sum_m c_m t^m`` with ``c_m = (d^m y / dt^m) / m!`` (its Taylor coefficients).
A *jet* is the list ``[c_1, ..., c_n]`` for ``K`` directions at once: ``c_m`` is
``[K, *y.shape]`` (or broadcastable to it, with that many dimensions; ``None`` is zero).
With collapse weights ``w [K]`` (NOTE [collapsed Taylor mode]) the top coefficient is kept
only as ``sum_k w_k c_{n,k}``, shaped like ``y``.

NOTE [collapsed Taylor mode]: the top coefficient of every op's output is linear in the top
coefficients of its inputs (plus terms of lower order), so the weighted sum over directions
can be taken at every op instead of at the end (Dangel et al. 2025; the forward Laplacian of
Li et al. 2023 for n = 2): one tensor instead of ``K`` for the top order. That is what makes
the Laplacian ``2 sum_k c_{2,k}`` and the biharmonic cheap.

A rule is ``rule(mode, args, kwargs, jets, out) -> jet`` (a tuple of jets for an op with a
tuple output): ``args``/``kwargs`` the op's inputs, ``jets`` the inputs' jets by position
(``None`` for an input without one; a list for a list of tensors), ``out`` the op's result.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable, NamedTuple, Sequence

import torch
from torch import Tensor

aten = torch.ops.aten
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


Rule = Callable[[Mode, Sequence[Any], dict, Sequence[Any], Any], Any]
Derivs = Callable[[Sequence[Any], dict, Tensor, Tensor, int], Sequence[Tensor]]
"""``derivs(args, kwargs, x, y, n) -> [s'(x), ..., s^(n)(x)]`` for ``y = s(x)``."""

_RULES: dict[Any, Rule] = {}


def register_rule(op: Any, /, *, linear: Sequence[int] | None = None,
                  derivatives: Callable[[Tensor, int], Sequence[Tensor]] | None = None) -> None:
    """Teach the Taylor engine (``method="forward"`` of the operators) an aten op.

    Args:
      op: an aten op overload, e.g. ``torch.ops.mylib.myop.default``, or a packet
        (``torch.ops.mylib.myop``: all its overloads).
      linear: the positions of the tensor arguments the op is linear in, jointly: ``(0,)``
        for ``x -> A x``; ``(0, 1)`` for a bilinear op (a product), whose arguments'
        coefficients are then combined by the product rule.
      derivatives: for an elementwise op of one tensor ``x`` (other arguments held fixed):
        ``derivatives(x, n) -> [f'(x), ..., f^(n)(x)]``, each shaped like ``x``.

    Ops without a rule: pointwise ops use nested ``jvp`` for their derivatives; any other op
    on an input-dependent value makes the operator fall back to forward-over-reverse (logged).

    Example:
      >>> register_rule(torch.ops.aten.flip.default, linear=(0,))   # flip(x, dims) is linear in x
    """
    if (linear is None) == (derivatives is None):
        raise TypeError("register_rule: give exactly one of linear= (argument positions) or derivatives=.")
    if linear is not None:
        _RULES[op] = _multilinear(op, tuple(linear))
    else:
        _RULES[op] = _elementwise(lambda args, kwargs, x, y, n: derivatives(x, n))  # type: ignore[misc]


def rule_for(op: Any) -> Rule:
    """The rule for ``op``: its own, its packet's, or nested jvp for a pointwise op."""
    found = _RULES.get(op) or _RULES.get(getattr(op, "overloadpacket", None))
    if found is not None:
        return found
    if isinstance(op, torch._ops.OpOverload) and torch.Tag.pointwise in op.tags:
        return _elementwise(lambda args, kwargs, x, y, n: _by_jvp(lambda z: op(z, *args[1:], **kwargs), x, n))
    raise NoRule(f"no Taylor rule for {op}")


def ops_with_rules() -> list[str]:
    """The ops with a rule, by name (other pointwise ops get their derivatives by nested jvp)."""
    return sorted(str(op) for op in _RULES)


# ---- coefficients ---------------------------------------------------------------------


def _pad(c: Tensor, ndim: int) -> Tensor:
    """A per-direction coefficient ``[K, *s]`` with singleton dims after ``K``, to ``1 + ndim`` dims."""
    extra = ndim + 1 - c.ndim
    return c.reshape(c.shape[0], *(1,) * extra, *c.shape[1:]) if extra > 0 else c


def _full(c: Tensor, shape: Sequence[Any], k: bool) -> Tensor:
    """``c`` expanded (a view) to ``[K, *shape]``, or to ``shape`` for a collapsed one."""
    return _pad(c, len(shape)).expand(c.shape[0], *shape) if k else c.expand(*shape)


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


def _mul(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    return None if a is None or b is None else a * b


def _padded(mode: Mode, jet: Jet | None, ndim: int) -> Jet | None:
    """A jet whose per-direction coefficients broadcast against values of ``ndim`` dims."""
    return None if jet is None else [c if c is None or not mode.per_direction(m) else _pad(c, ndim)
                                     for m, c in enumerate(jet, 1)]


def _map(mode: Mode, jet: Jet | None, fn: Callable[[Tensor, bool], Tensor]) -> Jet | None:
    """A linear op applied to each coefficient: ``fn(c, per_direction)``."""
    if jet is None:
        return None
    return [None if c is None else fn(c, mode.per_direction(m)) for m, c in enumerate(jet, 1)]


def _only_first(jets: Sequence[Any], what: str) -> None:
    if any(j is not None for j in jets[1:]):
        raise NoRule(f"{what} with an input-dependent argument after the first")


# ---- linear ops ---------------------------------------------------------------------------


def _linear(fn: Callable[[Tensor, bool, Sequence[Any], dict, Any], Tensor]) -> Rule:
    """An op linear in its first argument: ``fn(c, per_direction, args, kwargs, out)``."""

    def rule(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
        _only_first(jets, "a linear op")
        return _map(mode, jets[0], lambda c, k: fn(c, k, args, kwargs, out))

    return rule


def _apply(op: Any, at: int, args: Sequence[Any], kwargs: dict) -> Callable[[Tensor], Tensor]:
    def call(c: Tensor) -> Tensor:
        a = list(args)
        a[at] = c
        return op(*a, **kwargs)

    return call


def _per_direction(op: Any, at: int = 0) -> Callable[[Tensor, bool, Sequence[Any], dict, Any], Tensor]:
    """Any op linear in argument ``at``, run on each direction's coefficient by ``vmap``."""

    def fn(c: Tensor, k: bool, args: Sequence[Any], kwargs: dict, out: Any) -> Tensor:
        call = _apply(op, at, args, kwargs)
        c = _full(c, args[at].shape, k)
        return torch.vmap(call)(c) if k else call(c)

    return fn


def _same(c: Tensor, k: bool, args: Sequence[Any], kwargs: dict, out: Any) -> Tensor:
    return c


def _cast(c: Tensor, k: bool, args: Sequence[Any], kwargs: dict, out: Any) -> Tensor:
    return c.to(out.dtype)


def _reshape(c: Tensor, k: bool, args: Sequence[Any], kwargs: dict, out: Any) -> Tensor:
    shape, new = args[0].shape, out.shape
    if k and c.ndim > 1 and c.shape[1] == 1 != shape[0] and len(new) and new[0] == shape[0] \
            and tuple(c.shape[2:]) == tuple(shape[1:]):
        return c.reshape(c.shape[0], 1, *new[1:])  # shared by the batch (the input's tangent): stays shared
    return _full(c, shape, k).reshape(*((c.shape[0],) if k else ()), *new)


def _dims(dims: Any, ndim: int, shift: int) -> list[int]:
    return [d % max(ndim, 1) + shift for d in ([dims] if isinstance(dims, int) else dims)]


def _shifted(fn: Callable[[Tensor, int, Sequence[Any], Any], Tensor]) -> Callable[..., Tensor]:
    """An op whose dim arguments move by one when a direction dimension leads."""
    return lambda c, k, args, kwargs, out: fn(_full(c, args[0].shape, k), int(k), args, out)


def _reduce(mean: bool) -> Callable[..., Tensor]:
    def fn(c: Tensor, s: int, args: Sequence[Any], out: Any) -> Tensor:
        x = args[0]
        dims = args[1] if len(args) > 1 else None
        keep = bool(args[2]) if len(args) > 2 else False
        dims = list(range(x.ndim)) if dims is None or (not isinstance(dims, int) and len(dims) == 0) else dims
        d = _dims(dims, x.ndim, s)
        total = c.sum(d, keepdim=keep)
        return total / math.prod(x.shape[i - s] for i in d) if mean else total

    return _shifted(fn)


def _cat(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    tensors, parts = args[0], jets[0]
    dim = (args[1] if len(args) > 1 else kwargs.get("dim", 0)) % out.ndim
    result: Jet = []
    for m in range(1, mode.order + 1):
        cs = [None if j is None else j[m - 1] for j in parts]
        live = [c for c in cs if c is not None]
        if not live:
            result.append(None)
            continue
        k = mode.per_direction(m)
        lead = (live[0].shape[0],) if k else ()
        full = [_full(c, t.shape, k) if c is not None else t.new_zeros(*lead, *t.shape) for c, t in zip(cs, tensors)]
        result.append(torch.cat(full, dim + int(k)))
    return result


def _where(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    if jets[0] is not None:
        raise NoRule("where with an input-dependent condition")
    a, b = _padded(mode, jets[1], out.ndim), _padded(mode, jets[2], out.ndim)
    result: Jet = []
    for m in range(1, mode.order + 1):
        ca, cb = (None if j is None else j[m - 1] for j in (a, b))
        both_zero = ca is None and cb is None
        result.append(None if both_zero else torch.where(args[0], 0.0 if ca is None else ca, 0.0 if cb is None else cb))
    return result


def _add_sub(sign: float) -> Rule:
    def rule(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
        alpha = sign * (args[2] if len(args) > 2 else kwargs.get("alpha", 1))
        a, b = _padded(mode, jets[0], out.ndim), _padded(mode, jets[1] if len(jets) > 1 else None, out.ndim)
        result: Jet = []
        for m in range(1, mode.order + 1):
            ca, cb = (None if j is None else j[m - 1] for j in (a, b))
            result.append(_add(ca, None if cb is None else (cb if alpha == 1 else cb * alpha)))
        return result

    return rule


def _scaled(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any, s: Any) -> Any:
    return _map(mode, _padded(mode, jets[0], out.ndim), lambda c, k: c * s)


# ---- products ------------------------------------------------------------------------------


def _product(mode: Mode, op: Callable[[Tensor, bool, Tensor, bool], Tensor], a0: Tensor, a: Jet | None,
             b0: Tensor, b: Jet | None) -> Jet:
    """The Cauchy product of two jets under a bilinear ``op(x, x_per_direction, y, y_per_direction)``."""
    n, result = mode.order, []
    for m in range(1, n + 1):
        k = mode.per_direction(m)
        am = None if a is None else a[m - 1]
        bm = None if b is None else b[m - 1]
        term = _add(None if bm is None else op(a0, False, bm, k), None if am is None else op(am, k, b0, False))
        cross: Tensor | None = None
        for i in range(1, m):
            ai, bj = (None if a is None else a[i - 1]), (None if b is None else b[m - i - 1])
            if ai is not None and bj is not None:
                cross = _add(cross, op(ai, True, bj, True))
        result.append(_add(term, cross if k else mode.collapse(cross)))
    return result


def _mul_op(x: Tensor, kx: bool, y: Tensor, ky: bool) -> Tensor:
    return x * y  # per-direction coefficients come padded (_padded)


def _matmul_op(x: Tensor, kx: bool, y: Tensor, ky: bool) -> Tensor:
    return torch.matmul(x, y)  # a leading direction dim is a batch dim of matmul


def _times(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    a, b = jets[0], jets[1] if len(jets) > 1 else None
    if b is None:
        return _scaled(mode, args, kwargs, jets, out, args[1])
    if a is None:
        return _scaled(mode, [args[1]], kwargs, [b], out, args[0])
    nd = out.ndim
    return _product(mode, _mul_op, args[0], _padded(mode, a, nd), args[1], _padded(mode, b, nd))


def _matmul(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    if args[0].ndim < 2 or args[1].ndim < 2:
        raise NoRule("matmul of a vector (a leading direction dimension would change its meaning)")
    return _product(mode, _matmul_op, args[0], jets[0], args[1], jets[1])


def _addmm(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    beta, alpha = kwargs.get("beta", 1), kwargs.get("alpha", 1)
    prod = _product(mode, _matmul_op, args[1], jets[1], args[2], jets[2])
    bias = _padded(mode, jets[0], out.ndim)
    return [_add(None if c is None else c * beta, None if p is None else p * alpha)
            for c, p in zip(bias or [None] * mode.order, prod)]


def _convolution(c: Tensor, k: bool, args: Sequence[Any], kwargs: dict, out: Any) -> Tensor:
    x, rest = args[0], list(args[3:])
    if not k:
        return aten.convolution.default(c.expand(x.shape), args[1], None, *rest)
    c = _full(c, x.shape, True)
    y = aten.convolution.default(c.reshape(-1, *x.shape[1:]), args[1], None, *rest)
    return y.reshape(c.shape[0], *out.shape)


def _conv(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    if jets[1] is not None or (len(jets) > 2 and jets[2] is not None):
        raise NoRule("a convolution whose weight or bias depends on the input")
    return _map(mode, jets[0], lambda c, k: _convolution(c, k, args, kwargs, out))


def _multilinear(op: Any, positions: tuple[int, ...]) -> Rule:
    """A registered op linear in each argument at ``positions`` (product rule across them)."""

    def rule(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
        live = [i for i, j in enumerate(jets) if j is not None]
        if any(i not in positions for i in live):
            raise NoRule(f"{op}: an argument outside linear={positions} depends on the input")
        if len(live) == 1:
            at = live[0]
            return _map(mode, jets[at], lambda c, k: _per_direction(op, at)(c, k, args, kwargs, out))
        i, j = live[:2]
        if len(live) > 2:
            raise NoRule(f"{op}: more than two input-dependent arguments")

        def pair(x: Tensor, kx: bool, y: Tensor, ky: bool) -> Tensor:
            a = list(args)

            def call(xi: Tensor, yi: Tensor) -> Tensor:
                a[i], a[j] = xi, yi
                return op(*a, **kwargs)

            if not (kx or ky):
                return call(x, y)
            x = _full(x, args[i].shape, True) if kx else x
            y = _full(y, args[j].shape, True) if ky else y
            return torch.vmap(call, in_dims=(0 if kx else None, 0 if ky else None))(x, y)

        return _product(mode, pair, args[i], jets[i], args[j], jets[j])

    return rule


# ---- elementwise nonlinear ops ----------------------------------------------------------


def _compose(mode: Mode, d: Sequence[Tensor], c: Jet, nd: int) -> Jet:
    """Faa di Bruno: the jet of ``s(h)`` from ``d_j = s^(j)(h0) / j!`` and the jet ``c`` of ``h``
    (``sum_j d_j (sum_i c_i t^i)^j``, truncated at the order)."""
    n = mode.order
    padded: Jet = _padded(mode, c, nd) or [None] * n
    per = [padded[m - 1] if mode.per_direction(m) else None for m in range(1, n + 1)]
    # power[j][m]: coefficient m of (sum_i c_i t^i)^j over the per-direction coefficients
    power: list[list[Tensor | None]] = [[None] * (n + 1), [None, *per]]
    for j in range(2, n + 1):
        row: list[Tensor | None] = [None] * j
        row += [_sum_of(_mul(per[i - 1], power[j - 1][m - i]) for i in range(1, m - j + 2)) for m in range(j, n + 1)]
        power.append(row)
    result: Jet = []
    for m in range(1, n + 1):
        if mode.per_direction(m):
            result.append(_sum_of(_mul(d[j - 1], power[j][m]) for j in range(1, m + 1)))
        else:  # collapsed: the top coefficient's own term, then the others summed over directions
            result.append(_add(_mul(d[0], padded[n - 1]),
                               _sum_of(_mul(d[j - 1], mode.collapse(power[j][n])) for j in range(2, n + 1))))
    return result


def _sum_of(terms: Any) -> Tensor | None:
    acc = None
    for t in terms:
        acc = _add(acc, t)
    return acc


def _elementwise(derivs: Derivs) -> Rule:
    """``y = s(x, *constants)`` elementwise, from its derivatives ``derivs``."""

    def rule(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
        _only_first(jets, "an elementwise op")
        raw = derivs(args, kwargs, args[0], out, mode.order)
        d = [r / math.factorial(j) for j, r in enumerate(raw, 1)]
        return _compose(mode, d, jets[0], out.ndim)

    return rule


def _by_jvp(fn: Callable[[Tensor], Tensor], x: Tensor, n: int) -> list[Tensor]:
    """``[fn'(x), ..., fn^(n)(x)]`` of an elementwise ``fn`` by nested forward mode."""
    out, g = [], fn
    for _ in range(n):
        g = (lambda h: lambda y: torch.func.jvp(h, (y,), (torch.ones_like(y),))[1])(g)
        out.append(g(x))
    return out


def _chain(q: Sequence[float]) -> Derivs:
    """``y = s(x)`` with ``s' = Q(s)`` for a polynomial ``Q`` (coefficients ``q``, lowest
    first): ``s^(m) = P_m(y)``, ``P_1 = Q``, ``P_(m+1) = P_m' Q`` (tanh, sigmoid, exp)."""

    def derivs(args: Sequence[Any], kwargs: dict, x: Tensor, y: Tensor, n: int) -> list[Tensor]:
        out, p = [], list(q)
        for _ in range(n):
            out.append(_horner(p, y))
            p = _polymul([i * a for i, a in enumerate(p)][1:], q)
        return out

    return derivs


def _polymul(a: Sequence[float], b: Sequence[float]) -> list[float]:
    out = [0.0] * max(len(a) + len(b) - 1, 1)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            out[i + j] += x * y
    return out


def _horner(p: Sequence[float], y: Tensor) -> Tensor:
    acc = torch.full_like(y, p[-1])
    for a in reversed(p[:-1]):
        acc = acc * y + a
    return acc


def _power(p: Any, x: Tensor, n: int) -> list[Tensor]:
    """``d^m/dx^m x^p = p (p-1) ... (p-m+1) x^(p-m)``."""
    out, coef = [], 1.0
    for m in range(1, n + 1):
        coef = coef * (p - (m - 1))
        # x^2 has no third derivative: not 0 * x^(-1), which is NaN at 0
        out.append(torch.zeros_like(x) if isinstance(coef, float) and coef == 0 else coef * x ** (p - m))
    return out


def _log(shift: float) -> Derivs:
    def derivs(args: Sequence[Any], kwargs: dict, x: Tensor, y: Tensor, n: int) -> list[Tensor]:
        r = 1 / (x + shift)
        return [(-1) ** (m - 1) * math.factorial(m - 1) * r ** m for m in range(1, n + 1)]

    return derivs


def _trig(start: int) -> Derivs:
    def derivs(args: Sequence[Any], kwargs: dict, x: Tensor, y: Tensor, n: int) -> list[Tensor]:
        s, c = torch.sin(x), torch.cos(x)
        cycle = [c, -s, -c, s]  # sin', sin'', sin''', sin''''
        return [cycle[(start + m - 1) % 4] for m in range(1, n + 1)]

    return derivs


def _erf(args: Sequence[Any], kwargs: dict, x: Tensor, y: Tensor, n: int) -> list[Tensor]:
    # erf^(m) = (-1)^(m-1) H_(m-1)(x) 2/sqrt(pi) exp(-x^2), H the physicists' Hermite polynomials
    g = 2 / math.sqrt(math.pi) * torch.exp(-x * x)
    out, h_prev, h = [], torch.ones_like(x), 2 * x
    for m in range(1, n + 1):
        out.append((-1) ** (m - 1) * (h_prev if m == 1 else h) * g)
        if m >= 2:
            h_prev, h = h, 2 * x * h - 2 * (m - 1) * h_prev
    return out


def _piecewise_linear(mask: Callable[[Sequence[Any], dict, Tensor], Tensor]) -> Derivs:
    """``f' = mask`` (0 or 1), higher derivatives zero (relu, clamp, abs up to sign)."""
    def derivs(args: Sequence[Any], kwargs: dict, x: Tensor, y: Tensor, n: int) -> list[Tensor]:
        return [mask(args, kwargs, x).to(x.dtype), *([torch.zeros_like(x)] * (n - 1))]

    return derivs


def _clamp_mask(args: Sequence[Any], kwargs: dict, x: Tensor) -> Tensor:
    lo = args[1] if len(args) > 1 else kwargs.get("min")
    hi = args[2] if len(args) > 2 else kwargs.get("max")
    m = torch.ones_like(x, dtype=torch.bool)
    if lo is not None:
        m = m & (x > lo)
    if hi is not None:
        m = m & (x < hi)
    return m


# ---- ops made of others -------------------------------------------------------------------


def _div(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    a, b = args[0], args[1]
    if len(jets) < 2 or jets[1] is None:
        return _scaled(mode, args, kwargs, jets, out, 1 / b if isinstance(b, Tensor) else 1.0 / b)
    r = 1 / b  # a / b = a * (1 / b)
    rj = _elementwise(lambda *_: _power(-1, b, mode.order))(mode, [b], {}, [jets[1]], r)
    return _times(mode, [a, r], {}, [jets[0], rj], out)


def _pow_tensor(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    if jets[1] is None:
        return _elementwise(lambda a, kw, x, y, n: _power(args[1], x, n))(mode, args, kwargs, jets, out)
    # a^b = exp(b log a)
    log_a = torch.log(args[0])
    lj = None if jets[0] is None else _elementwise(_log(0.0))(mode, [args[0]], {}, [jets[0]], log_a)
    e = args[1] * log_a
    ej = _times(mode, [args[1], log_a], {}, [jets[1], lj], e)
    return _elementwise(_chain(_EXP))(mode, [e], {}, [ej], out)


def _pow_scalar_base(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    ln = math.log(args[0])  # base ** x: every derivative is ln(base)^m base ** x
    return _compose(mode, [out * ln ** m / math.factorial(m) for m in range(1, mode.order + 1)], jets[1], out.ndim)


def _var_mean(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    x, dims = args[0], (args[1] if len(args) > 1 else None)
    keep, correction = kwargs.get("keepdim", False), kwargs.get("correction", 1)
    dims = list(range(x.ndim)) if dims is None else dims
    mean = x.mean(dims, keepdim=True)
    mean_jet = _linear(_reduce(True))(mode, [x, dims, True], {}, jets[:1], mean)
    dev = x - mean
    dev_jet = _add_sub(-1.0)(mode, [x, mean], {}, [jets[0], mean_jet], dev)
    sq = dev * dev
    sq_jet = _times(mode, [dev, dev], {}, [dev_jet, dev_jet], sq)
    N = math.prod(x.shape[d] for d in _dims(dims, x.ndim, 0))
    var_jet = _linear(_reduce(False))(mode, [sq, dims, keep], {}, [sq_jet], out[0])
    var_jet = _map(mode, var_jet, lambda c, k: c / max(N - correction, 0))
    if not keep:
        mean_jet = _map(mode, mean_jet, lambda c, k: c.squeeze(_dims(dims, x.ndim, int(k))))
    return (var_jet, mean_jet) if isinstance(out, tuple) else var_jet


def _var(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    return _var_mean(mode, args, kwargs, jets, (out, None))[0]


def _constant(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    return None  # piecewise constant (comparisons, rounding), a size query, or a stopped gradient


# ---- the table ---------------------------------------------------------------------------------

_TANH, _SIGMOID, _EXP = (1.0, 0.0, -1.0), (0.0, 1.0, -1.0), (0.0, 1.0)

for _op in (aten.view, aten._unsafe_view, aten.reshape, aten.unsqueeze, aten.squeeze, aten.flatten,
            aten.view_copy, aten.unsqueeze_copy, aten.squeeze_copy):
    _RULES[_op] = _linear(_reshape)
for _op in (aten.clone, aten.alias, aten.contiguous, aten.lift_fresh_copy, aten.alias_copy):
    _RULES[_op] = _linear(_same)
for _op in (aten._to_copy, aten.to, torch.ops.prims.convert_element_type):
    _RULES[_op] = _linear(_cast)
for _op in (aten.gt, aten.lt, aten.ge, aten.le, aten.eq, aten.ne, aten.sign, aten.floor, aten.ceil, aten.round,
            aten.trunc, aten.argmax, aten.argmin, aten.sym_size, aten.size, aten.sym_numel, aten.sym_stride,
            aten.stride, aten.detach, aten.zeros_like, aten.ones_like, aten.empty_like, aten.full_like,
            aten.rand_like, aten.randn_like, aten.bernoulli, aten.logical_not, aten.logical_and, aten.logical_or,
            aten.isnan, aten.isinf, aten.isfinite):
    _RULES[_op] = _constant
_RULES.update({
    operator.getitem: _constant,  # replaced by the interpreter for tuples of jets
    aten.permute: _linear(_shifted(lambda c, s, a, out: c.permute(*range(s), *_dims(a[1], a[0].ndim, s)))),
    aten.t: _linear(_shifted(lambda c, s, a, out: c.transpose(s, s + 1) if a[0].ndim == 2 else c)),
    aten.transpose: _linear(_shifted(lambda c, s, a, out: c.transpose(*_dims([a[1], a[2]], a[0].ndim, s)))),
    aten.expand: _linear(lambda c, k, a, kw, out: _full(c, out.shape, k)),
    aten.select: _linear(_shifted(lambda c, s, a, out: c.select(_dims(a[1], a[0].ndim, s)[0], a[2]))),
    aten.slice: _linear(_shifted(lambda c, s, a, out: aten.slice(c, _dims(a[1] if len(a) > 1 else 0, a[0].ndim, s)[0],
                                                                  *a[2:]))),
    aten.sum: _linear(_reduce(False)),
    aten.mean: _linear(_reduce(True)),
    aten.neg: _linear(lambda c, k, a, kw, out: -c),
    aten.cat: _cat,
    aten.where: _where,
    aten.add: _add_sub(1.0),
    aten.sub: _add_sub(-1.0),
    aten.mul: _times,
    aten.div: _div,
    aten.mm: _matmul,
    aten.bmm: _matmul,
    aten.addmm: _addmm,
    aten.convolution: _conv,
    aten.var_mean: _var_mean,
    aten.var: _var,
    aten.tanh: _elementwise(_chain(_TANH)),
    aten.sigmoid: _elementwise(_chain(_SIGMOID)),
    aten.exp: _elementwise(_chain(_EXP)),
    aten.expm1: _elementwise(lambda a, kw, x, y, n: [y + 1] * n),
    aten.log: _elementwise(_log(0.0)),
    aten.log1p: _elementwise(_log(1.0)),
    aten.sin: _elementwise(_trig(0)),
    aten.cos: _elementwise(_trig(1)),
    aten.erf: _elementwise(_erf),
    aten.sqrt: _elementwise(lambda a, kw, x, y, n: _power(0.5, x, n)),
    aten.rsqrt: _elementwise(lambda a, kw, x, y, n: _power(-0.5, x, n)),
    aten.reciprocal: _elementwise(lambda a, kw, x, y, n: _power(-1, x, n)),
    aten.pow.Tensor_Scalar: _elementwise(lambda a, kw, x, y, n: _power(a[1], x, n)),
    aten.pow.Tensor_Tensor: _pow_tensor,
    aten.pow.Scalar: _pow_scalar_base,
    aten.relu: _elementwise(_piecewise_linear(lambda a, kw, x: x > 0)),
    aten.clamp: _elementwise(_piecewise_linear(_clamp_mask)),
    aten.clamp_min: _elementwise(_piecewise_linear(lambda a, kw, x: x > a[1])),
    aten.clamp_max: _elementwise(_piecewise_linear(lambda a, kw, x: x < a[1])),
    aten.abs: _elementwise(lambda a, kw, x, y, n: [torch.sign(x), *([torch.zeros_like(x)] * (n - 1))]),
})
