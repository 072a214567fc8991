"""The one place where a function is mapped over the samples of a batch."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import optree
import torch
from torch.func import grad_and_value, vmap

from . import _checks
from ._context import per_sample


def map_samples(
    api: str,
    fn: Callable[..., Any],
    args: Sequence[Any],
    *,
    argnums: int,
    chunk_size: int | None,
    randomness: str,
    also: tuple[int, ...] = (),
) -> Any:
    """``vmap`` ``fn`` over the leading dimension of ``args[argnums]`` (and of ``args[i]``
    for ``i`` in ``also``), the other arguments shared by all samples."""
    X = _checks.check_batch(api, args, argnums)
    mapped_at = (argnums, *also)
    for i, a in enumerate(args):
        if i not in mapped_at and isinstance(a, torch.Tensor) and a.ndim and a.shape[0] == X.shape[0] > 1:
            raise ValueError(
                f"{api}: argument {i} has shape {_checks.fmt(a.shape)}, one row per sample like X, but "
                "arguments other than X are shared by all samples (each sample would see the whole "
                "tensor). For per-sample data, make it part of X (e.g. torch.cat([X, C], 1), split "
                "inside f); for shared data, close over it in f."
            )
    in_dims = tuple(0 if i in mapped_at else None for i in range(len(args)))
    mapped = vmap(fn, in_dims=in_dims, chunk_size=chunk_size, randomness=randomness)
    with per_sample(api, randomness, args[argnums].ndim - 1):
        try:
            return mapped(*args)
        except RuntimeError as e:
            if "randomness" in str(e) and randomness == "error":
                raise ValueError(
                    f"{api}: f calls a random operation (e.g. dropout) inside a per-sample "
                    "transform. Pass randomness='different' (independent per sample) or "
                    "'same' (shared across the batch), or make f deterministic."
                ) from e
            if type(e) is RuntimeError:
                raise RuntimeError(
                    f"{api}: f failed when evaluated one sample at a time (torch.func.vmap): {e} "
                    "Check that f works on a single sample [*x_shape]; ops without a batching "
                    "rule or modules that keep state across a batch cannot run per sample."
                ) from e
            raise


def inner_randomness(randomness: str) -> str:
    """The randomness of a vmap nested inside the per-sample map (over directions or
    outputs of one sample): the sample's random draws are shared by all its directions,
    so ``"same"``, unless random ops are refused (``"error"``)."""
    return "error" if randomness == "error" else "same"


def scalar_output(api: str, f: Callable[..., Any], has_aux: bool) -> Callable[..., Any]:
    """Wrap ``f`` so that its per-sample output is checked to be a scalar and squeezed to ``()``."""

    def g(*args: Any) -> Any:
        out = f(*args)
        out, aux = _checks.split_aux(api, out) if has_aux else (out, None)
        _checks.check_tensor_output(api, out)
        if out.shape not in ((), (1,)):
            raise _checks.not_scalar_per_sample(api, out.shape)
        out = out.reshape(())
        return (out, aux) if has_aux else out

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


def output_shape(api: str, f: Callable[..., Any], argnums: int = 1, has_aux: bool = False) -> Callable[..., torch.Size]:
    """``(*args) -> f's per-sample output shape``, learnt from one evaluation on one sample
    and cached per argument shapes, dtypes and devices (no hidden work on later calls)."""
    cache: dict[Any, torch.Size] = {}

    def shape_fn(*args: Any) -> torch.Size:
        key = tuple(
            (tuple(t.shape[1:] if i == argnums else t.shape), t.dtype, t.device) if isinstance(t, torch.Tensor) else type(t)
            for i, a in enumerate(args) for t in (optree.tree_leaves(a) if i != argnums else [a])
        )
        if key not in cache:
            one = list(args)
            one[argnums] = args[argnums][:1]
            with torch.no_grad():
                out = map_samples(api, f, one, argnums=argnums, chunk_size=None, randomness="same")
            cache[key] = (out[0] if has_aux else out).shape[1:]
        return cache[key]

    return shape_fn
