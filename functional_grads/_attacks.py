"""Perturbing an input along the gradient of a loss: one ``Attack`` value, one loop.

``perturb`` (a transform), ``fgsm``/``pgd`` (run at once) and ``losses.adversarial``
all run the same projected-gradient loop configured by one frozen :class:`Attack`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Literal, Sequence, Union, cast

import torch
from torch import Tensor
from torch.func import grad

from . import _checks, _random
from ._checks import norm_name
from ._numerics import per_sample_norm, project_ball
from ._per_sample import check_in_dims, map_samples, scalar_output, split_conditions
from ._typing import AttackNorm, InDims, PerSampleFn, Randomness

LossOnOutput = Callable[[Tensor, Tensor], Tensor]
_ATTACK_NORMS = ("linf", "l2")


@dataclasses.dataclass(frozen=True)
class Attack:
    """The settings of an FGSM/PGD attack, checked once when built.

    Args:
      eps: the radius of the ball around the clean input (finite, >= 0).
      steps: gradient steps (1 with ``step_size=eps`` is FGSM).
      step_size: the length of each step; default ``eps`` for one step, else
        ``2.5 * eps / steps`` (Madry et al.).
      norm: ``"linf"`` (steps along ``sign(g)``) or ``"l2"`` (along ``g / max(||g||, 1e-12)``,
        the normalisation foolbox uses; advertorch clamps at 1e-6 instead).
      random_start: False; True for the attack libraries' convention (L-inf: uniform in
        the cube; L2: a uniform direction and a radius uniform in ``[0, eps]``, denser
        near the centre than the ball's volume); ``"volume"`` for a start uniform over
        the L2 ball's volume (the same as True for L-inf).
      targeted: step down the loss (towards the targets) instead of up.
      clip_min, clip_max: the valid input range (e.g. 0 and 1 for images), applied after
        every step and to a random start.

    Example:
      >>> Attack(eps=0.1, steps=10, norm="l2").step_size
      0.025
    """

    eps: float
    steps: int = 1
    step_size: float | None = None
    norm: AttackNorm = "linf"
    random_start: Union[bool, Literal["volume"]] = False
    targeted: bool = False
    clip_min: float | None = None
    clip_max: float | None = None

    def __post_init__(self) -> None:
        api = "Attack"
        _checks.check_number(api, "eps", self.eps)
        _checks.check_number(api, "steps", self.steps, low=1, integer=True)
        _checks.check_number(api, "step_size", self.step_size, optional=True)
        norm_name(api, self.norm, _ATTACK_NORMS)
        if self.random_start not in (False, True, "volume"):
            raise ValueError(f"{api}: random_start must be False, True or 'volume', got {self.random_start!r}.")
        _checks.check_number(api, "clip_min", self.clip_min, low=-math.inf, optional=True)
        _checks.check_number(api, "clip_max", self.clip_max, low=-math.inf, optional=True)
        if self.clip_min is not None and self.clip_max is not None and self.clip_min > self.clip_max:
            raise ValueError(f"{api}: clip_min ({self.clip_min}) must not exceed clip_max ({self.clip_max}).")
        if self.step_size is None:
            object.__setattr__(self, "step_size", self.eps if self.steps == 1 else 2.5 * self.eps / self.steps)


def perturb(
    f: PerSampleFn,
    loss_fn: LossOnOutput,
    attack: Attack,
    /,
    *,
    generator: torch.Generator | None = None,
    in_dims: InDims = None,
    chunk_size: int | None = None,
    randomness: Randomness = "error",
) -> Callable[..., Tensor]:
    """The adversarial examples of ``attack`` against ``f``, as a function of the data.

    Args:
      f: ``f(params, x)``; loss_fn: ``loss_fn(out, y) -> scalar`` for one sample, e.g.
        ``lambda out, y: F.cross_entropy(out, y)``.
      attack: the settings, an :class:`Attack`.
      generator: draws the random start (reproducible when seeded).
      in_dims: f's arguments as in :func:`input_grad`; with ``(None, 0, 0, ...)`` the
        attack takes per-sample conditioning arguments after ``X`` and passes them on to
        ``f`` (NOTE [conditional losses]).
      chunk_size, randomness: as in :func:`input_grad`.

    Returns:
      ``(params, X [B, *x_shape], *conditions, Y [B, ...]) -> X_adv [B, *x_shape]``. Differentiable
      w.r.t. ``params`` and ``X`` (double backprop); detach the result to treat it as data.

    Example:
      >>> f = lambda p, x: p["w"] * x
      >>> mse = lambda out, y: ((out - y) ** 2).sum()
      >>> perturb(f, mse, Attack(eps=0.1))({"w": torch.ones(2)}, torch.zeros(1, 2), torch.ones(1, 2))
      tensor([[-0.1000, -0.1000]])
    """
    return attacker("perturb", f, loss_fn, attack, generator=generator, in_dims=in_dims, chunk_size=chunk_size,
                    randomness=randomness)


def attacker(api: str, f: PerSampleFn, loss_fn: LossOnOutput, attack: Attack, *, generator: torch.Generator | None,
             randomness: Randomness, in_dims: InDims = None, chunk_size: int | None = None,
             ) -> Callable[..., Tensor]:
    """:func:`perturb` for the public function ``api`` (its errors name it)."""
    if not isinstance(attack, Attack):
        raise TypeError(f"{api}: attack must be a functional_grads.Attack, got {type(attack).__name__}.")
    _checks.check_options(api, chunk_size=chunk_size, randomness=randomness)
    check_in_dims(api, in_dims, 1)
    g = grad(per_sample_loss(api, f, loss_fn), argnums=1)

    def perturb_fn(params: Any, X: Tensor, *rest: Any) -> Tensor:
        conditions, (Y,) = split_conditions(api, in_dims, rest, "Y")
        _checks.check_batch(api, (params, X), 1)

        def grad_fn(params: Any, X: Tensor, Y: Tensor) -> Tensor:
            return map_with_targets(api, g, params, X, Y, conditions=conditions, in_dims=in_dims,
                                    chunk_size=chunk_size, randomness=randomness)

        return _run(attack, grad_fn, params, X, Y, generator)

    return perturb_fn


def fgsm(
    f: PerSampleFn,
    params: Any,
    X: Tensor,
    Y: Tensor,
    /,
    *,
    loss_fn: LossOnOutput,
    eps: float,
    targeted: bool = False,
    clip_min: float | None = None,
    clip_max: float | None = None,
    randomness: Randomness = "error",
) -> Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): ``clip(X + eps * sign(grad_x loss))``.

    Shorthand for ``perturb(f, loss_fn, Attack(eps, ...))(params, X, Y)``, detached;
    ``randomness`` as in :func:`input_grad`.

    Returns:
      The adversarial examples ``[B, *x_shape]`` (no gradient flows to ``params``).

    Example:
      >>> f = lambda p, x: p["w"] * x
      >>> mse = lambda out, y: ((out - y) ** 2).sum()
      >>> fgsm(f, {"w": torch.ones(2)}, torch.zeros(1, 2), torch.ones(1, 2), loss_fn=mse, eps=0.1)
      tensor([[-0.1000, -0.1000]])
    """
    attack = _attack("fgsm", eps=eps, targeted=targeted, clip_min=clip_min, clip_max=clip_max)
    return _detached(attacker("fgsm", f, loss_fn, attack, generator=None, randomness=randomness), params, X, Y)


def pgd(
    f: PerSampleFn,
    params: Any,
    X: Tensor,
    Y: Tensor,
    /,
    *,
    loss_fn: LossOnOutput,
    eps: float,
    step_size: float | None = None,
    steps: int = 10,
    norm: AttackNorm = "linf",
    random_start: Union[bool, Literal["volume"]] = False,
    targeted: bool = False,
    generator: torch.Generator | None = None,
    clip_min: float | None = None,
    clip_max: float | None = None,
    randomness: Randomness = "error",
) -> Tensor:
    """Projected gradient descent attack (Madry et al. 2018), L-inf or L2.

    Each step moves by ``step_size`` along the steepest-ascent direction of the
    per-sample loss, projects onto the ``eps`` ball around ``X`` and clips to
    ``[clip_min, clip_max]``, as the widely used attack libraries do. Settings as in
    :class:`Attack`; shorthand for ``perturb(f, loss_fn, Attack(...))(params, X, Y)``.

    Returns:
      The adversarial examples ``[B, *x_shape]`` (no gradient flows to ``params``).
    """
    attack = _attack("pgd", eps=eps, steps=steps, step_size=step_size, norm=norm, random_start=random_start,
                     targeted=targeted, clip_min=clip_min, clip_max=clip_max)
    return _detached(attacker("pgd", f, loss_fn, attack, generator=generator, randomness=randomness), params, X, Y)


def _attack(api: str, **settings: Any) -> Attack:
    """``Attack(**settings)`` whose errors name ``api``, the function the user called."""
    try:
        return Attack(**settings)
    except (TypeError, ValueError) as error:
        raise type(error)(str(error).replace("Attack:", f"{api}:", 1)) from None


def per_sample_loss(api: str, f: PerSampleFn, loss_fn: LossOnOutput) -> Callable[..., Tensor]:
    """``(params, x, *conditions, y) -> []``: one sample's ``loss_fn(f(params, x, *conditions), y)``,
    checked to be a scalar."""
    _checks.check_callable(api, f)
    _checks.check_callable(api, loss_fn, "loss_fn")
    return scalar_output(api, lambda p, x, *cy: loss_fn(f(p, x, *cy[:-1]), cy[-1]))


def map_with_targets(api: str, fn: Callable[..., Any], params: Any, X: Tensor, Y: Tensor, *,
                     conditions: tuple[Any, ...] = (), in_dims: InDims = None, chunk_size: int | None,
                     randomness: str) -> Any:
    """Map ``fn(params, x, *conditions, y)`` over the samples of ``X``, the conditions
    (as ``in_dims`` says) and the targets ``Y``."""
    if not isinstance(Y, Tensor) or Y.ndim == 0 or Y.shape[0] != X.shape[0]:
        got = _checks.fmt(Y.shape) if isinstance(Y, Tensor) else type(Y).__name__
        raise ValueError(f"{api}: Y must hold one target per sample, leading dimension {X.shape[0]}; got {got}.")
    return map_samples(api, fn, (params, X, *conditions), argnums=1, chunk_size=chunk_size, randomness=randomness,
                       in_dims=in_dims, extra=(Y,))


def _detached(attack_fn: Callable[..., Tensor], params: Any, X: Tensor, Y: Tensor) -> Tensor:
    with torch.no_grad():  # torch.func.grad inside still differentiates; nothing outside records a graph
        return attack_fn(params, X, Y)


def _run(attack: Attack, grad_fn: Callable[[Any, Tensor, Tensor], Tensor], params: Any, X: Tensor, Y: Tensor,
         generator: torch.Generator | None) -> Tensor:
    """The projected-gradient loop shared by every attack and the adversarial loss."""
    eps = attack.eps
    step_size = cast(float, attack.step_size)  # pragma: no mutate (a cast does nothing at run time)
    delta = torch.zeros_like(X)
    if attack.random_start:  # the start is clipped only when random, as in Madry et al.'s code
        if attack.norm == "linf":
            start = _random.uniform(X, X.shape, -eps, eps, generator)
        else:
            start = _random.in_l2_ball(X, eps, attack.random_start == "volume", generator)
        delta = _clip(X, start, attack)
    for _ in range(attack.steps):
        g = grad_fn(params, X + delta, Y)
        g = -g if attack.targeted else g
        step = g.sign() if attack.norm == "linf" else g / per_sample_norm(g).clamp_min(1e-12)
        delta = _clip(X, project_ball(delta + step_size * step, eps, attack.norm), attack)
    return X + delta


def _clip(X: Tensor, delta: Tensor, attack: Attack) -> Tensor:
    if attack.clip_min is None and attack.clip_max is None:
        return delta
    return (X + delta).clamp(attack.clip_min, attack.clip_max) - X


def robust_accuracy(
    f: PerSampleFn,
    params: Any,
    X: Tensor,
    labels: Tensor,
    /,
    *,
    loss_fn: LossOnOutput,
    epsilons: Sequence[float],
    attack: Attack | None = None,
    generator: torch.Generator | None = None,
    randomness: Randomness = "error",
) -> Tensor:
    """Accuracy of a classifier under ``attack`` at each radius in ``epsilons`` (foolbox style).

    Args:
      f, params: the classifier ``f(params, x) -> logits [C]`` and its params.
      X, labels: inputs ``[B, *x_shape]`` and integer class labels ``[B]``.
      loss_fn: the per-sample loss the attack ascends, e.g. cross-entropy.
      epsilons: radii; 0 gives the clean accuracy.
      attack: the other settings (default ``Attack(eps, steps=10)`` at each radius: PGD L-inf); its
        ``step_size / eps`` ratio is kept at every radius when it has a nonzero ``eps``.
      generator: draws the attack's random start.
      randomness: as in :func:`input_grad`, for the attack and the predictions (a model
        in eval mode needs none).

    Returns:
      ``[len(epsilons)]``: the fraction of samples still classified correctly.

    Example:
      >>> f = lambda p, x: torch.stack([x.sum(), -x.sum()]) * p
      >>> ce = lambda out, y: torch.nn.functional.cross_entropy(out, y)
      >>> robust_accuracy(f, torch.tensor(1.0), torch.ones(4, 2), torch.zeros(4, dtype=torch.long),
      ...                 loss_fn=ce, epsilons=[0.0, 0.4, 2.0])
      tensor([1., 1., 0.])
    """
    api = "robust_accuracy"
    if attack is not None and not isinstance(attack, Attack):
        raise TypeError(f"{api}: attack must be a functional_grads.Attack, got {type(attack).__name__}.")
    if not isinstance(labels, Tensor) or labels.dtype in (torch.float16, torch.float32, torch.float64, torch.bfloat16):
        raise TypeError(f"{api}: labels must be an integer tensor [B] of class indices, got {_checks.describe(labels)}.")
    if isinstance(epsilons, (str, bytes)) or not hasattr(epsilons, "__iter__") or not len(epsilons := list(epsilons)):
        raise ValueError(f"{api}: epsilons must be a non-empty sequence of radii (0 gives the clean accuracy), "
                         f"got {epsilons!r}.")
    ratio = None  # the attack's step_size / eps, kept at every radius
    if attack is not None and attack.eps > 0:
        step_size = cast(float, attack.step_size)  # pragma: no mutate (a cast does nothing at run time)
        ratio = step_size / attack.eps
    accuracies = []
    for eps in epsilons:
        _checks.check_number(api, "each of epsilons", eps)
        if eps == 0:
            X_adv = X
        else:
            settings = (Attack(eps=eps, steps=10) if attack is None else
                        dataclasses.replace(attack, eps=eps, step_size=None if ratio is None else ratio * eps))
            X_adv = _detached(attacker(api, f, loss_fn, settings, generator=generator, randomness=randomness),
                              params, X, labels)
        with torch.no_grad():
            predicted = map_samples(api, lambda p, x: f(p, x).argmax(), (params, X_adv), argnums=1,
                                    chunk_size=None, randomness=randomness)  # f is per sample
        accuracies.append((predicted == labels).to(X.dtype).mean())
    return torch.stack(accuracies)
