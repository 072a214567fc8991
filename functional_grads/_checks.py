"""Argument and output checks shared by every public function.

Each check raises with the API's name, what it received and what to do: ``TypeError``
for the wrong kind of thing, ``ValueError`` for a wrong value or shape.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import warnings
from types import FrameType
from typing import Any, Callable, Sequence

import optree
import torch
from torch import Tensor

from ._typing import Norm, Randomness, choices



def fmt(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def describe(x: Any) -> str:
    """``a float32 tensor [3, 4]`` for a tensor, else the type's name (for error messages)."""
    if isinstance(x, Tensor):
        return f"a {str(x.dtype).removeprefix('torch.')} tensor {fmt(x.shape)}"
    return "None" if x is None else type(x).__name__


def key_path(root: str, path: Sequence[Any]) -> str:
    """``params['0.weight']``-style name of a pytree leaf."""
    return root + "".join(f"[{k!r}]" for k in path)


def check_callable(api: str, f: Any, name: str = "f") -> None:
    if not callable(f):
        raise TypeError(f"{api}: {name} must be callable, got {type(f).__name__}.")


def positional(api: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A built transform ``fn(*args)`` that refuses keyword arguments with a message (its
    arguments are f's, by position, mapped as ``in_dims`` says)."""

    @functools.wraps(fn)
    def built(*args: Any, **kwargs: Any) -> Any:
        if kwargs:
            names = ", ".join(repr(k) for k in kwargs)
            raise TypeError(
                f"{api}: the built function takes f's arguments by position (params, X, *conditions); "
                f"got keyword argument(s) {names}. Pass them by position in f's order, and say with in_dims "
                "which are mapped over the batch, e.g. in_dims=(None, 0, 0) for f(params, x, sigma) with one "
                "sigma per sample.")
        return fn(*args)

    return built


def check_number(
    api: str, name: str, value: Any, *, low: float = 0.0, strict: bool = False, high: float = math.inf,
    integer: bool = False, optional: bool = False,
) -> None:
    """Raise unless ``value`` is a finite real number in ``(low|[low, high]`` (an int if asked)."""
    if value is None and optional:
        return
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if ok and not integer:
        ok = math.isfinite(value)
    if ok:
        ok = (value > low if strict else value >= low) and value <= high
    if not ok:
        raise ValueError(f"{api}: {name} must be {_describe(low, strict, high, integer)}"
                         f"{' or None' if optional else ''}, got {value!r}.")


def _describe(low: float, strict: bool, high: float, integer: bool) -> str:
    """The range in words, for the ranges the library checks: ``[0, inf)``, ``(0, inf)``,
    ints ``>= 1``, closed bounds (``[0, 1]``, any number)."""
    noun = "int" if integer else "number (finite)"
    if high == math.inf and low in (0, 1):
        return f"a {'positive' if strict or low == 1 else 'non-negative'} {noun}"
    bounds = ([] if low == -math.inf else [f">= {low:g}"]) + ([] if high == math.inf else [f"<= {high:g}"])
    return " ".join([f"a {noun}", " and ".join(bounds)]).strip()


def check_options(api: str, *, chunk_size: Any, randomness: Any, argnums: Any = None) -> None:
    """Check a transform's per-sample options; ``argnums`` when the user gave it."""
    if argnums is not None and (not isinstance(argnums, int) or isinstance(argnums, bool) or argnums < 0):
        raise TypeError(
            f"{api}: argnums must be a non-negative int (the position of the batched "
            f"input X), got {argnums!r}."
        )
    check_number(api, "chunk_size", chunk_size, low=1, integer=True, optional=True)
    check_choice(api, "randomness", randomness, choices(Randomness))


def check_batch(api: str, args: Sequence[Any], argnums: int) -> Tensor:
    """Check that ``args[argnums]`` is a floating batch ``[B, ...]`` matching the other args."""
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
    if x.shape[0] == 0:
        raise ValueError(
            f"{api}: X (argument {argnums}) is an empty batch (shape {fmt(x.shape)}): there is no "
            "sample to differentiate, and a mean over no samples is NaN. Skip empty batches."
        )
    others = [t for i, a in enumerate(args) if i != argnums for t in optree.tree_leaves(a) if isinstance(t, Tensor)]
    dtypes = {t.dtype for t in others if t.is_floating_point()}
    if len(dtypes) == 1 and x.dtype not in dtypes:
        (dtype,) = dtypes
        raise TypeError(
            f"{api}: X (argument {argnums}) has dtype {x.dtype} but the other arguments "
            f"(the params) are {dtype}. Cast one side: X.to({dtype}) or model.to({x.dtype})."
        )
    devices = {t.device for t in others}
    if len(devices) == 1 and x.device not in devices:
        (device,) = devices
        raise ValueError(
            f"{api}: X (argument {argnums}) is on {x.device} but the params are on {device}. "
            f"Move one side: X.to({str(device)!r}) or model.to({str(x.device)!r})."
        )
    return x


def split_aux(api: str, out: Any, *, per_sample: bool = False) -> tuple[Any, Any]:
    """``(output, aux)`` from ``f``'s result; ``per_sample``: f runs under vmap, which maps
    the aux too, so it must hold only tensors."""
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(
            f"{api}: with has_aux=True, f must return a pair (output, aux), got "
            f"{type(out).__name__}."
        )
    bad = [type(t).__name__ for t in optree.tree_leaves(out[1]) if not isinstance(t, Tensor)] if per_sample else []
    if bad:
        raise TypeError(
            f"{api}: with has_aux=True, the aux must hold only tensors, since f runs one sample at a "
            f"time and the aux is mapped too; got {', '.join(dict.fromkeys(bad))}. Return e.g. "
            "torch.as_tensor(value)."
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


def check_dims(api: str, dims: Any, D: int) -> list[int]:
    """``dims`` as a list: distinct coordinates of a flattened sample of ``D`` elements."""
    idx = list(dims)
    if not idx or any(not isinstance(i, int) or not 0 <= i < D for i in idx) or len(set(idx)) != len(idx):
        raise ValueError(f"{api}: dims must be distinct ints in [0, {D}) (coordinates of the flattened "
                         f"sample), got {dims!r}.")
    return idx


def not_scalar_per_sample(api: str, shape: Sequence[int]) -> ValueError:
    return ValueError(
        f"{api}: f must return one scalar per sample (shape [] or [1]), but its per-sample "
        f"output has shape {fmt(shape)}. For a vector output use functional_grads.input_jacobian, "
        "or reduce inside f (e.g. .sum())."
    )


def check_per_sample(api: str, what: str, out: Any, B: int) -> Tensor:
    """Check that a user callable returned one value per sample, ``[B]``."""
    if not isinstance(out, Tensor) or out.shape != (B,):
        got = fmt(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"{api}: {what} must return one loss per sample, shape [{B}], got {got}. "
            "Reduce over the non-batch dimensions only, e.g. .flatten(1).sum(1)."
        )
    return out


def check_like(api: str, name: str, t: Any, ref: Tensor, ref_name: str) -> None:
    """Raise unless ``t`` is a tensor with the shape and dtype of ``ref``."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{api}: {name} must be a tensor, got {type(t).__name__}.")
    if t.shape != ref.shape:
        raise ValueError(
            f"{api}: {name} has shape {fmt(t.shape)} but must be shaped like "
            f"{ref_name} {fmt(ref.shape)} (one per sample and input element)."
        )
    if t.dtype != ref.dtype:
        raise TypeError(
            f"{api}: {name} has dtype {t.dtype} but {ref_name} is {ref.dtype}; cast with "
            f"{name}.to({ref.dtype})."
        )


def per_sample_scalar(api: str, name: str, t: Any, X: Tensor) -> Tensor:
    """Accept ``[B]`` or ``[B, 1]`` targets for a scalar-per-sample output; return ``[B]``."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{api}: {name} must be a tensor [B], got {type(t).__name__}.")
    if t.shape not in ((X.shape[0],), (X.shape[0], 1)):
        raise ValueError(
            f"{api}: {name} must hold one value per sample, shape [{X.shape[0]}] or "
            f"[{X.shape[0]}, 1], got {fmt(t.shape)}."
        )
    return t.reshape(X.shape[0])


def check_broadcastable(api: str, name: str, t: Tensor, ref: Tensor) -> None:
    """Raise unless ``t`` broadcasts to ``ref``'s shape without enlarging it."""
    try:
        shape = torch.broadcast_shapes(t.shape, ref.shape)
    except RuntimeError:
        shape = None
    if shape != ref.shape:
        raise ValueError(
            f"{api}: {name} of shape {fmt(t.shape)} must broadcast to {fmt(ref.shape)} "
            "without adding dimensions (e.g. [*x_shape] for all samples, or [B, *x_shape])."
        )


def match_names(api: str, expected: Any, params: Any, what: str, *, frozen: Any = ()) -> None:
    """Raise unless the dict ``params`` has exactly the keys of ``expected``; a key of a
    frozen parameter (``frozen``) gets its own explanation."""
    if not isinstance(params, dict):
        raise TypeError(f"{api}: {what} must be the dict returned by functionalize, got {type(params).__name__}.")
    stale = [k for k in params if k in frozen]
    if stale:
        raise ValueError(
            f"{api}: {what} holds {stale}, which the module has frozen (requires_grad=False). Frozen "
            "parameters stay in the module, like buffers, and are never trained: drop them from the "
            "dict, or unfreeze them (requires_grad_(True)) and call functionalize again."
        )
    missing = [k for k in expected if k not in params]
    extra = [k for k in params if k not in expected]
    if missing or extra:
        raise ValueError(
            f"{api}: {what} does not match the module's trainable parameters (missing: {missing}, "
            f"unexpected: {extra}). Pass the dict returned by functionalize, or one with "
            "exactly the same keys."
        )


def match_tensor(api: str, name: str, got: Any, ref: Tensor) -> None:
    """Raise unless ``got`` is a tensor with ``ref``'s shape, dtype and device."""
    if not isinstance(got, Tensor):
        raise TypeError(f"{api}: {name} must be a tensor, got {type(got).__name__}.")
    for attr in ("shape", "dtype", "device"):
        if getattr(got, attr) != getattr(ref, attr):
            raise ValueError(
                f"{api}: {name} has {attr} {getattr(got, attr)} but the module's parameter has "
                f"{getattr(ref, attr)}. If the module was converted (.to(), .double()) after "
                "functionalize, call functionalize again and convert the params the same way."
            )


def check_choice(api: str, name: str, value: Any, allowed: Sequence[Any]) -> None:
    """Raise unless ``value`` is one of ``allowed`` (e.g. ``typing.get_args`` of a Literal)."""
    if value not in allowed:
        raise ValueError(f"{api}: {name} must be one of {tuple(allowed)}, got {value!r}.")


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` attributed to the first caller outside this package: the user's line."""
    # pragma lines: mutmut's trampolines add frames outside the package between ours, so a
    # mutation run cannot see where a warning points (test_step_core_contract checks it).
    frame: FrameType | None = sys._getframe(1)  # pragma: no mutate (see above)
    level = 2  # pragma: no mutate (see above)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):  # pragma: no mutate (see above)
        frame, level = frame.f_back, level + 1  # pragma: no mutate (see above)
    warnings.warn(message, category, stacklevel=level)


def renamed(api: str, new: str, value: Any, old: str, old_value: Any) -> Any:
    """The value of option ``new``, taking its former name ``old`` for one release (0.3),
    with a ``DeprecationWarning``; ``old_value`` is None when the old name was not used."""
    if old_value is None:
        return value
    warn(f"{api}: {old}= is deprecated; write {new}={old_value!r}.", DeprecationWarning)
    return old_value


def renamed_choice(api: str, name: str, value: Any, spellings: dict[str, str]) -> Any:
    """``value``, with a former spelling (a key of ``spellings``) mapped to the current one
    for one release (0.3), with a ``DeprecationWarning``."""
    if isinstance(value, str) and value in spellings:
        warn(f"{api}: {name}={value!r} is deprecated; write {name}={spellings[value]!r}.", DeprecationWarning)
        return spellings[value]
    return value


_NORM_SPELLING = {1: "l1", 2: "l2", math.inf: "linf"}


def norm_name(api: str, norm: Any, allowed: tuple[str, ...] = choices(Norm)) -> Norm:
    """The one spelling of a norm: ``"l1"``, ``"l2"`` or ``"linf"`` (numbers are refused)."""
    if not isinstance(norm, str) and norm in _NORM_SPELLING:
        raise ValueError(f"{api}: norm must be one of {allowed}, got {norm!r}; write norm={_NORM_SPELLING[norm]!r}.")
    if norm not in allowed:
        raise ValueError(f"{api}: norm must be one of {allowed}, got {norm!r}.")
    return norm
