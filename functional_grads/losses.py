"""Losses ``loss(params, *batch) -> scalar`` built from a network's input derivatives."""

from ._losses import gradient_matching as gradient_matching

__all__ = ["gradient_matching"]
