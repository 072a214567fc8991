"""The one place where a function is mapped over the samples of a batch."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import optree
import torch
from torch.func import grad_and_value, vmap

from . import _checks
from ._context import per_sample, plain_autograd
from ._typing import InDims


def map_samples(
    api: str,
    fn: Callable[..., Any],
    args: Sequence[Any],
    *,
    argnums: int,
    chunk_size: int | None,
    randomness: str,
    in_dims: InDims = None,
    extra: tuple[Any, ...] = (),
) -> Any:
    """``vmap`` ``fn`` over the samples: ``fn(*args, *extra)`` with ``args`` mapped as
    ``in_dims`` says (default: ``args[argnums]`` mapped, the others shared; NOTE [in_dims])
    and every tensor of ``extra`` (per-sample directions, probes, targets) mapped too."""
    X = _checks.check_batch(api, args, argnums)
    dims = resolve_in_dims(api, in_dims, args, argnums)
    mapped = vmap(fn, in_dims=(*dims, *(0,) * len(extra)), chunk_size=chunk_size, randomness=randomness)
    conditions = _conditions(dims, argnums)
    with per_sample(api, randomness, X.ndim - 1, conditions):
        try:
            return mapped(*args, *extra)
        except RuntimeError as e:
            if "randomness" in str(e) and randomness == "error":
                raise ValueError(
                    f"{api}: f calls a random operation (e.g. dropout) inside a per-sample "
                    "transform. Pass randomness='different' (independent per sample) or "
                    "'same' (shared across the batch), or make f deterministic."
                ) from e
            if type(e) is RuntimeError and any(m in str(e) for m in _DATA_DEPENDENT):
                raise DataDependent(
                    f"{api}: f's Python control flow reads a tensor's value (an `if` on a tensor, .item()), which "
                    "torch.func.vmap cannot map over the samples. Write the branch with torch.where; laplacian, "
                    "derivatives, partials, partial_derivative and biharmonic run such an f one sample at a time."
                ) from e
            if type(e) is RuntimeError:
                raise RuntimeError(
                    f"{api}: f failed when evaluated one sample at a time (torch.func.vmap): {e} "
                    "Check that f works on a single sample [*x_shape]; ops without a batching "
                    "rule or modules that keep state across a batch cannot run per sample."
                ) from e
            raise


def _conditions(dims: Sequence[int | None], argnums: int) -> frozenset[int]:
    """The positions besides X that are mapped over the batch (NOTE [per-sample context])."""
    return frozenset(i for i, d in enumerate(dims) if d == 0 and i != argnums)


class DataDependent(RuntimeError):
    """``f`` reads a tensor's value in its Python control flow: vmap cannot map it."""


_DATA_DEPENDENT = ("data-dependent control flow", "calling .item()")  # in vmap's errors for them


def loop_samples(
    api: str,
    fn: Callable[..., Any],
    args: Sequence[Any],
    *,
    argnums: int,
    randomness: str,
    in_dims: InDims = None,
    extra: tuple[Any, ...] = (),
) -> Any:
    """:func:`map_samples` without ``vmap``: ``fn`` on one sample at a time, in a Python loop,
    for an ``fn`` that ``vmap`` cannot run (Python control flow on tensor values)."""
    X = _checks.check_batch(api, args, argnums)
    dims = resolve_in_dims(api, in_dims, args, argnums)
    conditions = _conditions(dims, argnums)
    outs = []
    with per_sample(api, randomness, X.ndim - 1, conditions):
        for i in range(X.shape[0]):
            row = [optree.tree_map(lambda t: t[i], a) if d == 0 else a for a, d in zip(args, dims)]
            outs.append(fn(*row, *(e[i] for e in extra)))
    return optree.tree_map(lambda *o: torch.stack(o), *outs)


class PerSample(NamedTuple):
    """The per-sample options every transform and operator shares (as :func:`input_grad`
    documents them), checked once by :func:`per_sample_options`."""

    argnums: int
    in_dims: InDims
    chunk_size: int | None
    randomness: str


def per_sample_options(api: str, f: Any, *, argnums: int, in_dims: InDims, chunk_size: int | None,
                       randomness: str) -> PerSample:
    """Check ``f`` and the per-sample options when a transform is built."""
    _checks.check_callable(api, f)
    _checks.check_options(api, argnums=argnums, chunk_size=chunk_size, randomness=randomness)
    check_in_dims(api, in_dims, argnums)
    return PerSample(argnums, in_dims, chunk_size, randomness)


def check_in_dims(api: str, in_dims: Any, argnums: int) -> None:
    """Check ``in_dims`` when a transform is built: None, or a tuple of 0/None entries with
    ``in_dims[argnums] == 0`` and the params (argument 0) shared."""
    if in_dims is None:
        return
    if not isinstance(in_dims, (tuple, list)) or any(d not in (0, None) or d is False for d in in_dims):
        raise ValueError(
            f"{api}: in_dims must be a tuple with one entry per positional argument of f, each 0 "
            f"(mapped over the batch) or None (shared by all samples), as in torch.func.vmap; got {in_dims!r}."
        )
    if len(in_dims) <= argnums or in_dims[argnums] != 0:
        raise ValueError(
            f"{api}: in_dims[{argnums}] must be 0: the argument differentiated (argnums={argnums}) is the "
            f"batch X, mapped over its samples; got in_dims={in_dims!r}."
        )
    if argnums != 0 and in_dims[0] is not None:
        raise ValueError(
            f"{api}: in_dims[0] must be None: the params (argument 0) are shared by all samples; got "
            f"in_dims={in_dims!r}."
        )


def resolve_in_dims(api: str, in_dims: InDims, args: Sequence[Any], argnums: int) -> tuple[int | None, ...]:
    """The ``vmap`` in_dims for ``args`` (NOTE [in_dims]), checked against the call."""
    # NOTE [in_dims]: in_dims has torch.func.vmap's meaning over f's positional arguments:
    # 0 mapped over the batch (sample i sees row i), None shared. By default only X is
    # mapped; an undeclared argument shaped like the batch is then refused, since every
    # sample would see the whole tensor (a guess: a shared [B, ...] tensor must be declared
    # with in_dims to be accepted). With in_dims given, nothing is guessed: a declared
    # shared argument is never refused, and a mapped one must have X's batch size.
    B = args[argnums].shape[0]
    if in_dims is None:
        for i, a in enumerate(args):
            if i != argnums and isinstance(a, torch.Tensor) and a.ndim and a.shape[0] == B > 1:
                raise ValueError(
                    f"{api}: argument {i} has shape {_checks.fmt(a.shape)}, one row per sample like X, "
                    "but arguments other than X are shared by all samples unless in_dims says otherwise "
                    "(each sample would see the whole tensor). For per-sample data pass in_dims with a 0 "
                    f"at position {i} (e.g. in_dims={_example_in_dims(len(args), argnums, i)}); for data "
                    f"shared by all samples, None there."
                )
        return tuple(0 if i == argnums else None for i in range(len(args)))
    if len(in_dims) != len(args):
        raise ValueError(
            f"{api}: in_dims has {len(in_dims)} entries but f was called with {len(args)} positional "
            f"arguments; give one entry per argument (in_dims={tuple(in_dims)!r})."
        )
    for i, (a, d) in enumerate(zip(args, in_dims)):
        if d == 0 and i != argnums:
            for t in optree.tree_leaves(a):
                if not isinstance(t, torch.Tensor) or t.ndim == 0 or t.shape[0] != B:
                    got = _checks.fmt(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                    raise ValueError(
                        f"{api}: argument {i} is mapped over the batch (in_dims[{i}] = 0) but has "
                        f"{'shape ' + got if isinstance(t, torch.Tensor) else 'a leaf of type ' + got}, "
                        f"not a leading dimension of X's batch size {B}. Pass one row per sample, or "
                        "None in in_dims to share it."
                    )
    return tuple(in_dims)


def split_conditions(api: str, in_dims: InDims, rest: Sequence[Any], targets: str | tuple[str, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """A loss's arguments after X as ``(conditions, targets)``: with ``in_dims`` for
    ``f(params, x, *conditions)``, the first ``len(in_dims) - 2`` are passed on to ``f``
    (NOTE [conditional losses]), the rest are the loss's own (named by ``targets``)."""
    # NOTE [conditional losses]: a loss built with in_dims takes f's conditioning
    # arguments right after X and before its own targets: loss(params, X, *conditions,
    # *targets). Their number is len(in_dims) - 2, so nothing is guessed.
    names = (targets,) if isinstance(targets, str) else targets
    n = 0 if in_dims is None else len(in_dims) - 2
    if len(rest) != n + len(names):
        want = ", ".join(["params", "X", *(f"c{i + 1}" for i in range(n)), *names])
        raise TypeError(
            f"{api}: expected the arguments ({want}): {n} conditioning argument(s) for f (in_dims="
            f"{in_dims!r}) then {len(names)} target(s) after X; got {len(rest)} argument(s) after X."
        )
    return tuple(rest[:n]), tuple(rest[n:])


def _example_in_dims(n: int, argnums: int, i: int) -> tuple[int | None, ...]:
    return tuple(0 if j in (argnums, i) else None for j in range(n))


# NOTE [inner randomness]: a vmap nested inside the per-sample map (over directions or
# outputs of one sample) shares the sample's random draws among its directions: "same".
# With randomness="error" a random op is still refused, by the outer map's level.
INNER_RANDOMNESS = "same"


def scalar_output(api: str, f: Callable[..., Any], has_aux: bool = False) -> Callable[..., Any]:
    """Wrap ``f`` so that its per-sample output is checked to be a scalar and squeezed to ``()``."""

    def g(*args: Any) -> Any:
        out = f(*args)
        out, aux = _checks.split_aux(api, out, per_sample=True) if has_aux else (out, None)
        _checks.check_tensor_output(api, out)
        if out.shape not in ((), (1,)):
            raise _checks.not_scalar_per_sample(api, out.shape)
        out = out.reshape(())
        return (out, aux) if has_aux else out

    return g


def component_output(api: str, f: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``f`` so that its per-sample output must be a tensor; ``[1]`` becomes ``[]`` (one
    scalar per sample), any other shape ``[*out]`` is kept (an operator then acts per component)."""

    def g(*args: Any) -> Any:
        out = _checks.check_tensor_output(api, f(*args))
        return out.reshape(()) if out.shape == (1,) else out

    return g


def same_shape_output(api: str, f: Callable[..., Any], argnums: int) -> Callable[..., Any]:
    """Wrap a vector field ``f`` so that its per-sample output must be shaped like its input."""

    def g(*args: Any) -> Any:
        out = _checks.check_tensor_output(api, f(*args))
        x = args[argnums]
        if out.shape != x.shape:
            raise ValueError(
                f"{api}: f must be a vector field whose per-sample output is shaped like its "
                f"input {_checks.fmt(x.shape)}, got {_checks.fmt(out.shape)}. For other shapes "
                "use functional_grads.input_jacobian."
            )
        return out

    return g


def separable_grad(objective: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``x -> (grad, losses [B])`` for ``objective(x) -> [B]`` separable over samples.

    The gradient of the sum is every sample's own gradient, since sample ``i``'s loss
    depends on ``x[i]`` alone; one backward pass serves the whole batch.
    """
    def summed(x: Any) -> Any:
        losses = objective(x)
        return losses.sum(), losses

    g = grad_and_value(summed, has_aux=True)

    def separable_grad_fn(x: Any) -> Any:
        grads, (_, losses) = g(x)
        return grads, losses

    return separable_grad_fn


def sum_grad(values: Callable[[Any], torch.Tensor], x: Any, outer: Any) -> tuple[Any, torch.Tensor]:
    """``(d values(x).sum() / dx, values(x))`` for a pytree of tensors ``x``, differentiable
    w.r.t. ``x`` and the tensors of ``outer`` (the params an outer gradient will need).

    Eagerly with no transform active, this is ``torch.autograd`` (NOTE [eager autograd]),
    keeping a graph only when an outer derivative will need it (``x`` or a tensor of
    ``outer`` requires grad); under compile or inside transforms, ``torch.func``.
    """
    if not plain_autograd():
        return separable_grad(values)(x)
    leaves, spec = optree.tree_flatten(x)
    keep = torch.is_grad_enabled() and any(
        t.requires_grad for t in [*leaves, *optree.tree_leaves(outer)] if isinstance(t, torch.Tensor))
    fresh = [t if t.requires_grad else t.detach().requires_grad_() for t in leaves]
    with torch.enable_grad():
        v = values(optree.tree_unflatten(spec, fresh))
        grads = torch.autograd.grad(v.sum(), fresh, create_graph=keep)
    if not keep:
        grads, v = tuple(g.detach() for g in grads), v.detach()
    return optree.tree_unflatten(spec, list(grads)), v


def output_shape(api: str, f: Callable[..., Any], argnums: int = 1, has_aux: bool = False,
                 in_dims: InDims = None) -> Callable[..., torch.Size]:
    """``(*args) -> f's per-sample output shape``, learnt from one evaluation on one sample
    and cached per argument shapes, dtypes and devices (no hidden work on later calls)."""
    cache: dict[Any, torch.Size] = {}

    def shape_fn(*args: Any) -> torch.Size:
        dims = resolve_in_dims(api, in_dims, args, argnums)
        key = tuple(
            (tuple(t.shape[1:] if d == 0 else t.shape), t.dtype, t.device) if isinstance(t, torch.Tensor) else type(t)
            for a, d in zip(args, dims) for t in optree.tree_leaves(a)
        )
        if key not in cache:
            one = [optree.tree_map(lambda t: t[:1], a) if d == 0 else a for a, d in zip(args, dims)]
            with torch.no_grad():
                out = map_samples(api, f, one, argnums=argnums, chunk_size=None, randomness="same", in_dims=dims)
            cache[key] = (out[0] if has_aux else out).shape[1:]
        return cache[key]

    return shape_fn
