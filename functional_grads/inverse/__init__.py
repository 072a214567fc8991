"""Optimising inputs through frozen networks: projections and regularisers."""

from ._constraints import box as box
from ._constraints import l2 as l2
from ._constraints import l2_ball as l2_ball
from ._constraints import linf_ball as linf_ball
from ._constraints import total_variation as total_variation
from ._optimize_input import InputOptimization as InputOptimization
from ._optimize_input import optimize_input as optimize_input

__all__ = ["InputOptimization", "box", "l2", "l2_ball", "linf_ball", "optimize_input", "total_variation"]
