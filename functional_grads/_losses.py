"""Losses built from per-sample input derivatives."""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor

from . import _checks
from ._input_grad import input_grad
from ._typing import PerSampleFn


def gradient_matching(
    f: PerSampleFn, /, *, chunk_size: int | None = None, randomness: str = "error"
) -> Callable[..., Tensor]:
    """Fit ``grad_x f`` to sampled gradients (seed 002; Sobolev training without values).

    Args:
      f: ``f(params, x)`` with a scalar per-sample output.
      chunk_size, randomness: as in :func:`functional_grads.input_grad`.

    Returns:
      ``loss(params, X [B, *x_shape], target_grads [B, *x_shape]) -> []``, the mean over
      all elements of ``(grad_x f(params, X) - target_grads) ** 2``.

    Example:
      >>> f = lambda p, x: (p["w"] * x).sum()
      >>> loss = gradient_matching(f)
      >>> loss({"w": torch.ones(2)}, torch.zeros(3, 2), torch.zeros(3, 2))
      tensor(1.)
    """
    api = "gradient_matching"
    grad_x = input_grad(f, chunk_size=chunk_size, randomness=randomness)

    def gradient_matching_loss(params: Any, X: Tensor, target_grads: Tensor) -> Tensor:
        check_like(api, "target_grads", target_grads, X, "X")
        return ((grad_x(params, X) - target_grads) ** 2).mean()

    return gradient_matching_loss


def check_like(api: str, name: str, t: Any, ref: Tensor, ref_name: str) -> None:
    """Raise unless ``t`` is a tensor with the shape and dtype of ``ref``."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{api}: {name} must be a tensor, got {type(t).__name__}.")
    if t.shape != ref.shape:
        raise ValueError(
            f"{api}: {name} has shape {_checks.fmt(t.shape)} but must be shaped like "
            f"{ref_name} {_checks.fmt(ref.shape)} (one per sample and input element)."
        )
    if t.dtype != ref.dtype:
        raise TypeError(
            f"{api}: {name} has dtype {t.dtype} but {ref_name} is {ref.dtype}; cast with "
            f"{name}.to({ref.dtype})."
        )
