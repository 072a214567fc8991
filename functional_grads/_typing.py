"""Type aliases shared by the public API."""

from __future__ import annotations

from typing import Any, Callable, Dict

from torch import Tensor

Params = Dict[str, Tensor]
"""A model's parameters: a dict mapping the module's parameter names to tensors."""

PyTree = Any
"""Nested tuples, lists and dicts with tensors at the leaves (see ``optree``)."""

PerSampleFn = Callable[..., Tensor]
"""``f(params, x) -> out``: a model as a pure function of its parameters and input."""

LossFn = Callable[..., Tensor]
"""``loss(params, *batch) -> scalar``: a loss as a pure function."""
