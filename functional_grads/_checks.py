"""Argument and output checks shared by the transforms."""

from __future__ import annotations

from typing import Any, Sequence

import optree
from torch import Tensor

RANDOMNESS = ("error", "different", "same")


def check_callable(api: str, f: Any, name: str = "f") -> None:
    if not callable(f):
        raise TypeError(f"{api}: {name} must be callable, got {type(f).__name__}.")


def check_options(api: str, *, argnums: Any, chunk_size: Any, randomness: Any) -> None:
    if not isinstance(argnums, int) or isinstance(argnums, bool) or argnums < 0:
        raise TypeError(
            f"{api}: argnums must be a non-negative int (the position of the batched "
            f"input X), got {argnums!r}."
        )
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"{api}: chunk_size must be None or a positive int, got {chunk_size!r}.")
    if randomness not in RANDOMNESS:
        raise ValueError(f"{api}: randomness must be one of {RANDOMNESS}, got {randomness!r}.")


def check_batch(api: str, args: Sequence[Any], argnums: int) -> Tensor:
    """Check that ``args[argnums]`` is a floating batch ``[B, ...]`` matching the params' dtype."""
    if argnums >= len(args):
        raise TypeError(
            f"{api}: expected the batched input X at position {argnums}, but the function "
            f"was called with {len(args)} positional argument(s)."
        )
    x = args[argnums]
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{api}: X (argument {argnums}) must be a tensor [B, *x_shape], got {type(x).__name__}."
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{api}: X (argument {argnums}) must be floating point to be differentiated, got "
            f"dtype {x.dtype}. Convert it, e.g. X.float() or X.to(torch.float64)."
        )
    if x.ndim == 0:
        raise ValueError(
            f"{api}: X (argument {argnums}) needs a leading batch dimension [B, *x_shape], got "
            "a 0-d tensor. For one sample use X[None]."
        )
    others = [a for i, a in enumerate(args) if i != argnums]
    dtypes = {t.dtype for t in optree.tree_leaves(others) if isinstance(t, Tensor) and t.is_floating_point()}
    if len(dtypes) == 1 and x.dtype not in dtypes:
        (dtype,) = dtypes
        raise TypeError(
            f"{api}: X (argument {argnums}) has dtype {x.dtype} but the other arguments "
            f"(the params) are {dtype}. Cast one side: X.to({dtype}) or model.to({x.dtype})."
        )
    return x


def split_aux(api: str, out: Any) -> tuple[Any, Any]:
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(
            f"{api}: with has_aux=True, f must return a pair (output, aux), got "
            f"{type(out).__name__}."
        )
    return out


def check_tensor_output(api: str, out: Any, what: str = "f") -> Tensor:
    if not isinstance(out, Tensor):
        raise TypeError(
            f"{api}: {what} must return a tensor, got {type(out).__name__}. "
            "With an auxiliary output, pass has_aux=True and return (output, aux)."
        )
    if not out.is_floating_point():
        raise TypeError(f"{api}: {what} must return a floating-point tensor, got dtype {out.dtype}.")
    return out


def not_scalar_per_sample(api: str, shape: Sequence[int]) -> ValueError:
    return ValueError(
        f"{api}: f must return one scalar per sample (shape [] or [1]), but its per-sample "
        f"output has shape {fmt(shape)}. For a vector output use functional_grads.input_jacobian, "
        "or reduce inside f (e.g. .sum())."
    )


def fmt(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"
