"""Taylor-mode rules per aten op: how a jet (``_jet.py``) passes through each op of the
traced graph, and the registry users extend.

A rule is ``rule(mode, args, kwargs, jets, out) -> jet`` (a tuple of jets for an op with a
tuple output): ``args``/``kwargs`` the op's inputs, ``jets`` the inputs' jets by position
(``None`` for an input without one; a list for a list of tensors), ``out`` the op's result.
Parameterised rules are module functions bound with ``functools.partial``.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from . import _elementwise as ew
from ._jet import Jet, Mode, NoRule, add, each, full, only_first, padded

aten = torch.ops.aten
prims = torch.ops.prims
Rule = Callable[[Mode, Sequence[Any], dict, Sequence[Any], Any], Any]
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
        _RULES[op] = partial(_multilinear, op, tuple(linear))
    elif derivatives is not None:
        _RULES[op] = partial(ew.elementwise, partial(ew.user, derivatives))


def rule_for(op: Any) -> Rule:
    """The rule for ``op``: its own, its packet's, or nested jvp for a pointwise op."""
    found = _RULES.get(op) or _RULES.get(getattr(op, "overloadpacket", None))
    if found is not None:
        return found
    if isinstance(op, torch._ops.OpOverload) and torch.Tag.pointwise in op.tags and len(op._schema.returns) == 1:
        return partial(ew.elementwise, partial(ew.by_jvp, op))
    raise NoRule(f"no Taylor rule for {op}")


def ops_with_rules() -> list[str]:
    """The ops with a rule, by name (other pointwise ops get their derivatives by nested jvp)."""
    return sorted(str(op) for op in _RULES)


# ---- linear ops: fn(c, per_direction, args, out) on each coefficient --------------------


def _linear(fn: Callable[[Tensor, bool, Sequence[Any], Any], Tensor], mode: Mode, args: Sequence[Any],
            kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    """An op linear in its first argument, its only tensor argument (positional arguments only)."""
    return each(mode, jets[0], lambda c, k: fn(c, k, args, out))


def _same(c: Tensor, k: bool, args: Sequence[Any], out: Any) -> Tensor:
    return c


def _cast(c: Tensor, k: bool, args: Sequence[Any], out: Any) -> Tensor:
    return c.to(out.dtype)


def _negate(c: Tensor, k: bool, args: Sequence[Any], out: Any) -> Tensor:
    return -c


def _expand(c: Tensor, k: bool, args: Sequence[Any], out: Any) -> Tensor:
    return full(c, out.shape, k)


def _reshape(c: Tensor, k: bool, args: Sequence[Any], out: Any) -> Tensor:
    shape, new = args[0].shape, out.shape
    if k and c.ndim > 1 and len(shape) and c.shape[1] == 1 != shape[0] and len(new) and new[0] == shape[0] and tuple(c.shape[2:]) == tuple(shape[1:]):
        return c.reshape(c.shape[0], 1, *new[1:])  # shared by the batch (the input's tangent): stays shared
    return full(c, shape, k).reshape(*((c.shape[0],) if k else ()), *new)


def _dims(dims: Any, ndim: int, shift: int) -> list[int]:
    return [d % max(ndim, 1) + shift for d in ([dims] if isinstance(dims, int) else dims)]


def _permute(c: Tensor, k: bool, args: Sequence[Any], out: Any) -> Tensor:
    s = int(k)
    return full(c, args[0].shape, k).permute(*range(s), *_dims(args[1], args[0].ndim, s))


def _select(c: Tensor, k: bool, args: Sequence[Any], out: Any) -> Tensor:
    return full(c, args[0].shape, k).select(_dims(args[1], args[0].ndim, int(k))[0], args[2])


def _slice(c: Tensor, k: bool, args: Sequence[Any], out: Any) -> Tensor:
    return aten.slice(full(c, args[0].shape, k), _dims(args[1], args[0].ndim, int(k))[0], *args[2:])


def _reduce(mean: bool, c: Tensor, k: bool, args: Sequence[Any], out: Any) -> Tensor:
    """sum and mean, over ``args[1]`` (all dims when absent or empty), ``keepdim`` ``args[2]``."""
    x, s = args[0], int(k)
    dims = args[1] if len(args) > 1 and args[1] else range(x.ndim)  # absent or [] means all
    d = _dims(dims, x.ndim, s)
    total = full(c, x.shape, k).sum(d, keepdim=bool(args[2]) if len(args) > 2 else False)
    return total / math.prod(x.shape[i - s] for i in d) if mean else total


def _extreme(c: Tensor, k: bool, args: Sequence[Any], out: Any) -> Tensor:
    """amax and amin over ``args[1]`` (vmap names the dims), ``keepdim`` ``args[2]``: the
    coefficients of the extreme elements, shared evenly among ties (autograd's convention)."""
    x, s, dims = args[0], int(k), list(args[1])
    keep = len(args) > 2 and bool(args[2])
    pick = x == (out if keep else out.reshape([1 if i in _dims(dims, x.ndim, 0) else n for i, n in enumerate(x.shape)]))
    d = _dims(dims, x.ndim, s)
    share = pick / pick.sum(_dims(dims, x.ndim, 0), keepdim=True)
    return (full(c, x.shape, k) * share).sum(d, keepdim=keep)


def _convolution(c: Tensor, k: bool, args: Sequence[Any], out: Any) -> Tensor:
    x, rest = args[0], list(args[3:])
    if not k:
        return aten.convolution.default(c.expand(x.shape), args[1], None, *rest)
    c = full(c, x.shape, True)  # the directions join the batch dimension
    y = aten.convolution.default(c.reshape(-1, *x.shape[1:]), args[1], None, *rest)
    return y.reshape(c.shape[0], *out.shape)


def _conv(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    only_first(jets, "a convolution")  # a bias is added after the convolution in the trace
    return each(mode, jets[0], lambda c, k: _convolution(c, k, args, out))


def _cat(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    tensors, parts = args[0], jets[0]
    dim = (args[1] if len(args) > 1 else 0) % out.ndim
    result: Jet = []
    for m in range(1, mode.order + 1):
        cs = [None if j is None else j[m - 1] for j in parts]
        live = [c for c in cs if c is not None]
        if not live:
            result.append(None)
            continue
        k = mode.per_direction(m)
        lead = (live[0].shape[0],) if k else ()
        whole = [full(c, t.shape, k) if c is not None else t.new_zeros(*lead, *t.shape) for c, t in zip(cs, tensors)]
        result.append(torch.cat(whole, dim + int(k)))
    return result


def _where(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    # the condition is bool: a constant (_differentiable), whatever it was computed from
    a, b = padded(mode, jets[1], out.ndim), padded(mode, jets[2], out.ndim)
    result: Jet = []
    for m in range(1, mode.order + 1):
        ca, cb = (None if j is None else j[m - 1] for j in (a, b))
        result.append(None if ca is None and cb is None
                      else torch.where(args[0], 0.0 if ca is None else ca, 0.0 if cb is None else cb))
    return result


def _add_sub(sign: float, mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    alpha = sign * kwargs.get("alpha", 1)
    a, b = padded(mode, jets[0], out.ndim), padded(mode, jets[1], out.ndim)
    return [add(None if a is None else a[m], None if b is None or b[m] is None else b[m] * alpha)
            for m in range(mode.order)]


def _scaled(mode: Mode, jet: Jet | None, nd: int, s: Any) -> Any:
    """``x -> x * s`` with ``s`` not depending on the input; ``nd`` the result's ndim."""
    return each(mode, padded(mode, jet, nd), lambda c, k: c * s)


# ---- products ------------------------------------------------------------------------------


def _product(mode: Mode, op: Callable[[Tensor, bool, Tensor, bool], Tensor], a0: Tensor, a: Jet | None,
             b0: Tensor, b: Jet | None) -> Jet:
    """The Cauchy product of two jets under a bilinear ``op(x, x_per_direction, y, y_per_direction)``."""
    result = []
    for m in range(1, mode.order + 1):
        k = mode.per_direction(m)
        am, bm = (None if a is None else a[m - 1]), (None if b is None else b[m - 1])
        term = add(None if bm is None else op(a0, False, bm, k), None if am is None else op(am, k, b0, False))
        cross: Tensor | None = None
        for i in range(1, m):
            ai, bj = (None if a is None else a[i - 1]), (None if b is None else b[m - i - 1])
            if ai is not None and bj is not None:
                cross = add(cross, op(ai, True, bj, True))
        result.append(add(term, cross if k else mode.collapse(cross)))
    return result


def _mul_op(x: Tensor, kx: bool, y: Tensor, ky: bool) -> Tensor:
    return x * y  # per-direction coefficients come padded


def _matmul_op(x: Tensor, kx: bool, y: Tensor, ky: bool) -> Tensor:
    return torch.matmul(x, y)  # a leading direction dim is a batch dim of matmul


def _times(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    return _mul_jets(mode, args[0], jets[0], args[1], jets[1], out.ndim)


def _mul_jets(mode: Mode, a0: Any, a: Jet | None, b0: Any, b: Jet | None, nd: int) -> Any:
    """The jet of ``a * b`` (``nd`` its ndim) from the values and jets of ``a`` and ``b``."""
    if b is None:
        return _scaled(mode, a, nd, b0)
    if a is None:
        return _scaled(mode, b, nd, a0)
    return _product(mode, _mul_op, a0, padded(mode, a, nd), b0, padded(mode, b, nd))


def _matmul(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    return _product(mode, _matmul_op, args[0], jets[0], args[1], jets[1])  # mm and bmm: 2-D and 3-D operands


def _multilinear(op: Any, positions: tuple[int, ...], mode: Mode, args: Sequence[Any], kwargs: dict,
                 jets: Sequence[Any], out: Any) -> Any:
    """A registered op linear in each argument at ``positions`` (the product rule across them)."""
    live = [i for i, j in enumerate(jets) if j is not None]
    if any(i not in positions for i in live) or len(live) > 2:
        raise NoRule(f"{op}: an input-dependent argument outside linear={positions}, or more than two")

    def pair(i: int, j: int, x: Tensor, kx: bool, y: Tensor, ky: bool) -> Tensor:
        def call(xi: Tensor, yi: Tensor) -> Tensor:
            a = list(args)
            a[i], a[j] = xi, yi
            return op(*a, **kwargs)

        if not (kx or ky):
            return call(x, y)
        x = full(x, args[i].shape, True) if kx else x
        y = full(y, args[j].shape, True) if ky else y
        return torch.vmap(call, in_dims=(0 if kx else None, 0 if ky else None))(x, y)

    if len(live) == 1:
        (i,) = live

        def one(c: Tensor, k: bool) -> Tensor:
            def call(ci: Tensor) -> Tensor:
                a = list(args)
                a[i] = ci
                return op(*a, **kwargs)

            c = full(c, args[i].shape, k)
            return torch.vmap(call)(c) if k else call(c)

        return each(mode, jets[i], one)
    i, j = live
    return _product(mode, partial(pair, i, j), args[i], jets[i], args[j], jets[j])


def _joint(op: Any, positions: tuple[int, ...], zeros: tuple[tuple[int, Any], ...], mode: Mode, args: Sequence[Any],
           kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    """An op jointly linear in the tensors at ``positions`` (others constant): each
    coefficient is the op of the inputs' coefficients (0 for an input without one), with the
    arguments in ``zeros`` (a pad's or a fill's value) set to 0 and, per direction, mapped
    over the directions. A tuple output (split, unbind) gets a tuple of jets."""
    live = [i for i, j in enumerate(jets) if j is not None]
    if any(i not in positions for i in live):
        raise NoRule(f"{op}: an input-dependent argument outside positions {positions}")
    result: list[Any] = []
    for m in range(1, mode.order + 1):
        cs = {i: jets[i][m - 1] for i in live if jets[i][m - 1] is not None}
        if not cs:
            result.append(None)
            continue
        k = mode.per_direction(m)

        def call(*coefficients: Tensor) -> Any:
            a = list(args)
            for i in positions:
                a[i] = torch.zeros_like(args[i])
            for i, value in zeros:
                if i < len(a):  # absent: the default, 0 already
                    a[i] = value
            for i, c in zip(cs, coefficients):
                a[i] = c
            return op(*a, **kwargs)

        whole = [full(c, args[i].shape, k) for i, c in cs.items()]
        result.append(torch.vmap(call)(*whole) if k else call(*whole))
    if not isinstance(out, (tuple, list)):
        return result
    return tuple([None if r is None else r[o] for r in result] for o in range(len(out)))


def _selected(dim_at: int | None, keep_at: int | None, mode: Mode, args: Sequence[Any], kwargs: dict,
              jets: Sequence[Any], out: Any) -> Any:
    """Ops that select elements along a dim and return ``(values, indices)`` (max/min over a
    dim, sort, topk, kthvalue, median, mode, cummax/cummin; the dim at ``dim_at``, or a keyword,
    ``keepdim`` at ``keep_at`` or none: same rank): the values' coefficients are the input's at
    the indices, as autograd routes the gradient."""
    x, indices = args[0], out[1]  # the other arguments are numbers
    d = (args[dim_at] if dim_at is not None else kwargs["dim"]) % x.ndim  # vmap names the dim
    keep = keep_at is None or (len(args) > keep_at and bool(args[keep_at]))
    at = indices if keep else indices.unsqueeze(d)

    def pick(c: Tensor, k: bool) -> Tensor:
        c = full(c, x.shape, k)
        values = torch.gather(c, d + k, at.expand(c.shape[0], *at.shape) if k else at)
        return values if keep else values.squeeze(d + k)

    return each(mode, jets[0], pick), None


# ---- ops made of others -------------------------------------------------------------------


def _div(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    a, b = args
    if jets[1] is None:
        return _scaled(mode, jets[0], out.ndim, 1 / b)
    r = 1 / b  # a / b = a * (1 / b)
    rj = ew.compose(mode, ew.normalized(ew.power(-1.0, b, mode.order)), jets[1], r.ndim)
    return _mul_jets(mode, a, jets[0], r, rj, out.ndim)


def _div_mode(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    """``div(a, b, rounding_mode=...)``: rounded (``"floor"``, ``"trunc"``) it is piecewise
    constant, derivative 0 as in autograd; ``None`` is true division."""
    return _div(mode, args, kwargs, jets, out) if kwargs.get("rounding_mode") is None else None


def _pow_tensor(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    a, b = args
    if jets[1] is None:
        return ew.compose(mode, ew.normalized(ew.power(b, a, mode.order)), jets[0], out.ndim)
    log_a = torch.log(a)  # a^b = exp(b log a)
    lj = ew.compose(mode, ew.normalized(ew.log_derivatives(a, 0.0, mode.order)), jets[0], log_a.ndim)
    exponent = _mul_jets(mode, b, jets[1], log_a, lj, out.ndim)
    return ew.compose(mode, ew.normalized(ew.chain_derivatives(ew.EXP, out, mode.order)), exponent, out.ndim)


def _pow_scalar_base(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    ln = math.log(args[0])  # base ** x: every derivative is ln(base)^m base ** x
    return ew.compose(mode, ew.normalized([out * ln**m for m in range(1, mode.order + 1)]), jets[1], out.ndim)


def _var_mean(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    """``var_mean`` (a tuple) and ``var`` (``out`` not a tuple): mean, deviation, mean square."""
    x = args[0]
    d = _dims(args[1], x.ndim, 0)  # explicit under vmap, which maps f over the batch
    keep, correction = kwargs.get("keepdim", False), kwargs.get("correction", 1)
    N = math.prod(x.shape[i] for i in d)
    mean_jet = each(mode, jets[0], lambda c, k: full(c, x.shape, k).sum([i + k for i in d], keepdim=True) / N)
    # dev's jet sums to zero over d, so a constant shift of dev changes no coefficient
    dev = x - x.mean(d, keepdim=True)  # pragma: no mutate (see above)
    dev_jet = _add_sub(-1.0, mode, args, {}, [jets[0], mean_jet], x)
    square = _mul_jets(mode, dev, dev_jet, dev, dev_jet, x.ndim)
    var_jet = each(mode, square, lambda c, k: full(c, x.shape, k).sum([i + k for i in d], keepdim=keep) / (N - correction))
    if not isinstance(out, tuple):
        return var_jet
    return var_jet, each(mode, mean_jet, lambda c, k: c if keep else c.squeeze([i + k for i in d]))


def _vector_norm(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    """``linalg_vector_norm(x, p, dim, keepdim)`` as ``(sum |x|^p)^(1/p)`` (``max |x|`` for
    ``p = inf``), every coefficient 0 where the norm is 0: autograd's subgradient there
    (its decomposition's ``inf * 0`` would be NaN)."""
    x, p, dims = args[0], float(args[1]), args[2]  # under vmap the order and the dims are named
    keep = len(args) > 3 and bool(args[3])
    if p == 0:
        return None  # the number of nonzero entries: piecewise constant
    if kwargs.get("dtype") is not None or p < 0:
        raise NoRule(f"linalg_vector_norm with ord={p} or a dtype")
    size = ew.compose(mode, ew.normalized(ew.absolute(args, kwargs, x, x.abs(), mode.order)), jets[0], x.ndim)
    if math.isinf(p):
        return each(mode, size, lambda c, k: _extreme(c, k, [x.abs(), dims, keep], out))
    powered = ew.compose(mode, ew.normalized(ew.power(p, x.abs(), mode.order)), size, x.ndim)
    total = x.abs() ** p
    summed = each(mode, powered, lambda c, k: _reduce(False, c, k, [total, dims, keep], out))
    zero = out == 0
    s = torch.where(zero, 1.0, total.sum(_dims(dims, x.ndim, 0), keepdim=keep))
    jet = ew.compose(mode, ew.normalized(ew.power(1 / p, s, mode.order)), summed, out.ndim)
    return each(mode, jet, lambda c, k: torch.where(zero, 0.0, c))


def _constant(mode: Mode, args: Sequence[Any], kwargs: dict, jets: Sequence[Any], out: Any) -> Any:
    return None  # piecewise constant (comparisons, rounding), a size query, or a stopped gradient


# ---- the table (ops as they come out of make_fx with inductor's decompositions) ----------

for _op in (aten.gt, aten.lt, aten.ge, aten.le, aten.eq, aten.ne, aten.sign, aten.floor, aten.ceil, aten.round,
            aten.trunc, aten.floor_divide, aten.argmax, aten.argmin, aten.isnan, aten.isinf, aten.logical_not, aten.detach,
            aten.sym_size, aten.size, aten.sym_numel, aten.sym_stride, aten.stride):
    _RULES[_op] = _constant
for _overload, _positions, _zeros in (
        (aten._unsafe_index.Tensor, (0,), ()), (aten.index.Tensor, (0,), ()), (aten.gather.default, (0,), ()),
        (aten.index_select.default, (0,), ()), (aten.diagonal.default, (0,), ()), (prims.rev.default, (0,), ()),
        (aten.roll.default, (0,), ()), (aten.cumsum.default, (0,), ()), (aten.repeat.default, (0,), ()),
        (aten.unfold.default, (0,), ()), (aten.alias.default, (0,), ()), (aten.constant_pad_nd.default, (0,), ((2, 0.0),)),
        (aten.avg_pool2d.default, (0,), ()), (aten.avg_pool3d.default, (0,), ()),
        (aten._adaptive_avg_pool2d.default, (0,), ()), (aten._adaptive_avg_pool3d.default, (0,), ()),
        (aten.split.Tensor, (0,), ()), (aten.split_with_sizes.default, (0,), ()), (aten.unbind.int, (0,), ()),
        (aten.copy.default, (0, 1), ()), (aten.scatter.src, (0, 3), ()), (aten.scatter.value, (0,), ((3, 0.0),)),
        (aten.scatter_add.default, (0, 3), ()), (aten.index_put.default, (0, 2), ()),
        (aten.index_add.default, (0, 3), ()), (aten.index_copy.default, (0, 3), ()),
        (aten.diagonal_scatter.default, (0, 1), ()), (aten.select_scatter.default, (0, 1), ()),
        (aten.slice_scatter.default, (0, 1), ()), (aten.masked_scatter.default, (0, 2), ())):
    _RULES[_overload] = partial(_joint, _overload, _positions, _zeros)
for _overload, _dim_at, _keep_at in ((aten.max.dim, 1, 2), (aten.min.dim, 1, 2), (aten.sort.default, 1, None),
                               (aten.sort.stable, None, None), (aten.topk.default, 2, None), (aten.kthvalue.default, 2, 3),
                               (aten.median.dim, 1, 2), (aten.nanmedian.dim, 1, 2), (aten.mode.default, 1, 2),
                               (aten.cummax.default, 1, None), (aten.cummin.default, 1, None)):
    _RULES[_overload] = partial(_selected, _dim_at, _keep_at)
_RULES.update({
    aten.view: partial(_linear, _reshape),
    aten.unsqueeze: partial(_linear, _reshape),
    aten.squeeze: partial(_linear, _reshape),
    aten.clone: partial(_linear, _same),
    prims.convert_element_type: partial(_linear, _cast),
    aten.permute: partial(_linear, _permute),
    aten.expand: partial(_linear, _expand),
    aten.select: partial(_linear, _select),
    aten.slice: partial(_linear, _slice),
    aten.linalg_vector_norm: _vector_norm,
    aten.amax: partial(_linear, _extreme),
    aten.amin: partial(_linear, _extreme),
    aten.sum: partial(_linear, partial(_reduce, False)),
    aten.mean: partial(_linear, partial(_reduce, True)),
    aten.neg: partial(_linear, _negate),
    aten.cat: _cat,
    aten.where: _where,
    aten.add: partial(_add_sub, 1.0),
    aten.sub: partial(_add_sub, -1.0),
    aten.mul: _times,
    aten.div: _div,
    aten.div.Tensor_mode: _div_mode,
    aten.div.Scalar_mode: _div_mode,
    aten.mm: _matmul,
    aten.bmm: _matmul,
    aten.convolution: _conv,
    aten.var_mean: _var_mean,
    aten.var: _var_mean,
    aten.tanh: partial(ew.elementwise, partial(ew.chain, ew.TANH)),
    aten.sigmoid: partial(ew.elementwise, partial(ew.chain, ew.SIGMOID)),
    aten.exp: partial(ew.elementwise, partial(ew.chain, ew.EXP)),
    aten.expm1: partial(ew.elementwise, ew.expm1),
    aten.log: partial(ew.elementwise, partial(ew.logarithm, 0.0)),
    aten.log1p: partial(ew.elementwise, partial(ew.logarithm, 1.0)),
    aten.sin: partial(ew.elementwise, partial(ew.trig, 0)),
    aten.cos: partial(ew.elementwise, partial(ew.trig, 1)),
    aten.erf: partial(ew.elementwise, ew.erf),
    aten.sqrt: partial(ew.elementwise, partial(ew.fixed_power, 0.5)),
    aten.rsqrt: partial(ew.elementwise, partial(ew.fixed_power, -0.5)),
    aten.reciprocal: partial(ew.elementwise, partial(ew.fixed_power, -1.0)),
    aten.pow.Tensor_Scalar: partial(ew.elementwise, ew.scalar_power),
    aten.pow.Tensor_Tensor: _pow_tensor,
    aten.pow.Scalar: _pow_scalar_base,
    aten.relu: partial(ew.elementwise, partial(ew.piecewise_linear, ew.positive)),
    aten.clamp_min: partial(ew.elementwise, partial(ew.piecewise_linear, ew.above)),
    aten.clamp_max: partial(ew.elementwise, partial(ew.piecewise_linear, ew.below)),
    aten.abs: partial(ew.elementwise, ew.absolute),
})
