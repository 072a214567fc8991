"""A small functional optimizer in the optax style, and a compiled train step."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import optree
import torch

from ._typing import LossFn, Params, PyTree
from ._value_and_grad import check_result, grad_step, maybe_compile


class GradientTransformation(NamedTuple):
    """A pure optimizer: ``state = init(params)``; ``updates, state = update(grads, state, params)``."""

    init: Callable[[Params], PyTree]
    update: Callable[[Params, PyTree, Params], tuple[Params, PyTree]]


def apply_updates(params: Params, updates: Params, /) -> Params:
    """``params + updates``, leaf by leaf (new tensors; nothing is modified in place)."""
    return optree.tree_map(torch.add, params, updates)


def sgd(lr: float, *, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0) -> GradientTransformation:
    """Stochastic gradient descent, step for step equal to ``torch.optim.SGD`` (no dampening).

    Example:
      >>> opt = sgd(0.1)
      >>> params = {"w": torch.ones(2)}
      >>> updates, state = opt.update({"w": torch.ones(2)}, opt.init(params), params)
      >>> apply_updates(params, updates)
      {'w': tensor([0.9000, 0.9000])}
    """
    _check_positive("sgd", lr=lr)

    def init(params: Params) -> PyTree:
        return {"momentum": optree.tree_map(torch.zeros_like, params)} if momentum else {}

    def update(grads: Params, state: PyTree, params: Params) -> tuple[Params, PyTree]:
        if weight_decay:
            grads = optree.tree_map(lambda g, p: g + weight_decay * p, grads, params)
        if momentum:
            buf = optree.tree_map(lambda b, g: momentum * b + g, state["momentum"], grads)
            grads = optree.tree_map(lambda g, b: g + momentum * b, grads, buf) if nesterov else buf
            state = {"momentum": buf}
        return optree.tree_map(lambda g: -lr * g, grads), state

    return GradientTransformation(init, update)


def adam(
    lr: float, *, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0
) -> GradientTransformation:
    """Adam (Kingma & Ba 2015), step for step equal to ``torch.optim.Adam``.

    The step count is a tensor, so a compiled train step does not recompile per step.

    Example:
      >>> opt = adam(1e-3)
      >>> state = opt.init({"w": torch.zeros(3)})
      >>> sorted(state)
      ['count', 'mu', 'nu']
    """
    _check_positive("adam", lr=lr)
    b1, b2 = betas

    def init(params: Params) -> PyTree:
        zeros = lambda: optree.tree_map(torch.zeros_like, params)  # noqa: E731
        # float64 count: the bias corrections then match torch.optim.Adam's Python floats.
        return {"count": torch.zeros((), dtype=torch.float64), "mu": zeros(), "nu": zeros()}

    def update(grads: Params, state: PyTree, params: Params) -> tuple[Params, PyTree]:
        if weight_decay:
            grads = optree.tree_map(lambda g, p: g + weight_decay * p, grads, params)
        count = state["count"] + 1
        mu = optree.tree_map(lambda m, g: m.lerp(g, 1 - b1), state["mu"], grads)
        nu = optree.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state["nu"], grads)
        step_size = lr / (1 - b1**count)
        root_correction = (1 - b2**count).sqrt()
        updates = optree.tree_map(
            lambda m, v: (-step_size * m / (v.sqrt() / root_correction + eps)).to(m.dtype), mu, nu
        )
        return updates, {"count": count, "mu": mu, "nu": nu}

    return GradientTransformation(init, update)


def make_step(
    loss: LossFn, optimizer: GradientTransformation, /, *, compile: bool | dict = True, check: bool = True
) -> Callable[..., tuple[Params, PyTree, torch.Tensor]]:
    """A full train step ``(params, opt_state, *batch) -> (params, opt_state, loss)``.

    The loss's gradient (any composition of input derivatives) and the optimizer update
    are one function, compiled as a whole when ``compile`` is set (with the eager fallback
    of :func:`value_and_grad`). ``check`` as in :func:`value_and_grad`.

    Example:
      >>> loss = lambda p, x: ((p["w"] * x) ** 2).sum()
      >>> step = make_step(loss, sgd(0.1), compile=False)
      >>> params, state, value = step({"w": torch.ones(2)}, sgd(0.1).init({}), torch.ones(2))
      >>> params["w"], value
      (tensor([0.8000, 0.8000]), tensor(2.))
    """
    api = "make_step"
    if not isinstance(optimizer, GradientTransformation):
        raise TypeError(
            f"{api}: optimizer must be a functional_grads.optim GradientTransformation "
            f"(e.g. optim.adam(1e-3)), got {type(optimizer).__name__}. For a torch.optim "
            "optimizer, use value_and_grad and apply_grads."
        )
    gstep = grad_step(api, loss, argnums=0, has_aux=False)

    def train_step(params: Params, state: PyTree, *batch: Any) -> Any:
        value, _, grads, flags = gstep(params, *batch)
        updates, state = optimizer.update(grads, state, params)
        return apply_updates(params, updates), state, value, grads, flags

    run = maybe_compile(api, train_step, compile, (0, 1))

    def step(params: Params, state: PyTree, *batch: Any) -> tuple[Params, PyTree, torch.Tensor]:
        params, state, value, grads, flags = run(params, state, *batch)
        if check:
            check_result(api, value, grads, flags)
        return params, state, value

    return step


def _check_positive(api: str, **values: float) -> None:
    for name, v in values.items():
        if not isinstance(v, (int, float)) or v <= 0:
            raise ValueError(f"{api}: {name} must be a positive number, got {v!r}.")
