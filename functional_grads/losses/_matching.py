"""Losses that fit or align per-sample input gradients."""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor

from .. import _checks
from .._input_grad import input_grad, value_and_input_grad
from .._numerics import safe_norm
from .._per_sample import split_conditions
from .._typing import GradReduction, InDims, PerSampleFn, Randomness, choices


def gradient_matching(
    f: PerSampleFn, /, *, reduction: GradReduction = "elements", in_dims: InDims = None,
    chunk_size: int | None = None, randomness: Randomness = "error",
) -> Callable[..., Tensor]:
    """Fit ``grad_x f`` to sampled gradients (seed 002; Sobolev training without values).

    Args:
      f: ``f(params, x)`` with a scalar per-sample output.
      reduction: ``"elements"`` (default): the mean over all ``B * D`` elements of the
        squared error, seed 002's loss; ``"samples"``: the mean over samples of the squared
        norm ``||grad_x f - target||^2``, the Sobolev-training paper's form (``D`` times larger).
      in_dims: f's arguments as in :func:`functional_grads.input_grad`; with
        ``(None, 0, 0, ...)`` the loss takes per-sample conditioning arguments after ``X``
        and passes them on to ``f`` (NOTE [conditional losses]).
      chunk_size, randomness: as in :func:`functional_grads.input_grad`.

    Returns:
      ``loss(params, X [B, *x_shape], *conditions, target_grads [B, *x_shape]) -> []``.

    Example:
      >>> f = lambda p, x: (p["w"] * x).sum()
      >>> loss = gradient_matching(f)
      >>> loss({"w": torch.ones(2)}, torch.zeros(3, 2), torch.zeros(3, 2))
      tensor(1.)
    """
    api = "gradient_matching"
    _check_reduction(api, reduction)
    grad_x = input_grad(f, in_dims=in_dims, chunk_size=chunk_size, randomness=randomness)

    def gradient_matching_loss(params: Any, X: Tensor, *rest: Any) -> Tensor:
        conditions, (target_grads,) = split_conditions(api, in_dims, rest, "target_grads")
        _checks.check_like(api, "target_grads", target_grads, X, "X")
        return _squared_error(grad_x(params, X, *conditions), target_grads, reduction)

    return gradient_matching_loss


def sobolev(
    f: PerSampleFn,
    /,
    *,
    value_weight: float = 1.0,
    grad_weight: float = 1.0,
    reduction: GradReduction = "elements",
    in_dims: InDims = None,
    chunk_size: int | None = None,
    randomness: Randomness = "error",
) -> Callable[..., Tensor]:
    """Sobolev training (Czarnecki et al. 2017): fit values and input gradients together.

    Args:
      reduction: how the gradient term averages, as in :func:`gradient_matching`.
      in_dims, chunk_size, randomness: as in :func:`gradient_matching`.

    Returns:
      ``loss(params, X [B, *x_shape], *conditions, Y [B], dY [B, *x_shape]) -> []`` =
      ``value_weight * mean((f - Y)**2) + grad_weight * mean((grad_x f - dY)**2)`` (the
      second mean over all elements; per sample with ``reduction="samples"``).
      Force matching is ``dY = -forces`` for an energy ``f``.

    Example:
      >>> f = lambda p, x: (p["w"] * x).sum()
      >>> sobolev(f)({"w": torch.ones(2)}, torch.ones(3, 2), torch.zeros(3), torch.ones(3, 2))
      tensor(4.)
    """
    api = "sobolev"
    _check_reduction(api, reduction)
    for name, w in (("value_weight", value_weight), ("grad_weight", grad_weight)):
        _checks.check_number(api, name, w)
    vg = value_and_input_grad(f, in_dims=in_dims, chunk_size=chunk_size, randomness=randomness)

    def sobolev_loss(params: Any, X: Tensor, *rest: Any) -> Tensor:
        conditions, (Y, dY) = split_conditions(api, in_dims, rest, ("Y", "dY"))
        _checks.check_like(api, "dY", dY, X, "X")
        Y = _checks.per_sample_scalar(api, "Y", Y, X)
        values, grads = vg(params, X, *conditions)
        return value_weight * ((values - Y) ** 2).mean() + grad_weight * _squared_error(grads, dY, reduction)

    return sobolev_loss


def gradient_alignment(
    f: PerSampleFn, /, *, mask: Tensor | None = None, in_dims: InDims = None, chunk_size: int | None = None,
    randomness: Randomness = "error",
) -> Callable[..., Tensor]:
    """Align ``grad_x f`` with target directions, or keep it out of a mask.

    Args:
      f: ``f(params, x)`` with a scalar per-sample output.
      mask: optional tensor broadcastable to ``[B, *x_shape]`` (1 where the input must
        not matter). Adds the "right for the right reasons" penalty (Ross et al. 2017),
        the mean over samples of ``sum((mask * grad_x f) ** 2)``.
      in_dims, chunk_size, randomness: as in :func:`gradient_matching`.

    Returns:
      ``loss(params, X, *conditions, directions=None) -> []``: the mean over samples of
      ``1 - cos(grad_x f, direction)`` (0 when aligned; 1 at a zero gradient), plus the
      mask penalty when a mask is given. ``directions`` may be None only with a mask.

    Example:
      >>> f = lambda p, x: (p["w"] * x).sum()
      >>> orthogonal = torch.tensor([[1.0, -1.0]])  # cos = 0
      >>> gradient_alignment(f)({"w": torch.ones(2)}, torch.zeros(1, 2), orthogonal)
      tensor(1.)
    """
    api = "gradient_alignment"
    if mask is not None and not isinstance(mask, Tensor):
        raise TypeError(f"{api}: mask must be a tensor broadcastable to [B, *x_shape], got {type(mask).__name__}.")
    grad_x = input_grad(f, in_dims=in_dims, chunk_size=chunk_size, randomness=randomness)
    conditions_count = 0 if in_dims is None else len(in_dims) - 2

    def gradient_alignment_loss(params: Any, X: Tensor, *rest: Any, directions: Tensor | None = None) -> Tensor:
        if len(rest) == conditions_count + 1 and directions is None:  # directions given positionally
            *rest, directions = rest  # type: ignore[assignment]
        conditions, _ = split_conditions(api, in_dims, rest, ())
        if directions is None and mask is None:
            raise TypeError(f"{api}: pass directions [B, *x_shape] (or build the loss with a mask).")
        g = grad_x(params, X, *conditions)
        loss = g.new_zeros(())
        if directions is not None:
            _checks.check_like(api, "directions", directions, X, "X")
            gf, df = g.flatten(1), directions.flatten(1)
            # Each norm clamped at 1e-8, as F.cosine_similarity does: cos = 0 at a zero gradient.
            cos = (gf * df).sum(1) / (safe_norm(gf).clamp_min(1e-8) * safe_norm(df).clamp_min(1e-8))
            loss = loss + (1 - cos).mean()
        if mask is not None:
            _checks.check_broadcastable(api, "mask", mask, g)
            loss = loss + (mask * g).pow(2).flatten(1).sum(1).mean()
        return loss

    return gradient_alignment_loss


def _check_reduction(api: str, reduction: Any) -> None:
    _checks.check_choice(api, "reduction", reduction, choices(GradReduction))


def _squared_error(g: Tensor, target: Tensor, reduction: str) -> Tensor:
    sq = (g - target) ** 2
    return sq.mean() if reduction == "elements" else sq.flatten(1).sum(1).mean()
