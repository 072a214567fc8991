"""Losses ``loss(params, *batch) -> scalar`` built from a network's input derivatives."""

from ._adversarial import adversarial as adversarial
from ._matching import gradient_alignment as gradient_alignment
from ._matching import gradient_matching as gradient_matching
from ._matching import sobolev as sobolev
from ._penalties import gradient_penalty as gradient_penalty
from ._penalties import interpolate as interpolate
from ._penalties import jacobian_penalty as jacobian_penalty

__all__ = [
    "adversarial",
    "gradient_alignment",
    "gradient_matching",
    "gradient_penalty",
    "interpolate",
    "jacobian_penalty",
    "sobolev",
]
