"""The step core: a loss's value and gradient, optionally reduced across processes and
fed to an optimizer, as one pure function that is compiled as a whole, and the checks on
its results. ``value_and_grad``, ``make_step`` and ``distributed.data_parallel`` are thin
wrappers around :func:`build_step`.

NOTE [step core]: the pure step is ``args -> (StepResult, flags)``:
  1. ``grad_step``: value, aux and gradient w.r.t. the differentiated arguments;
  2. ``reduce`` (data-parallel): gradients and value combined across ranks, plus an
     ``info`` tensor that ``check_reduced`` inspects on the host;
  3. ``update`` (an :class:`Update`, e.g. :func:`optimizer_update`): the new params and
     state from the gradients (sharded data-parallel modes slice, update and gather here,
     and hold params in their own form, which ``Update.loss_params`` turns into the
     pytree the loss takes);
  4. ``flags``: three numbers that decide the result check.
It is compiled in one piece (``maybe_compile``); the wrapper refuses ``check=True`` inside
torch.func transforms, runs it, explains a mismatched optimizer state, and checks results.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import optree
import torch
from torch import Tensor

from . import _checks
from ._compile import maybe_compile
from ._context import compiling, in_transform, plain_autograd
from ._typing import CompileOption, LossFn
from .optim._transforms import GradientTransformation, apply_updates

Reduce = Callable[[Tensor, Any, tuple[Any, ...]], "tuple[Tensor, Any, Tensor]"]
"""``(value, grads, batch) -> (value, grads, info)``: a cross-process combination."""


class Update(NamedTuple):
    """How a train step turns gradients into new params and optimizer state."""

    loss_params: Callable[[Any], Any]
    """params as the step holds them -> the params pytree the loss takes."""
    apply: Callable[[Any, Any, Any], "tuple[Any, Any]"]
    """``(params, state, grads) -> (params, state)``."""
    init: Callable[[Any], Any]
    """params as held -> a fresh state (used to explain a mismatched state)."""


def optimizer_update(optimizer: GradientTransformation) -> Update:
    """The plain update: ``optimizer.update`` on the whole params pytree."""

    def apply(params: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        updates, state = optimizer.update(grads, state, params)
        return apply_updates(params, updates), state

    return Update(lambda params: params, apply, optimizer.init)


class Core(NamedTuple):
    """A built step's pure core, which :func:`functional_grads.save_compiled` traces."""

    api: str
    pure: Callable[..., Any]
    """``args -> (StepResult, flags)`` (NOTE [step core])."""
    static: tuple[int, ...]
    """The positions of the arguments that are not batches."""
    check: bool


class Saved(NamedTuple):
    """What :func:`functional_grads.save_compiled` reads from a public step function."""

    kind: str
    """The public API: ``"value_and_grad"``, ``"grad"`` or ``"make_step"``."""
    has_aux: bool
    step: Callable[..., Any]
    """The checked step from :func:`build_step`, its :class:`Core` as ``step.core``."""


class StepResult(NamedTuple):
    """What one step returns: ``params`` and ``state`` are the updated ones (None
    without an ``update``), ``info`` what ``reduce`` reported (None without one)."""

    value: Tensor
    aux: Any
    grads: Any
    params: Any
    state: Any
    info: Any


def build_step(
    api: str,
    loss: LossFn,
    *,
    argnums: int | tuple[int, ...] = 0,
    has_aux: bool = False,
    update: Update | None = None,
    reduce: Reduce | None = None,
    check_reduced: Callable[[Tensor], None] | None = None,
    compile: CompileOption,
    check: bool,
    hint: str = "",
) -> Callable[..., StepResult]:
    """The one step core (NOTE [step core]).

    Without ``update``: ``(*args) -> StepResult`` with the gradient w.r.t. ``argnums``.
    With one: ``(params, state, *batch) -> StepResult``, the gradient w.r.t. ``params``.
    """
    gstep = grad_step(api, loss, argnums=argnums, has_aux=has_aux)
    # The arguments that are not batches: compile keeps their sizes static; the empty-batch hint
    # skips them. Params and state are never bare tensors with an empty batch, so only compile
    # sees a mistake here, and mutation runs do not compile.
    positions = (argnums,) if isinstance(argnums, int) else tuple(argnums)  # pragma: no mutate (see above)
    static = (0, 1) if update is not None else positions  # pragma: no mutate (see above)

    def pure(*args: Any) -> tuple[StepResult, Any]:
        params = state = info = None  # pragma: no mutate (read only where an update or reduce sets them)
        if update is None:
            value, aux, grads = gstep(*args)
        else:
            params, state, *batch = args
            value, aux, grads = gstep(update.loss_params(params), *batch)
            if reduce is not None:
                value, grads, info = reduce(value, grads, tuple(batch))
            params, state = update.apply(params, state, grads)
        return StepResult(value, aux, grads, params, state, info), flags(value, grads, params) if check else None

    step = checked(api, maybe_compile(api, pure, compile, static), update=update, check=check,  # pragma: no mutate (see above)
                   static=static, check_reduced=check_reduced, hint=hint)
    step.core = Core(api, pure, static, check)  # type: ignore[attr-defined]  # pragma: no mutate (read by save_compiled, which compiles)
    return step


def checked(
    api: str,
    run: Callable[..., tuple[StepResult, Any]],
    *,
    update: Update | None,
    check: bool,
    static: tuple[int, ...],
    check_reduced: Callable[[Tensor], None] | None = None,
    hint: str,
) -> Callable[..., StepResult]:
    """``run`` (a pure step, compiled or loaded) with the checks of NOTE [step core]: refuse
    ``check=True`` inside transforms, explain a mismatched optimizer state (given ``update``),
    check results (the updated params too, where the step returns them)."""

    def step(*args: Any) -> StepResult:
        if check:
            refuse_transforms(api)
        try:
            result, fl = run(*args)
        except Exception as error:
            if update is not None:
                check_state(api, update, args, error)
            raise
        if check_reduced is not None:
            check_reduced(result.info)
        if check:
            check_result(api, result.value, result.grads, fl, hint=lambda: _empty_batch_hint(args, static) or hint,
                         params=result.params)
        return result

    return step


def check_state(api: str, update: Update, args: tuple[Any, ...], error: Exception) -> None:
    """Raise a clear error, from ``error``, if the state ``args[1]`` is not shaped like
    ``update.init(args[0])`` (state kept from other params); else return."""
    try:
        params, state = args[:2]
        fresh = update.init(optree.tree_map(lambda t: t.to("meta"), params))  # allocates nothing
    except Exception:  # noqa: BLE001 - no state, or params the optimizer cannot init: the original error says more
        return
    shape = lambda t: getattr(t, "shape", None)  # noqa: E731
    paths, leaves, spec = optree.tree_flatten_with_path(fresh)
    got_leaves, got_spec = optree.tree_flatten(state)
    if got_spec == spec and [shape(t) for t in got_leaves] == [shape(t) for t in leaves]:
        return
    raise ValueError(
        f"{api}: opt_state does not fit params: optimizer.init(params) gives the structure {spec} "
        f"but the state passed has {got_spec} (or other leaf shapes). The state was built for other "
        "params (other keys or shapes, e.g. before functionalize was called again); build a new one "
        "with state = optimizer.init(params)."
    ) from error


def grad_step(api: str, loss: LossFn, *, argnums: Any, has_aux: bool) -> Callable[..., Any]:
    """``(*args) -> (value, aux, grads)``, a pure function fit for ``torch.compile``."""
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
    positions = (argnums,) if isinstance(argnums, int) else tuple(argnums)

    def step(*args: Any) -> Any:
        if plain_autograd():
            return _autograd_step(checked_loss, args, positions, isinstance(argnums, int), has_aux)
        grads, out = grad_fn(*args)
        value, aux = out if has_aux else (out, None)
        return value, aux, grads

    return step


def _autograd_step(loss: Callable[..., Any], args: tuple[Any, ...], positions: tuple[int, ...], single: bool,
                   has_aux: bool) -> Any:
    # NOTE [eager autograd]: torch.func.grad wraps every tensor of the step in a
    # GradTrackingTensor, which costs 2-4x on small eager steps against the hand-written
    # create_graph pattern. Eagerly, with no transform active, we take the same derivative
    # with torch.autograd on fresh leaves that alias the params (no copy, nothing written
    # to the caller's tensors); under compile or inside vmap/grad, torch.func is used.
    call = list(args)
    leaves = []
    for i in positions:
        flat, spec = optree.tree_flatten(call[i])
        fresh = [t.detach().requires_grad_() if isinstance(t, Tensor) and t.is_floating_point() else t for t in flat]
        leaves.append(fresh)
        call[i] = optree.tree_unflatten(spec, fresh)
    with torch.enable_grad():
        out = loss(*call)
    value, aux = out if has_aux else (out, None)
    wrt = [t for fresh in leaves for t in fresh if isinstance(t, Tensor) and t.requires_grad]
    got = iter(torch.autograd.grad(value, wrt, allow_unused=True) if value.requires_grad else [None] * len(wrt))
    grads = []
    for i, fresh in zip(positions, leaves):
        g = [(next(got) if isinstance(t, Tensor) and t.requires_grad else None) for t in fresh]
        g = [torch.zeros_like(t) if isinstance(t, Tensor) and d is None else d for t, d in zip(fresh, g)]
        grads.append(optree.tree_unflatten(optree.tree_structure(call[i]), g))
    aux = optree.tree_map(lambda t: t.detach() if isinstance(t, Tensor) else t, aux)  # type: ignore[arg-type]
    return value.detach(), aux, grads[0] if single else tuple(grads)


def flags(value: Tensor, grads: Any, params: Any) -> Tensor | tuple[float, float, float]:
    """The loss, the largest ``|gradient|`` and the largest ``|x|`` over the updated ``params``
    (None where the step returns none).

    Max-abs cannot overflow (unlike a norm) and is NaN or Inf exactly when a leaf holds one,
    so these three numbers decide :func:`check_result`. Under compile: a ``[3]`` tensor from
    one fused reduction, copied to the host by ``check_result``. Eagerly: one
    ``_foreach_norm`` launch and one copy, then floats (fewer ops than a fused formula).
    """
    g = _floating(optree.tree_leaves(grads))  # type: ignore[arg-type]
    o = _floating(optree.tree_leaves(params))  # type: ignore[arg-type]
    if not compiling():
        with torch.no_grad():
            norms = torch.stack(torch._foreach_norm([value, *g, *o], math.inf)).tolist()
        return norms[0], _largest(norms[1:1 + len(g)]), _largest(norms[1 + len(g):])
    value = value.detach()
    one = value.new_ones(())
    parts = [value] + [torch.cat([t.reshape(-1) for t in ts]).abs().amax() if ts else one for ts in (g, o)]
    return torch.stack(parts)  # promotes to the widest dtype


def _floating(leaves: list[Any]) -> list[Tensor]:
    return [t for t in leaves if isinstance(t, Tensor) and t.is_floating_point() and t.numel()]


def _largest(values: list[float]) -> float:
    """``max(values)``, NaN if any is NaN or Inf (Python's max skips NaN by accident), 1 if empty."""
    finite = all(math.isfinite(v) for v in values)
    return max(values, default=1.0) if finite else math.nan  # pragma: no mutate (any default but 0 would do)


def refuse_transforms(api: str) -> None:
    """Raise a clear error for ``check=True`` inside a torch.func transform, which cannot
    copy results to the host (the raw error is "Batching rule not implemented")."""
    if in_transform():
        raise RuntimeError(
            f"{api}: check=True inspects the results on the host, which is impossible inside "
            "torch.func transforms (vmap, grad, jacrev). Build the function with check=False "
            "to use it there."
        )


def check_result(api: str, value: Tensor, grads: Any, flags: Tensor | tuple[float, float, float],
                 hint: Callable[[], str], params: Any) -> None:
    """Raise on NaN/Inf, naming every non-finite leaf; warn on an all-zero gradient.

    ``flags`` comes from :func:`flags`; ``params`` are the updated params it covered (None
    where the step returns none).
    """
    loss, peak, other = flags.tolist() if isinstance(flags, Tensor) else flags  # pragma: no mutate (a tensor unpacks too: tolist is one host copy, not three)
    if not (math.isfinite(loss) and math.isfinite(peak) and math.isfinite(other)):
        bad, more = non_finite_leaves("grads", grads), non_finite_leaves("params", params)
        raise FloatingPointError(
            f"{api}: non-finite result: loss = {value.item()}, gradient leaves with NaN/Inf: {bad}"
            + (f", results with NaN/Inf: {more}" if more else "") + ". "
            + (hint() or "Check the data for NaN/Inf, lower the learning rate, or look for a "
               "norm/sqrt/log evaluated at 0 inside the loss.")
        )
    if peak == 0:
        _checks.warn(
            f"{api}: the gradient is exactly zero for every parameter, so training would not "
            "change them. Either the loss has no gradient path to the params (a detached "
            "tensor, or params not used), or the model is piecewise linear (e.g. ReLU) and "
            "the loss uses its second derivatives, which vanish: use a smooth activation "
            "(tanh, softplus, gelu, silu).",
            RuntimeWarning,
        )


def non_finite_leaves(root: str, tree: Any) -> list[str]:
    """Key paths of the leaves holding NaN or Inf, e.g. ``grads['0.weight']``."""
    paths, leaves, _ = optree.tree_flatten_with_path(tree)
    return [_checks.key_path(root, p) for p, t in zip(paths, leaves)
            if isinstance(t, Tensor) and t.is_floating_point() and not torch.isfinite(t).all()]


def _empty_batch_hint(args: tuple[Any, ...], static: tuple[int, ...]) -> str:
    """A better hint than "check the data" when the batch is empty."""
    empty = [i for i, a in enumerate(args) if i not in static and isinstance(a, Tensor) and a.ndim and a.shape[0] == 0]
    return (f"Argument(s) {empty} are empty batches: a mean over no samples is NaN. Skip empty batches."
            if empty else "")
