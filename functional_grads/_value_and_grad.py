"""The outer gradient: a loss's value and its gradient w.r.t. the parameters."""

from __future__ import annotations

from typing import Any, Callable, Literal, overload

from ._engine import Saved, build_step
from ._typing import CompileOption, LossFn


@overload
def value_and_grad(loss: LossFn, /, *, argnums: int | tuple[int, ...] = 0, has_aux: Literal[False] = False,
                   compile: CompileOption = False, check: bool = True) -> Callable[..., tuple[Any, Any]]: ...
@overload
def value_and_grad(loss: LossFn, /, *, argnums: int | tuple[int, ...] = 0, has_aux: Literal[True],
                   compile: CompileOption = False, check: bool = True) -> Callable[..., tuple[tuple[Any, Any], Any]]: ...
def value_and_grad(
    loss: LossFn,
    /,
    *,
    argnums: int | tuple[int, ...] = 0,
    has_aux: bool = False,
    compile: CompileOption = False,  # pragma: no mutate (mutation runs switch compiling off; the default is tested)
    check: bool = True,
) -> Callable[..., Any]:
    """Value of ``loss`` and its gradient w.r.t. the argument(s) at ``argnums``.

    Args:
      loss: ``loss(params, *batch) -> scalar`` (shape ``[]``), e.g. built from
        :func:`input_grad`; any composition of this library's transforms works.
      argnums: which argument(s) to differentiate (default 0, the params).
      has_aux: if True, ``loss`` returns ``(scalar, aux)``.
      compile: if True, the whole step, input derivatives and outer gradient together, is
        traced once per call signature and compiled by inductor, with ``jax.jit``
        semantics (README, "What ``compile=True`` means"): Python values the loss reads
        from closures or globals (other than ``nn.Module`` state, which is checked) are
        constants. ``{"options": {...}}`` passes inductor settings; a dict of
        ``torch.compile`` arguments (``backend``, ``mode``, ``guards``) uses
        ``torch.compile`` instead. What cannot be traced goes to ``torch.compile``, and
        what that cannot compile runs eagerly after one ``CompileFallbackWarning``.
        Default False, as everywhere in this library. Save a compiled step with
        :func:`save_compiled`.
      check: if True (default), raise ``FloatingPointError`` when the loss or a gradient
        holds NaN/Inf, and warn when every gradient is exactly zero (no gradient path).
        Costs one device sync per call. False computes no flags at all, so the function
        can be used under ``vmap``.

    Returns:
      A function ``(params, *batch) -> (loss, grads)`` (``((loss, aux), grads)`` with
      ``has_aux``), ``grads`` shaped like ``params`` (a tuple for a tuple ``argnums``).

    Example:
      >>> loss = lambda p, x: (p["w"] * x).sum() ** 2
      >>> value_and_grad(loss)({"w": torch.ones(2)}, torch.ones(2))
      (tensor(4.), {'w': tensor([4., 4.])})
    """
    step = build_step("value_and_grad", loss, argnums=argnums, has_aux=has_aux, compile=compile, check=check)
    return around_step(step, has_aux=has_aux)


def around_step(step: Callable[..., Any], *, has_aux: bool) -> Callable[..., Any]:
    """The public ``value_and_grad`` function around a step core (built or loaded)."""

    def value_and_grad_fn(*args: Any) -> Any:
        result = step(*args)
        return ((result.value, result.aux) if has_aux else result.value), result.grads

    value_and_grad_fn.saved = Saved("value_and_grad", has_aux, step)  # type: ignore[attr-defined]  # pragma: no mutate (read by save_compiled, which compiles)
    return value_and_grad_fn


@overload
def grad(loss: LossFn, /, *, argnums: int | tuple[int, ...] = 0, has_aux: Literal[False] = False,
         compile: CompileOption = False, check: bool = True) -> Callable[..., Any]: ...
@overload
def grad(loss: LossFn, /, *, argnums: int | tuple[int, ...] = 0, has_aux: Literal[True],
         compile: CompileOption = False, check: bool = True) -> Callable[..., tuple[Any, Any]]: ...
def grad(
    loss: LossFn,
    /,
    *,
    argnums: int | tuple[int, ...] = 0,
    has_aux: bool = False,
    compile: CompileOption = False,  # pragma: no mutate (mutation runs switch compiling off; the default is tested)
    check: bool = True,
) -> Callable[..., Any]:
    """The gradient of ``loss`` w.r.t. the argument(s) at ``argnums``: :func:`value_and_grad`
    without the value.

    Returns:
      A function ``(params, *batch) -> grads`` (``(grads, aux)`` with ``has_aux``).

    Example:
      >>> grad(lambda p, x: (p["w"] * x).sum())({"w": torch.ones(2)}, torch.tensor([1.0, 2.0]))
      {'w': tensor([1., 2.])}
    """
    step = build_step("grad", loss, argnums=argnums, has_aux=has_aux, compile=compile, check=check)
    return around_value_and_grad(around_step(step, has_aux=has_aux), has_aux=has_aux)


def around_value_and_grad(vg: Callable[..., Any], *, has_aux: bool) -> Callable[..., Any]:
    """The public ``grad`` function around a ``value_and_grad`` function."""

    def grad_fn(*args: Any) -> Any:
        out, grads = vg(*args)
        return (grads, out[1]) if has_aux else grads

    grad_fn.saved = Saved("grad", has_aux, vg.saved.step)  # type: ignore[attr-defined]  # pragma: no mutate (read by save_compiled, which compiles)
    return grad_fn
