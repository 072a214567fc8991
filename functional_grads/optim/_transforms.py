"""Pure gradient transformations in the optax style, and the optimizers built from them.

A transformation is a pair ``init(params) -> state`` and
``update(updates, state, params=None, **extra) -> (updates, state)``; ``chain`` runs
several in order. ``extra`` carries what some transformations need beside the gradient
(L-BFGS's line search needs ``value`` and ``value_fn``); the others ignore it.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Union

import optree
import torch
from torch import Tensor

from .. import _checks
from .._typing import Params, PyTree

Schedule = Callable[[Tensor], Union[Tensor, float]]
"""``step -> learning rate``, with ``step`` the number of updates done so far (an int64 tensor)."""


class GradientTransformation(NamedTuple):
    """A pure optimizer: ``state = init(params)``; ``updates, state = update(grads, state, params)``."""

    init: Callable[[Params], PyTree]
    update: Callable[..., tuple[Params, PyTree]]


class EmptyState(NamedTuple):
    """The state of a transformation that keeps none."""


class TraceState(NamedTuple):
    momentum: Params


class ScaleByAdamState(NamedTuple):
    step: Tensor
    mu: Params
    nu: Params


class ScheduleState(NamedTuple):
    step: Tensor


def apply_updates(params: Params, updates: Params, /) -> Params:
    """``params + updates``, leaf by leaf (new tensors; nothing is modified in place)."""
    return optree.tree_map(torch.add, params, updates)


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply ``transforms`` in order; the state is the tuple of their states.

    Example:
      >>> opt = chain(clip_by_global_norm(1.0), add_decayed_weights(1e-4), adam(1e-3))
      >>> state = opt.init({"w": torch.zeros(3)})
      >>> len(state)
      3
    """
    for i, t in enumerate(transforms):
        if not isinstance(t, GradientTransformation):
            raise TypeError(f"chain: argument {i} must be a GradientTransformation, got {type(t).__name__}.")

    def init(params: Params) -> PyTree:
        return tuple(t.init(params) for t in transforms)

    def update(updates: Params, state: PyTree, params: Params = None, **extra: Any) -> tuple[Params, PyTree]:
        if not isinstance(state, tuple) or len(state) != len(transforms):
            raise ValueError(f"chain: state must be the tuple of {len(transforms)} states from init, got {type(state).__name__}.")
        states = []
        for t, s in zip(transforms, state):
            updates, s = t.update(updates, s, params, **extra)
            states.append(s)
        return updates, tuple(states)

    return GradientTransformation(init, update)


def scale(factor: float) -> GradientTransformation:
    """Multiply the updates by a constant ``factor``."""
    _checks.check_number("scale", "factor", factor, low=-math.inf)
    return _stateless(lambda u, p: optree.tree_map(lambda g: factor * g, u))


def scale_by_learning_rate(lr: float | Schedule) -> GradientTransformation:
    """``-lr * updates`` (descent), ``lr`` a positive number or a :data:`Schedule`.

    Example:
      >>> opt = scale_by_learning_rate(lambda step: 0.1 / (1 + step))
      >>> state = opt.init({"w": torch.zeros(1)})
      >>> opt.update({"w": torch.ones(1)}, state)[0]
      {'w': tensor([-0.1000])}
    """
    api = "scale_by_learning_rate"
    if not callable(lr):
        _checks.check_number(api, "lr", lr, strict=True)
        return _stateless(lambda u, p: optree.tree_map(lambda g: -lr * g, u))

    def init(params: Params) -> ScheduleState:
        return ScheduleState(torch.zeros((), dtype=torch.int64))

    def update(updates: Params, state: ScheduleState, params: Params = None, **extra: Any) -> tuple[Params, PyTree]:
        rate = lr(state.step)
        return optree.tree_map(lambda g: -rate * g, updates), ScheduleState(state.step + 1)

    return GradientTransformation(init, update)


def add_decayed_weights(weight_decay: float) -> GradientTransformation:
    """``updates + weight_decay * params`` (L2 regularisation, ``torch.optim``'s ``weight_decay``).

    Before ``adam`` this is Adam's coupled decay; for AdamW's decoupled decay chain it after
    ``scale_by_adam`` and before ``scale_by_learning_rate``.
    """
    _checks.check_number("add_decayed_weights", "weight_decay", weight_decay)

    def add(updates: Params, params: Params) -> Params:
        if params is None:
            raise TypeError("add_decayed_weights: update needs params: call update(grads, state, params).")
        return optree.tree_map(lambda g, p: g + weight_decay * p, updates, params)

    return _stateless(add)


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Scale the updates down so that their global L2 norm is at most ``max_norm``
    (``torch.nn.utils.clip_grad_norm_``'s rule).

    When the updates are one shard of a larger pytree (sharded data-parallel training),
    ``update(..., psum=fn)`` sums the squared norm over the shards with ``fn``.
    """
    _checks.check_number("clip_by_global_norm", "max_norm", max_norm, strict=True)

    def update(updates: Params, state: EmptyState, params: Params = None, **extra: Any) -> tuple[Params, PyTree]:
        leaves = optree.tree_leaves(updates)
        if not leaves:
            return updates, state
        squared = torch.stack([torch.linalg.vector_norm(g) ** 2 for g in leaves]).sum()
        total = extra["psum"](squared).sqrt() if "psum" in extra else squared.sqrt()
        factor = (max_norm / (total + 1e-6)).clamp(max=1.0)
        return optree.tree_map(lambda g: g * factor.to(g.dtype), updates), state

    return GradientTransformation(lambda params: EmptyState(), update)


def trace(momentum: float, *, nesterov: bool = False) -> GradientTransformation:
    """Momentum as ``torch.optim.SGD`` keeps it (no dampening): ``b = momentum * b + g``."""
    api = "trace"
    _checks.check_number(api, "momentum", momentum, high=1.0)
    if nesterov and momentum == 0:
        raise ValueError(f"{api}: nesterov=True needs a momentum > 0 (as torch.optim.SGD requires).")

    def init(params: Params) -> TraceState:
        return TraceState(optree.tree_map(torch.zeros_like, params))

    def update(updates: Params, state: TraceState, params: Params = None, **extra: Any) -> tuple[Params, PyTree]:
        _check_state_shapes(api, state.momentum, updates)
        buf = optree.tree_map(lambda b, g: momentum * b + g, state.momentum, updates)
        out = optree.tree_map(lambda g, b: g + momentum * b, updates, buf) if nesterov else buf
        return out, TraceState(buf)

    return GradientTransformation(init, update)


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    """Adam's bias-corrected ``m / (sqrt(v) + eps)``, as ``torch.optim.Adam`` computes it.

    The step count is a tensor, so a compiled train step does not recompile per step.
    """
    api = "scale_by_adam"
    for name, b in (("b1", b1), ("b2", b2)):
        _checks.check_number(api, f"betas ({name})", b, high=1.0)
        if b >= 1:
            raise ValueError(f"{api}: betas ({name}) must be in [0, 1), got {b!r}.")
    _checks.check_number(api, "eps", eps)

    def init(params: Params) -> ScaleByAdamState:
        zeros = lambda: optree.tree_map(torch.zeros_like, params)  # noqa: E731
        # float64 count: the bias corrections then match torch.optim.Adam's Python floats.
        return ScaleByAdamState(torch.zeros((), dtype=torch.float64), zeros(), zeros())

    def update(updates: Params, state: ScaleByAdamState, params: Params = None, **extra: Any) -> tuple[Params, PyTree]:
        _check_state_shapes(api, state.mu, updates)
        count = state.step + 1
        mu = optree.tree_map(lambda m, g: m.lerp(g, 1 - b1), state.mu, updates)
        nu = optree.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, updates)
        correction = 1 / (1 - b1**count)
        root_correction = (1 - b2**count).sqrt()
        out = optree.tree_map(lambda m, v: (correction * m / (v.sqrt() / root_correction + eps)).to(m.dtype), mu, nu)
        return out, ScaleByAdamState(count, mu, nu)

    return GradientTransformation(init, update)


def sgd(lr: float | Schedule, *, momentum: float = 0.0, nesterov: bool = False) -> GradientTransformation:
    """Stochastic gradient descent, step for step equal to ``torch.optim.SGD`` (no dampening).

    For ``torch.optim``'s ``weight_decay``, chain ``add_decayed_weights`` in front.

    Example:
      >>> opt = sgd(0.1)
      >>> params = {"w": torch.ones(2)}
      >>> updates, state = opt.update({"w": torch.ones(2)}, opt.init(params), params)
      >>> apply_updates(params, updates)
      {'w': tensor([0.9000, 0.9000])}
    """
    parts = [trace(momentum, nesterov=nesterov)] if momentum or nesterov else []
    return chain(*parts, scale_by_learning_rate(lr))


def adam(lr: float | Schedule, *, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> GradientTransformation:
    """Adam (Kingma & Ba 2015), step for step equal to ``torch.optim.Adam``.

    For ``torch.optim.Adam``'s ``weight_decay``, chain ``add_decayed_weights`` in front;
    for AdamW's, see :func:`add_decayed_weights`.

    Example:
      >>> opt = adam(1e-3)
      >>> type(opt.init({"w": torch.zeros(3)})[0]).__name__
      'ScaleByAdamState'
    """
    if not (isinstance(betas, tuple) and len(betas) == 2):
        raise TypeError(f"adam: betas must be a pair (b1, b2), got {betas!r}.")
    return chain(scale_by_adam(*betas, eps), scale_by_learning_rate(lr))


def _check_state_shapes(api: str, state: Params, updates: Params) -> None:
    """Raise unless every state leaf has its gradient's shape: a state built for other
    params would otherwise broadcast silently."""
    for s, g in zip(optree.tree_leaves(state), optree.tree_leaves(updates)):
        if s.shape != g.shape:
            raise ValueError(
                f"{api}: a state leaf has shape {_checks.fmt(s.shape)} but its gradient has "
                f"{_checks.fmt(g.shape)}: the state was built for other params. Build a new one with "
                "state = optimizer.init(params).")


def _stateless(fn: Callable[[Params, Params], Params]) -> GradientTransformation:
    def init(params: Params) -> EmptyState:
        return EmptyState()

    def update(updates: Params, state: EmptyState, params: Params = None, **extra: Any) -> tuple[Params, PyTree]:
        return fn(updates, params), state

    return GradientTransformation(init, update)
