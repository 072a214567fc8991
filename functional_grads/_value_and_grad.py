"""The outer gradient: a loss's value and its gradient w.r.t. the parameters."""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import optree
import torch
from torch import Tensor

from . import _checks
from ._compile import compile_or_eager
from ._typing import LossFn


def value_and_grad(
    loss: LossFn,
    /,
    *,
    argnums: int | tuple[int, ...] = 0,
    has_aux: bool = False,
    compile: bool | dict = False,
    check: bool = True,
) -> Callable[..., Any]:
    """Value of ``loss`` and its gradient w.r.t. the argument(s) at ``argnums``.

    Args:
      loss: ``loss(params, *batch) -> scalar`` (shape ``[]``), e.g. built from
        :func:`input_grad`; any composition of this library's transforms works.
      argnums: which argument(s) to differentiate (default 0, the params).
      has_aux: if True, ``loss`` returns ``(scalar, aux)``.
      compile: if True (or a dict of ``torch.compile`` options), the whole step, input
        derivatives and outer gradient together, is one ``torch.compile(fullgraph=True)``
        function. If compilation fails, it warns once (``CompileFallbackWarning``) and
        runs eagerly.
      check: if True (default), raise ``FloatingPointError`` when the loss or a gradient
        holds NaN/Inf, and warn when every gradient is exactly zero (no gradient path).
        Costs one device sync per call; pass False in tight GPU loops or under ``vmap``.

    Returns:
      A function ``(params, *batch) -> (loss, grads)`` (``((loss, aux), grads)`` with
      ``has_aux``), ``grads`` shaped like ``params`` (a tuple for a tuple ``argnums``).

    Example:
      >>> loss = lambda p, x: (p["w"] * x).sum() ** 2
      >>> value_and_grad(loss)({"w": torch.ones(2)}, torch.ones(2))
      (tensor(4.), {'w': tensor([4., 4.])})
    """
    api = "value_and_grad"
    step = grad_step(api, loss, argnums=argnums, has_aux=has_aux)
    run = maybe_compile(api, step, compile, argnums)

    def value_and_grad_fn(*args: Any) -> Any:
        value, aux, grads, flags = run(*args)
        if check:
            check_result(api, value, grads, flags)
        return ((value, aux) if has_aux else value), grads

    return value_and_grad_fn


def grad_step(api: str, loss: LossFn, *, argnums: Any, has_aux: bool) -> Callable[..., Any]:
    """``(*args) -> (value, aux, grads, flags)``, a pure function fit for ``torch.compile``.

    ``flags`` is a bool tensor ``[2]``: (loss and grads finite, some gradient nonzero).
    """
    _checks.check_callable(api, loss, "loss")

    def checked_loss(*args: Any) -> Any:
        out = loss(*args)
        value = _checks.split_aux(api, out)[0] if has_aux else out
        _checks.check_tensor_output(api, value, "loss")
        if value.shape != ():
            raise ValueError(
                f"{api}: loss must return a scalar (shape []), got shape "
                f"{_checks.fmt(value.shape)}. Reduce it, e.g. with .mean() or .sum()."
            )
        return out

    grad_fn = torch.func.grad_and_value(checked_loss, argnums=argnums, has_aux=has_aux)

    def step(*args: Any) -> Any:
        grads, out = grad_fn(*args)
        value, aux = out if has_aux else (out, None)
        return value, aux, grads, _flags(value, optree.tree_leaves(grads))

    return step


def _flags(value: Tensor, leaves: list[Tensor]) -> Tensor:
    """``[2]`` bool: (value and every leaf finite, some leaf nonzero), in few kernels."""
    if not leaves:
        finite = torch.isfinite(value)
        return torch.stack([finite, finite])
    # The max-abs norm of each leaf, in one fused launch: NaN or Inf for a leaf holding
    # either (it cannot overflow, unlike the 2-norm), 0 only for an all-zero leaf.
    peaks = torch.stack(torch._foreach_norm(leaves, math.inf))
    finite = torch.isfinite(value) & torch.isfinite(peaks).all()
    return torch.stack([finite, (peaks > 0).any()])


def maybe_compile(api: str, step: Callable[..., Any], compile: Any, argnums: Any) -> Callable[..., Any]:
    """``step`` compiled per ``compile`` (False, True or torch.compile options), else as is."""
    if not isinstance(compile, (bool, dict)):
        raise TypeError(f"{api}: compile must be a bool or a dict of torch.compile options, got {compile!r}.")
    if not compile:
        return step
    static = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    return compile_or_eager(step, api=api, options=compile, static=static)


def check_result(api: str, value: Tensor, grads: Any, flags: Tensor) -> None:
    """Raise on NaN/Inf, warn on an all-zero gradient (``flags`` from :func:`grad_step`)."""
    finite, nonzero = flags.tolist()
    if not finite:
        paths, leaves, _ = optree.tree_flatten_with_path(grads)
        bad = ["grads" + "".join(f"[{k!r}]" for k in p) for p, g in zip(paths, leaves) if not torch.isfinite(g).all()]
        raise FloatingPointError(
            f"{api}: non-finite result: loss = {value.item()}, gradient leaves with NaN/Inf: "
            f"{bad}. Check the data for NaN/Inf, lower the learning rate, or look for a "
            "norm/sqrt/log evaluated at 0 inside the loss."
        )
    if not nonzero:
        warnings.warn(
            f"{api}: the gradient is exactly zero for every parameter, so training would not "
            "change them. Either the loss has no gradient path to the params (a detached "
            "tensor, or params not used), or the model is piecewise linear (e.g. ReLU) and "
            "the loss uses its second derivatives, which vanish: use a smooth activation "
            "(tanh, softplus, gelu, silu).",
            RuntimeWarning,
            stacklevel=3,
        )
