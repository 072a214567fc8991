"""The operators' one directional core: Taylor coefficients of ``f`` along directions, by
the Taylor engine (``_taylor``), or by the fallback, nested reverse mode, where the engine
cannot run ``f`` for a call signature (NOTE [fallback batching]).

Every operator (``laplacian``, ``derivatives``, ``partials``, ``partial_derivative``,
``biharmonic``, ``divergence``) builds its directions and weights (``_directions``) and calls
one :class:`Directional`: a new operator is a new set of directions, not a new code path.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import optree
import torch
from torch import Tensor
from torch.func import jacrev
from torch.nn.attention import SDPBackend, sdpa_kernel

from .._constants import autograd_constants
from .._context import plain_autograd
from .._per_sample import DataDependent, loop_samples, map_samples
from .._typing import InDims
from ._jet import Mode
from ._taylor import Engine, Unsupported, mapped

class Directional:
    """Taylor coefficients of ``f`` along directions: the engine (NOTE [Taylor engine]), or
    nested reverse mode when the engine cannot run ``f`` (NOTE [fallback batching]).

    ``directional(args, V, w, order) -> (value [B, *out], lower, top)``: ``V [K, D]`` (shared)
    or ``[B, K, D]`` (per sample) directions in the flattened sample; ``lower[m - 1]
    [K, B, *out]`` the coefficients of order ``m < order``; ``top`` the top order's:
    ``sum_k w_k c_k [B, *out]`` for weights ``w [K]`` or ``[B, K]``, ``[K, B, *out]`` for
    ``w=None``. ``c_m = D^m_v f / m!``.
    """

    def __init__(self, api: str, f: Callable[..., Tensor], *, argnums: int, in_dims: InDims,
                 chunk_size: int | None, randomness: str):
        self.api, self.f, self.argnums, self.in_dims = api, f, argnums, in_dims
        self.chunk_size, self.randomness = chunk_size, randomness
        self.engine = Engine(api, f, argnums, in_dims, randomness)
        self.served = ""
        """What served the last call: ``"engine"``, ``"fallback"`` or ``"loop"`` (tests, the sweep)."""

    def __call__(self, args: Sequence[Any], V: Tensor, w: Tensor | None, order: int) -> tuple[Tensor, list[Tensor], Tensor]:
        try:
            out = self._engine(args, V, w, order)
            self.served = "engine"
            return out
        except Unsupported as e:  # decided per call signature: the engine caches its traces and refusals
            self.engine.traces.log_once(f"{self.api}: the Taylor engine cannot run f ({e}); using nested reverse mode")
        return self.fallback(args, V, w, order)

    def _engine(self, args: Sequence[Any], V: Tensor, w: Tensor | None, order: int) -> tuple[Tensor, list[Tensor], Tensor]:
        X = args[self.argnums]
        shared = V.ndim == 2
        collapse = w if shared and w is not None else None
        mode = Mode(order, collapse)
        B = X.shape[0]
        chunk = self.chunk_size or B
        values, jets = [], []
        # one chunk of the whole batch is the batch itself: the same values, without slicing
        for start in range(0, B, chunk) if chunk < B else [0]:  # pragma: no mutate (see above)
            part = _rows(args, self.argnums, self.in_dims, start, chunk) if chunk < B else list(args)  # pragma: no mutate
            Xp = part[self.argnums]
            Vp = V if shared else V[start:start + chunk]
            K = Vp.shape[-2]
            tangent = (Vp.reshape(K, 1, *Xp.shape[1:]) if shared  # pragma: no mutate (jets are padded after K anyway)
                       else Vp.transpose(0, 1).reshape(K, Xp.shape[0], *Xp.shape[1:]))
            value, jet = self.engine(part, tangent, mode)
            values.append(value)
            jets.append(jet)
        value = values[0] if len(values) == 1 else torch.cat(values)  # pragma: no mutate (cat of one: the same)
        jet = jets[0] if len(jets) == 1 else [torch.cat(cs, 1 if mode.per_direction(m) else 0)  # pragma: no mutate
                                              for m, cs in enumerate(zip(*jets), 1)]
        top = jet[-1]
        if w is not None and collapse is None:  # per-sample weights: collapse here
            top = _weighted(top, w)
        return value, jet[:-1], top

    def fallback(self, args: Sequence[Any], V: Tensor, w: Tensor | None, order: int) -> tuple[Tensor, list[Tensor], Tensor]:
        """Nested reverse mode per sample (NOTE [fallback batching]); the same contract."""
        f = autograd_constants(self.f)  # NOTE [autograd's constants]
        with sdpa_kernel(SDPBackend.MATH):  # the fused attention kernels have no second derivative
            if plain_autograd():
                grad_enabled = torch.is_grad_enabled()
                with torch.enable_grad():
                    value, lower, top = self._by_autograd(f, args, V, order, loop=False)
                    if not all(bool(torch.isfinite(c).all()) for c in (value, *lower, top)):
                        value, lower, top = self._by_autograd(f, args, V, order, loop=True)
                if not grad_enabled:  # called under no_grad: results without a graph, as there
                    value, lower, top = value.detach(), [c.detach() for c in lower], top.detach()
            else:
                value, lower, top = self._by_func(f, args, V, order)
        return value, lower, top if w is None else _weighted(top, w)

    def _by_autograd(self, f: Callable[..., Tensor], args: Sequence[Any], V: Tensor, order: int,
                     loop: bool) -> tuple[Tensor, list[Tensor], Tensor]:
        """``torch.autograd.grad`` nested ``order`` times along each direction, all samples
        at once: ``t [B]`` moves sample ``b`` along ``v_b``, and since samples are mapped
        apart, the gradient of the sum over samples is each sample's own derivative. ``loop``:
        the samples mapped one at a time (NOTE [fallback batching])."""
        X, argnums = args[self.argnums], self.argnums
        B, K = X.shape[0], V.shape[-2]
        per_direction = []
        for k in range(K):
            v = (V[k] if V.ndim == 2 else V[:, k]).reshape(-1 if V.ndim == 3 else 1, *X.shape[1:])
            t = X.new_zeros(B, requires_grad=True)
            moved = list(args)
            moved[argnums] = X + t.reshape(B, *(1,) * (X.ndim - 1)) * v
            y = self._mapped(f, moved, loop=loop)  # [B, *out]
            flat, coefficients = y.reshape(B, -1), [y]
            for m in range(1, order + 1):
                flat = torch.stack([_d_dt(flat[:, j].sum(), t) for j in range(flat.shape[1])], 1)
                coefficients.append(flat.reshape(y.shape) / math.factorial(m))
            per_direction.append(torch.stack(coefficients))
        c = torch.stack(per_direction)  # [K, order + 1, B, *out]
        return c[:, 0].mean(0), list(c[:, 1:-1].unbind(1)), c[:, -1]

    def _mapped(self, f: Callable[..., Tensor], args: Sequence[Any], extra: tuple[Any, ...] = (),
                loop: bool = False) -> Tensor:
        """``f`` mapped over the samples: by vmap, or one sample at a time (``loop``, or for a
        data-dependent ``f``)."""
        api, argnums, randomness, in_dims = self.api, self.argnums, self.randomness, self.in_dims
        if not loop:
            try:
                out = map_samples(api, f, args, argnums=argnums, chunk_size=self.chunk_size, randomness=randomness,
                                  in_dims=in_dims, extra=extra)
                self.served = "fallback"
                return out
            except DataDependent:
                self.engine.traces.log_once(f"{api}: f has data-dependent control flow, which vmap cannot map over "
                                            "samples; running it one sample at a time")
        self.served = "loop"
        return loop_samples(api, f, args, argnums=argnums, randomness=randomness, in_dims=in_dims, extra=extra)

    def _by_func(self, f: Callable[..., Tensor], args: Sequence[Any], V: Tensor,
                 order: int) -> tuple[Tensor, list[Tensor], Tensor]:
        """The same by ``torch.func.jacrev``, inside a torch.func transform or a trace."""
        argnums, per_sample = self.argnums, V.ndim == 3

        def one(*a: Any) -> Tensor:
            *rest, Vs = a if per_sample else (*a, V)
            x = rest[argnums]

            def fx(y: Tensor) -> Tensor:
                b = list(rest)
                b[argnums] = y
                return f(*b)

            def along(v: Tensor) -> Tensor:  # [order + 1, *out]: c_m = d^m/dt^m f(x + t v) / m! at t = 0
                v = v.reshape(x.shape)
                h: Callable[[Tensor], tuple[Tensor, tuple[Tensor, ...]]] = lambda t: _with_seen(fx(x + t * v), ())  # noqa: E731
                for _ in range(order):
                    h = _differentiated(h)
                _, derivatives = h(x.new_zeros(()))
                return torch.stack([d / math.factorial(m) for m, d in enumerate(derivatives)])

            return torch.stack([along(v) for v in Vs])  # [K, order + 1, *out]

        c = self._mapped(one, args, (V,) if per_sample else ()).movedim(0, 2)  # [K, order + 1, B, *out]
        return c[:, 0].mean(0), list(c[:, 1:-1].unbind(1)), c[:, -1]  # every direction has the value


def _d_dt(y: Tensor, t: Tensor) -> Tensor:
    """``dy/dt`` by ``torch.autograd.grad``, keeping the graph (higher orders, params); zeros
    where ``y`` no longer depends on ``t``."""
    if not y.requires_grad:
        return torch.zeros_like(t)
    return torch.autograd.grad(y, t, create_graph=True, allow_unused=True, materialize_grads=True)[0]


def _with_seen(d: Tensor, seen: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
    return d, (*seen, d)


def _differentiated(h: Callable[[Tensor], tuple[Tensor, tuple[Tensor, ...]]]) -> Callable[[Tensor], Any]:
    """``t -> (d/dt of h's output, h's outputs so far and it)``, by reverse mode."""
    return lambda t: _with_seen(*jacrev(h, has_aux=True)(t))


# NOTE [fallback batching]: the fallback is nested reverse mode, the reference the engine is
# held to: c_m along v is the m-th derivative of t -> f(x + t v) at 0. Eagerly (outside
# torch.func transforms and traces) it is torch.autograd.grad itself, nested m times, all
# samples at once (one t per sample; the samples are mapped apart, so the sum's gradient
# is each sample's): torch.func's triple jacrev of det is NaN where torch.autograd is finite
# (torch 2.13). Inside a transform or a trace, m nested jacrev (a scalar t: one
# vector-Jacobian product per output component). Forward mode is not used:
# torch's forward-mode formulas differentiated again are wrong for some ops (logdet's third
# derivative by jvp(jvp(jacrev)): 8.617 where autograd and finite differences give 7.010,
# torch 2.13; layer_norm: NOTE [nested jvp of norms]). The samples are mapped with vmap,
# the directions looped in Python: vmap over directions inside vmap over samples (as
# vmap(torch.func.hessian(f)) does) gave wrong numbers for every sample but the first
# (logdet, max error 57). An f whose Python control flow reads tensor values (an `if` on a
# tensor, .item()) cannot run under vmap at all; it runs one sample at a time. So does the
# eager fallback when vmap's batched op has a non-finite derivative where the op on one
# sample has none (logcumsumexp of a 0-d tensor: NaN third derivative batched, 0 alone).


def _weighted(c: Tensor, w: Tensor) -> Tensor:
    """``sum_k w_k c_k``: ``c [K, B, *out]`` with ``w [K]`` or per sample ``[B, K]``."""
    w = w.to(c.dtype)
    if w.ndim == 1:
        return torch.tensordot(w, c, 1)
    return (c * w.T.reshape(*w.T.shape, *(1,) * (c.ndim - 2))).sum(0)


def _rows(args: Sequence[Any], argnums: int, in_dims: InDims, start: int, size: int) -> list[Any]:
    """Rows ``start:start + size`` of every argument mapped over the batch."""
    dims = mapped(args, argnums, in_dims)
    return [optree.tree_map(lambda t: t[start:start + size], a) if d == 0 else a for a, d in zip(args, dims)]
