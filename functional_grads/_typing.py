"""Type aliases shared by the public API."""

from __future__ import annotations

from typing import Any, Callable, Dict, Literal, Tuple, Union, get_args

from torch import Tensor

Params = Any
"""A model's parameters: any pytree of tensors (``functionalize`` gives a dict name -> tensor)."""

ParamsDict = Dict[str, Tensor]
"""The params of :func:`functionalize`: the module's parameter names mapped to tensors."""

PyTree = Any
"""Nested tuples, lists, dicts and NamedTuples with tensors at the leaves (see ``optree``)."""

PerSampleFn = Callable[..., Tensor]
"""``f(params, x) -> out``: a model as a pure function of its parameters and input."""

LossFn = Callable[..., Tensor]
"""``loss(params, *batch) -> scalar``: a loss as a pure function."""

Norm = Literal["l1", "l2", "linf"]
"""How a vector's size is measured: sum of ``|v|``, Euclidean, or max ``|v|``."""

AttackNorm = Literal["l2", "linf"]
"""The norms an attack's ball and steepest-ascent step are defined for."""

Randomness = Literal["error", "different", "same"]
"""How random ops (dropout) behave per sample, as in ``torch.func.vmap``."""

JacobianMode = Literal["auto", "rev", "fwd"]
"""Reverse mode (one VJP per output), forward mode (one JVP per input), or chosen by size."""

Probe = Literal["rademacher", "gaussian", "sphere"]
"""The kind of random probe vector of the stochastic estimators."""

LaplacianMethod = Literal["auto", "hessian", "forward", "taylor", "hutchinson", "stde"]
"""How ``laplacian`` computes. Names shared by every operator: ``"auto"``; an exact method
that forms the full derivative matrix is named after it (``"hessian"``, ``"jacobian"``);
``"forward"`` is directional forward mode; ``"hutchinson"`` random probes."""

BiharmonicMethod = Literal["auto", "forward", "stde"]
"""How ``biharmonic`` computes (names as in :data:`LaplacianMethod`)."""

DivergenceMethod = Literal["auto", "jacobian", "forward", "hutchinson"]
"""How ``divergence`` computes (names as in :data:`LaplacianMethod`)."""

JacobianPenaltyMethod = Literal["jacobian", "hutchinson"]
"""How ``jacobian_penalty`` computes (names as in :data:`LaplacianMethod`)."""

ShardMode = Literal[None, "optimizer", "params"]
"""What ``distributed.data_parallel`` shards: nothing, the optimizer state (ZeRO-1/2), or
the params too (ZeRO-3)."""

DSMWeighting = Literal["auto", "none", "sigma2", "edm"]
"""How denoising score matching weights each noise level's error."""

GradReduction = Literal["elements", "samples"]
"""How a squared gradient error averages: over all ``B * D`` elements, or per sample."""

InDims = Union[Tuple[Union[int, None], ...], None]
"""``torch.func.vmap``'s in_dims over f's positional arguments: 0 mapped, None shared."""

CompileOption = Union[bool, Dict[str, Any]]
"""False (eager), True (inductor) or a dict of ``torch.compile`` keyword arguments."""


def choices(literal: Any) -> tuple[Any, ...]:
    """The allowed values of a ``Literal`` alias: the one list that checks use."""
    return get_args(literal)
