"""Score matching: fit ``s(x) ~ grad_x log p(x)`` from samples, without knowing ``p``."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor
from torch.func import jvp

from .. import _checks, _random
from .._numerics import as_per_sample
from .._per_sample import INNER_RANDOMNESS, check_in_dims, map_samples, same_shape_output, split_conditions
from .._typing import DSMWeighting, InDims, PerSampleFn, Probe, Randomness, choices
from ..operators import divergence


def score_matching(score: PerSampleFn, /, *, in_dims: InDims = None, chunk_size: int | None = None,
                   randomness: Randomness = "error") -> Callable[..., Tensor]:
    """Exact score matching (Hyvarinen 2005): ``mean(tr(d s / d x) + ||s||^2 / 2)``.

    The trace is exact (one JVP per input dimension): for small ``D``; in high dimension
    use :func:`sliced_score_matching` or :func:`denoising_score_matching`.

    Args:
      in_dims: ``score``'s arguments as in :func:`functional_grads.input_grad`; with
        ``(None, 0, 0, ...)`` the loss takes per-sample conditioning arguments after ``X``
        (a noise level, a label) and passes them on: ``score(params, x, *conditions)``.
      chunk_size, randomness: as in :func:`functional_grads.input_grad`.

    Returns:
      ``loss(params, X [B, D], *conditions) -> []``.

    Example:
      >>> s = lambda p, x: -p["a"] * x              # the score of N(0, 1/a)
      >>> score_matching(s)({"a": torch.tensor(1.0)}, torch.ones(4, 2))
      tensor(-1.)
    """
    api = "score_matching"
    field = same_shape_output(api, score, 1)
    div = divergence(score, in_dims=in_dims, chunk_size=chunk_size, randomness=randomness)

    def score_matching_loss(params: Any, X: Tensor, *rest: Any) -> Tensor:
        conditions, _ = split_conditions(api, in_dims, rest, ())
        s = field(params, X, *conditions)
        return (div(params, X, *conditions) + 0.5 * s.flatten(1).pow(2).sum(1)).mean()

    return score_matching_loss


def sliced_score_matching(
    score: PerSampleFn,
    /,
    *,
    num_samples: int = 1,
    probe: Probe = "gaussian",
    generator: torch.Generator | None = None,
    in_dims: InDims = None,
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
      in_dims: as in :func:`score_matching`.

    Returns:
      ``loss(params, X [B, *x_shape], *conditions) -> []``.
    """
    api = "sliced_score_matching"
    _checks.check_callable(api, score)
    num_samples = _checks.renamed(api, "num_samples", num_samples, "num_projections", num_projections)
    _checks.check_number(api, "num_samples", num_samples, low=1, integer=True)
    _checks.check_choice(api, "probe", probe, _random.PROBES)
    check_in_dims(api, in_dims, 1)
    field = same_shape_output(api, score, 1)

    def one(params: Any, x: Tensor, *c_and_V: Any) -> Tensor:
        *conditions, V = c_and_V

        def along(v: Tensor) -> Tensor:
            v = v.reshape(x.shape)
            s, jv = jvp(lambda y: field(params, y, *conditions), (x,), (v,))  # type: ignore[misc]
            second = 0.5 * (s * s).sum() if probe == "gaussian" else 0.5 * (v * s).sum() ** 2
            return (v * jv).sum() + second

        return torch.func.vmap(along, randomness=INNER_RANDOMNESS)(V).mean()

    def sliced_score_matching_loss(params: Any, X: Tensor, *rest: Any) -> Tensor:
        conditions, _ = split_conditions(api, in_dims, rest, ())
        X = _checks.check_batch(api, (params, X), 1)
        V = _random.probes(X, (X.shape[0], num_samples, X[0].numel()), probe, generator=generator)
        return map_samples(api, one, (params, X, *conditions), argnums=1, chunk_size=chunk_size,
                           randomness=randomness, in_dims=in_dims, extra=(V,)).mean()

    return sliced_score_matching_loss


def denoising_score_matching(
    score: PerSampleFn,
    sigma: float | Tensor | Callable[[Tensor], Tensor] | None = None,
    /,
    *,
    weighting: DSMWeighting = "auto",
    sigma_data: float = 0.5,
    generator: torch.Generator | None = None,
) -> Callable[..., Tensor]:
    """Denoising score matching (Vincent 2011), at one noise level or many (Song & Ermon 2019).

    With ``e ~ N(0, I)`` and ``x~ = x + sigma e``, ``s`` learns the score of the data
    convolved with ``N(0, sigma^2 I)``; the per-sample error is ``||s(x~) + e / sigma||^2 / 2``
    and no derivative of ``s`` is needed. ``score`` is called on the whole batch.

    Args:
      score: ``score(params, X~ [B, *x_shape]) -> [B, *x_shape]`` for one noise level;
        ``score(params, X~, sigma [B])`` (noise-conditional, NCSN) for the other forms.
      sigma: one level (a positive float; the score is not told it); a 1-D tensor of
        levels ``[L]`` (each sample draws one uniformly, as NCSN's geometric ladder); a
        sampler ``sigma(X) -> [B]`` (e.g. EDM's log-normal
        ``lambda X: (1.2 * torch.randn(X.shape[0]) - 1.2).exp()``); or None, and the loss
        takes the levels per call, ``loss(params, X, sigma [B])``.
      weighting: how the per-sample errors are weighted by ``lambda(sigma)``: ``"none"``
        (1); ``"sigma2"`` (``sigma^2``, Song & Ermon: every level contributes alike);
        ``"edm"`` (Karras et al. 2022: ``lambda = (sigma^2 + sigma_data^2) /
        (sigma sigma_data)^2`` on the denoiser ``D = x~ + sigma^2 s``, i.e.
        ``2 (sigma^2 + sigma_data^2) sigma^2 / sigma_data^2`` times the error above);
        ``"auto"`` (default): ``"none"`` for one float level, ``"sigma2"`` otherwise.
      sigma_data: the data's standard deviation, for ``"edm"``.
      generator: draws the noise and the levels.

    Returns:
      ``loss(params, X [B, *x_shape]) -> []`` (``loss(params, X, sigma)`` when ``sigma``
      is None): the weighted mean over samples, a fresh noise draw per call.

    Example:
      >>> s = lambda p, x, sigma: -x / (1 + sigma[:, None] ** 2)   # exact for N(0, I) data
      >>> loss = denoising_score_matching(s, torch.tensor([0.1, 1.0]))
      >>> loss({}, torch.randn(4, 2)).shape
      torch.Size([])
    """
    api = "denoising_score_matching"
    _checks.check_callable(api, score)
    _checks.check_choice(api, "weighting", weighting, choices(DSMWeighting))
    _checks.check_number(api, "sigma_data", sigma_data, strict=True)
    if isinstance(sigma, Tensor):
        if sigma.ndim != 1 or not sigma.numel() or not bool((sigma > 0).all()) or not bool(torch.isfinite(sigma).all()):
            raise ValueError(f"{api}: sigma as a tensor must be the noise levels, a 1-D tensor of positive "
                             f"finite numbers [L]; got shape {_checks.fmt(sigma.shape)}.")
    elif sigma is not None and not callable(sigma):
        _checks.check_number(api, "sigma", sigma, strict=True)
    single = isinstance(sigma, (int, float))
    weighting = ("none" if single else "sigma2") if weighting == "auto" else weighting

    def levels(X: Tensor, given: tuple[Any, ...]) -> Tensor:
        if sigma is None:
            (s,) = given
            return _checks.per_sample_scalar(api, "sigma", s, X)
        if isinstance(sigma, Tensor):
            pick = (_random.uniform(X, (X.shape[0],), 0.0, 1.0, generator) * sigma.numel()).long()
            return sigma.to(X)[pick.clamp_max(sigma.numel() - 1)]
        return _checks.per_sample_scalar(api, "sigma(X)", sigma(X), X).to(X)  # type: ignore[operator]

    def denoising_score_matching_loss(params: Any, X: Tensor, *given: Any) -> Tensor:
        X = _checks.check_batch(api, (params, X), 1)
        if len(given) != (sigma is None):
            raise TypeError(f"{api}: call as loss(params, X{', sigma' if sigma is None else ''}); got "
                            f"{len(given)} argument(s) after X.")
        e = _random.probes(X, X.shape, "gaussian", generator=generator)
        if single:
            sig = X.new_full((X.shape[0],), float(sigma))  # type: ignore[arg-type]
            s = score(params, X + float(sigma) * e)  # type: ignore[arg-type]
        else:
            sig = levels(X, given)
            s = score(params, X + as_per_sample(sig, X) * e, sig)
        s = _checks.check_tensor_output(api, s, "score")
        if s.shape != X.shape:
            raise ValueError(f"{api}: score must map X {_checks.fmt(X.shape)} to the same shape, got {_checks.fmt(s.shape)}.")
        error = 0.5 * (s + e / as_per_sample(sig, X)).flatten(1).pow(2).sum(1)
        if weighting == "sigma2":
            error = sig**2 * error
        elif weighting == "edm":
            error = 2 * (sig**2 + sigma_data**2) * sig**2 / sigma_data**2 * error
        return error.mean()

    return denoising_score_matching_loss
