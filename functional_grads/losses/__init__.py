"""Losses ``loss(params, *batch) -> scalar`` built from a network's input derivatives."""

from ._adversarial import adversarial as adversarial
from ._matching import gradient_alignment as gradient_alignment
from ._matching import gradient_matching as gradient_matching
from ._matching import sobolev as sobolev
from ._pde import dirichlet as dirichlet
from ._pde import pde_residual as pde_residual
from ._penalties import gradient_penalty as gradient_penalty
from ._penalties import interpolate as interpolate
from ._penalties import jacobian_penalty as jacobian_penalty
from ._score import denoising_score_matching as denoising_score_matching
from ._score import score_matching as score_matching
from ._score import sliced_score_matching as sliced_score_matching

__all__ = [
    "adversarial",
    "denoising_score_matching",
    "dirichlet",
    "gradient_alignment",
    "gradient_matching",
    "gradient_penalty",
    "interpolate",
    "jacobian_penalty",
    "pde_residual",
    "score_matching",
    "sliced_score_matching",
    "sobolev",
]
