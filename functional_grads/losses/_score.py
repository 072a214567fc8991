"""Score matching: fit ``s(x) ~ grad_x log p(x)`` from samples, without knowing ``p``."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor
from torch.func import jvp

from .. import _checks, _random
from .._per_sample import inner_randomness, map_samples, same_shape_output
from .._typing import PerSampleFn, Probe, Randomness
from ..operators import divergence


def score_matching(score: PerSampleFn, /, *, chunk_size: int | None = None,
                   randomness: Randomness = "error") -> Callable[..., Tensor]:
    """Exact score matching (Hyvarinen 2005): ``mean(tr(d s / d x) + ||s||^2 / 2)``.

    The trace is exact (one JVP per input dimension): for small ``D``; in high dimension
    use :func:`sliced_score_matching` or :func:`denoising_score_matching`.

    Returns:
      ``loss(params, X [B, D]) -> []``.

    Example:
      >>> s = lambda p, x: -p["a"] * x              # the score of N(0, 1/a)
      >>> score_matching(s)({"a": torch.tensor(1.0)}, torch.ones(4, 2))
      tensor(-1.)
    """
    api = "score_matching"
    field = same_shape_output(api, score, 1)
    div = divergence(score, chunk_size=chunk_size, randomness=randomness)

    def score_matching_loss(params: Any, X: Tensor) -> Tensor:
        s = field(params, X)
        return (div(params, X) + 0.5 * s.flatten(1).pow(2).sum(1)).mean()

    return score_matching_loss


def sliced_score_matching(
    score: PerSampleFn,
    /,
    *,
    num_samples: int = 1,
    probe: Probe = "gaussian",
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    randomness: Randomness = "error",
    num_projections: int | None = None,
) -> Callable[..., Tensor]:
    """Sliced score matching (Song et al. 2019): ``mean(v^T (d s / d x) v + (v^T s)^2 / 2)``.

    One JVP per projection ``v`` instead of ``D``; an unbiased estimate of the score
    matching loss for probes with ``E[v v^T] = I``. With ``probe="gaussian"`` the second
    term can be taken in closed form (``||s||^2 / 2``, "SSM-VR", lower variance): that is
    what is used for gaussian probes.

    Args:
      num_samples: projections per sample (``num_projections`` is its deprecated former name).
      probe, generator, chunk_size, randomness: as in :func:`functional_grads.laplacian`.

    Returns:
      ``loss(params, X [B, *x_shape]) -> []``.
    """
    api = "sliced_score_matching"
    _checks.check_callable(api, score)
    num_samples = _checks.renamed(api, "num_samples", num_samples, "num_projections", num_projections)
    _checks.check_number(api, "num_samples", num_samples, low=1, integer=True)
    _checks.check_choice(api, "probe", probe, _random.PROBES)
    field = same_shape_output(api, score, 1)

    def one(params: Any, x: Tensor, V: Tensor) -> Tensor:
        def along(v: Tensor) -> Tensor:
            v = v.reshape(x.shape)
            s, jv = jvp(lambda y: field(params, y), (x,), (v,))  # type: ignore[misc]
            second = 0.5 * (s * s).sum() if probe == "gaussian" else 0.5 * (v * s).sum() ** 2
            return (v * jv).sum() + second

        return torch.func.vmap(along, randomness=inner_randomness(randomness))(V).mean()

    def sliced_score_matching_loss(params: Any, X: Tensor) -> Tensor:
        X = _checks.check_batch(api, (params, X), 1)
        V = _random.probes(X, (X.shape[0], num_samples, X[0].numel()), probe, generator=generator)
        return map_samples(api, one, (params, X, V), argnums=1, chunk_size=chunk_size,
                           randomness=randomness, also=(2,)).mean()

    return sliced_score_matching_loss


def denoising_score_matching(
    score: PerSampleFn,
    sigma: float,
    /,
    *,
    generator: torch.Generator | None = None,
) -> Callable[..., Tensor]:
    """Denoising score matching (Vincent 2011): ``mean(||s(x + sigma e) + e / sigma||^2 / 2)``.

    ``s`` learns the score of the data convolved with ``N(0, sigma^2 I)``; no derivative
    of ``s`` is needed. Multiply by ``sigma ** 2`` to weigh noise levels as Song & Ermon.

    Returns:
      ``loss(params, X [B, *x_shape]) -> []`` (a fresh noise draw per call).
    """
    api = "denoising_score_matching"
    _checks.check_callable(api, score)
    _checks.check_number(api, "sigma", sigma, strict=True)

    def denoising_score_matching_loss(params: Any, X: Tensor) -> Tensor:
        X = _checks.check_batch(api, (params, X), 1)
        e = _random.probes(X, X.shape, "gaussian", generator=generator)
        s = _checks.check_tensor_output(api, score(params, X + sigma * e), "score")
        if s.shape != X.shape:
            raise ValueError(f"{api}: score must map X {_checks.fmt(X.shape)} to the same shape, got {_checks.fmt(s.shape)}.")
        return 0.5 * (s + e / sigma).flatten(1).pow(2).sum(1).mean()

    return denoising_score_matching_loss
