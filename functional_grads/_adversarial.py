"""Adversarial training losses: the loss at an FGSM/PGD perturbation of the input."""

from __future__ import annotations

from typing import Any, Callable

import optree
import torch
from torch import Tensor

from ._attacks import LossOnOutput, check_attack, loss_input_grad, map_with_targets, per_sample_loss, perturb
from ._typing import PerSampleFn


def adversarial(
    f: PerSampleFn,
    loss_fn: LossOnOutput,
    /,
    *,
    eps: float,
    steps: int = 1,
    step_size: float | None = None,
    norm: str = "linf",
    random_start: bool = False,
    differentiable: bool = False,
    generator: torch.Generator | None = None,
) -> Callable[..., Tensor]:
    """The loss at the FGSM (``steps=1``) or PGD perturbation of each input.

    Args:
      f: ``f(params, x)``; loss_fn: ``loss_fn(out, y) -> scalar`` for one sample.
      eps, steps, step_size, norm, random_start, generator: as in :func:`functional_grads.pgd`.
      differentiable: False (default) treats the perturbation as data (Madry-style
        adversarial training); True also backpropagates through its construction (double
        backprop). With ``norm="linf"`` the sign has zero derivative, so only ``"l2"``
        makes that path nonzero.

    Returns:
      ``loss(params, X, Y) -> []``: the mean over samples of ``loss_fn(f(params, x_adv), y)``.
      Nothing is written into any ``.grad``.

    Example:
      >>> f = lambda p, x: p["w"] * x
      >>> mse = lambda out, y: ((out - y) ** 2).sum()
      >>> adversarial(f, mse, eps=0.5)({"w": torch.ones(2)}, torch.zeros(1, 2), torch.ones(1, 2))
      tensor(4.5000)
    """
    api = "adversarial"
    check_attack(api, torch.zeros(1), eps=eps, steps=steps, step_size=step_size, norm=norm)
    if eps == 0:
        raise ValueError(f"{api}: eps must be positive (eps=0 is the plain loss: use loss_fn directly).")
    grad_fn = loss_input_grad(api, f, loss_fn)
    loss_of_sample = per_sample_loss(api, f, loss_fn)

    def adversarial_loss(params: Any, X: Tensor, Y: Tensor) -> Tensor:
        attack_params = params if differentiable else optree.tree_map(Tensor.detach, params)
        X_adv = perturb(grad_fn, attack_params, X if differentiable else X.detach(), Y, eps=eps,
                        step_size=step_size, steps=steps, norm=norm, random_start=random_start,
                        generator=generator, api=api)
        if not differentiable:
            X_adv = X_adv.detach()
        return map_with_targets(api, loss_of_sample, params, X_adv, Y).mean()

    return adversarial_loss
