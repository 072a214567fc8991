"""What is running around our code: torch.compile, a torch.func transform, or one of our
per-sample transforms (so that models can refuse to run per sample). The one place that
decides "compiling or inside a transform"; every strategy switch asks here."""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Literal

import torch
from torch import nn
from torch.nn.modules import module as _nn_module
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

Running = Literal["dynamo", "traced", "transform", "eager"]
"""Where our code runs: under torch.compile's dynamo, in our ``make_fx`` trace
(``compile=True``, NOTE [traced steps]), inside a user's torch.func transform, or eagerly."""


def running() -> Running:
    """Where the code runs now (the first that applies, in :data:`Running`'s order)."""
    if torch.compiler.is_compiling():
        return "dynamo"
    if _LOCAL.tracing:
        return "traced"
    return "transform" if in_transform() else "eager"


def compiling() -> bool:
    """True while torch.compile (dynamo or AOT tracing) or our ``make_fx`` trace runs the code."""
    return _LOCAL.tracing or torch.compiler.is_compiling()  # running()'s first two, without its transform probe


@contextlib.contextmanager
def tracing() -> Iterator[None]:
    """Mark the code inside as traced for compilation (NOTE [traced steps])."""
    before, _LOCAL.tracing = _LOCAL.tracing, True
    try:
        yield
    finally:
        _LOCAL.tracing = before


def in_transform() -> bool:
    """True inside a torch.func transform (``vmap``, ``grad``, ``jvp``, ``jacrev``, ...)."""
    return torch._C._functorch.peek_interpreter_stack() is not None


def plain_autograd() -> bool:
    """True outside torch.compile and every torch.func transform: there the same
    derivatives come faster from plain ``torch.autograd`` (NOTE [eager autograd])."""
    return not compiling() and not in_transform()


# NOTE [per-sample context]: a per-sample transform pushes (api, randomness) here while
# it runs, and FunctionalModule checks its module against it. The check lives in the
# model rather than the transform because users wrap f in their own lambdas. The stack
# is per thread: another thread's plain batched forward is not per sample.
class _Local(threading.local):
    def __init__(self) -> None:  # runs once in each thread, on its first access
        self.stack: list[tuple[str, str, int, frozenset[int]]] = []
        self.tracing = False  # pragma: no mutate (None would read as False too)


_LOCAL = _Local()


def _stack() -> list[tuple[str, str, int, frozenset[int]]]:
    return _LOCAL.stack


@contextlib.contextmanager
def per_sample(api: str, randomness: str, sample_ndim: int, conditions: frozenset[int] = frozenset()) -> Iterator[None]:
    """Mark the code inside as running on one sample of ``sample_ndim`` dimensions, with
    the positional arguments at ``conditions`` (besides X) mapped too (``in_dims``)."""
    stack = _stack()
    stack.append((api, randomness, sample_ndim, conditions))
    try:
        yield
    finally:
        stack.pop()


def check_module(module: nn.Module) -> None:
    """Raise if ``module`` cannot be evaluated one sample at a time."""
    stack = _stack()
    if not stack:
        return
    api, randomness, _, _ = stack[-1]
    if _nn_module._global_backward_hooks or _nn_module._global_backward_pre_hooks:
        raise ValueError(
            f"{api}: a global module backward hook is registered (register_module_full_backward_hook), "
            "which torch.func transforms cannot run one sample at a time. Remove it (handle.remove()) "
            "while taking per-sample derivatives."
        )
    for name, sub in module.named_modules():
        if sub._backward_hooks or sub._backward_pre_hooks:
            raise ValueError(
                f"{api}: submodule {name!r} ({type(sub).__name__}) has a backward hook "
                "(register_full_backward_hook or register_full_backward_pre_hook), which torch.func "
                "transforms cannot run one sample at a time. Remove it (handle.remove()) while taking "
                "per-sample derivatives, or compute what it records from the returned derivatives."
            )
        if isinstance(sub, _BatchNorm) and not sub.training and sub.running_mean is None:
            raise ValueError(
                f"{api}: submodule {name!r} ({type(sub).__name__}) has no running statistics "
                "(track_running_stats=False), so even in eval mode it normalises with batch "
                "statistics and a per-sample derivative would mix samples. Use LayerNorm/GroupNorm, "
                "or track running statistics."
            )
        if isinstance(sub, nn.RNNBase):
            raise ValueError(
                f"{api}: submodule {name!r} ({type(sub).__name__}) is a fused recurrent layer, "
                "which torch.func cannot run one sample at a time. Write the recurrence with "
                "nn.RNNCell/LSTMCell/GRUCell in a loop over time steps."
            )
        if isinstance(sub, _BatchNorm) and sub.training:
            raise ValueError(
                f"{api}: submodule {name!r} ({type(sub).__name__}) is in training mode, "
                "where it normalises with batch statistics, so a per-sample derivative "
                "would mix samples. Call model.eval() first, or use LayerNorm/GroupNorm, "
                "which normalise each sample on its own."
            )
        if isinstance(sub, _DropoutNd) and sub.training and sub.p > 0 and randomness == "error":
            raise ValueError(
                f"{api}: submodule {name!r} ({type(sub).__name__}) is in training mode and "
                "draws random masks. Pass randomness='different' (a mask per sample, like "
                "a batched forward) or randomness='same' (one mask for the batch), or call "
                "model.eval()."
            )


def is_one_sample(x: torch.Tensor) -> bool:
    """True for an input shaped like one sample of the innermost per-sample transform."""
    stack = _stack()
    return bool(stack) and x.ndim == stack[-1][2]


def mapped_conditions() -> frozenset[int]:
    """Positions of f's arguments, besides X, that the innermost per-sample transform maps
    (called inside one: :func:`is_one_sample` was True)."""
    return _stack()[-1][3]
