"""Adversarial training losses: the loss at an FGSM/PGD perturbation of the input."""

from __future__ import annotations

from typing import Any, Callable

import optree
import torch
from torch import Tensor

from .._attacks import Attack, LossOnOutput, attacker, map_with_targets, per_sample_loss
from .._per_sample import split_conditions
from .._typing import InDims, PerSampleFn, Randomness


def adversarial(
    f: PerSampleFn,
    loss_fn: LossOnOutput,
    attack: Attack,
    /,
    *,
    differentiable: bool = False,
    generator: torch.Generator | None = None,
    in_dims: InDims = None,
    chunk_size: int | None = None,
    randomness: Randomness = "error",
) -> Callable[..., Tensor]:
    """The loss at the FGSM (``steps=1``) or PGD perturbation of each input.

    Args:
      f: ``f(params, x)``; loss_fn: ``loss_fn(out, y) -> scalar`` for one sample.
      attack: the perturbation's settings, an :class:`functional_grads.Attack` with
        ``eps > 0`` (targeted attacks and ``clip_min``/``clip_max`` included).
      differentiable: False (default) treats the perturbation as data (Madry-style
        adversarial training); True also backpropagates through its construction (double
        backprop). With ``norm="linf"`` the sign has zero derivative, so only ``"l2"``
        makes that path nonzero.
      generator, in_dims, chunk_size, randomness: as in :func:`functional_grads.perturb`.

    Returns:
      ``loss(params, X, *conditions, Y) -> []``: the mean over samples of
      ``loss_fn(f(params, x_adv, *conditions), y)``.
      Nothing is written into any ``.grad``.

    Example:
      >>> f = lambda p, x: p["w"] * x
      >>> mse = lambda out, y: ((out - y) ** 2).sum()
      >>> adversarial(f, mse, Attack(eps=0.5))({"w": torch.ones(2)}, torch.zeros(1, 2), torch.ones(1, 2))
      tensor(4.5000)
    """
    api = "adversarial"
    if not isinstance(attack, Attack):
        raise TypeError(f"{api}: attack must be a functional_grads.Attack, got {type(attack).__name__}.")
    if attack.eps == 0:
        raise ValueError(f"{api}: eps must be positive (eps=0 is the plain loss: use loss_fn directly).")
    attack_fn = attacker(api, f, loss_fn, attack, generator=generator, in_dims=in_dims, chunk_size=chunk_size,
                         randomness=randomness)
    loss_of_sample = per_sample_loss(api, f, loss_fn)  # pragma: no mutate (its errors: the attack raises them first)

    def adversarial_loss(params: Any, X: Tensor, *rest: Any) -> Tensor:
        conditions, (Y,) = split_conditions(api, in_dims, rest, "Y")
        if differentiable:
            X_adv = attack_fn(params, X, *conditions, Y)
        else:
            X_adv = attack_fn(optree.tree_map(Tensor.detach, params), X.detach(), *conditions, Y).detach()
        return map_with_targets(api, loss_of_sample, params, X_adv, Y, conditions=conditions, in_dims=in_dims,  # pragma: no mutate (api: the attack's errors come first)
                                chunk_size=chunk_size, randomness=randomness).mean()

    return adversarial_loss
